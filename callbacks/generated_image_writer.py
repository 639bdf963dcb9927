"""Writes ``predict``'s generated images as JPEGs ``1.jpg`` ... ``N.jpg`` under the run folder and packs them as a
``.tgz``: HW6's hand-in (a generative lecture's ``predict_step`` returns ``{"images": uint8 (B, C, H, W),
"index": (B,)}``; the data's ``num_generate`` sets N). Nothing is overwritten.
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.utilities import rank_zero_info

from callbacks.output_folder import claim_output_folder
from datamodules.errors import SettingError

__all__ = ["GeneratedImageWriter", "jpeg_bytes"]


def jpeg_bytes(image: torch.Tensor, quality: int = 95) -> bytes:
    """A uint8 (C, H, W) image (C = 1 or 3) as JPEG bytes."""
    from PIL import Image

    array = image.cpu().numpy()
    array = array[0] if array.shape[0] == 1 else array.transpose(1, 2, 0).copy()
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


class GeneratedImageWriter(BasePredictionWriter):
    """Writes ``predict``'s images as ``<folder>/<index + 1>.jpg`` (HW6 names them 1.jpg ... 1000.jpg), then packs
    them as ``<folder>.tgz``. A taken name becomes ``<folder>-1``, ``-2``, ...; files are created exclusively."""

    def __init__(self, folder: str = "generated", quality: int = 95) -> None:
        """
        Args:
            folder: name of the output folder (and ``<folder>.tgz``) under ``trainer.default_root_dir``.
            quality: JPEG quality, 1..95.
        """
        super().__init__(write_interval="batch")
        if not 1 <= quality <= 95:
            raise SettingError(f"GeneratedImageWriter.quality must be in 1..95, got {quality}")
        self.folder, self.quality = folder, quality
        self.out: Path | None = None

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.out = claim_output_folder(trainer, self.folder)

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx):
        for image, index in zip(prediction["images"], prediction["index"].tolist(), strict=True):
            with open(self.out / f"{index + 1}.jpg", "xb") as fh:  # exclusive: never overwrite
                fh.write(jpeg_bytes(image, self.quality))

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        trainer.strategy.barrier()  # every rank's images are written
        if not trainer.is_global_zero:
            return
        archive = self.out.parent / f"{self.out.name}.tgz"
        members = sorted((p.name for p in self.out.glob("*.jpg")), key=lambda name: int(name.split(".")[0]))
        with tarfile.open(archive, "x:gz") as tar:  # relative names, as `tar zcvf` from inside the folder
            for member in members:
                tar.add(self.out / member, arcname=member)
        rank_zero_info(f"wrote {len(members)} generated images to {self.out} and {archive}")
