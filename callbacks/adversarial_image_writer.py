"""Writes ``predict``'s adversarial images as 8-bit PNGs under the run folder, with their sources' relative names,
and packs them as a ``.tgz``: HW10's hand-in (``lecture_modules.adversarial.attack_eval`` adds it in ``predict``;
the names come from ``datamodules.attack_folder.AttackFolderDataModule``). Nothing is overwritten.
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.utilities import rank_zero_info

from callbacks.output_folder import claim_output_folder
from datamodules.errors import SettingError

__all__ = ["AdversarialImageWriter", "png_bytes"]


def png_bytes(image: torch.Tensor) -> bytes:
    """A uint8 (C, H, W) image (C = 1 or 3) as PNG bytes."""
    from PIL import Image

    array = image.cpu().numpy()
    array = array[0] if array.shape[0] == 1 else np.ascontiguousarray(array.transpose(1, 2, 0))
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


class AdversarialImageWriter(BasePredictionWriter):
    """Writes ``predict``'s adversarial images, ``{"images": uint8 (B, C, H, W), "index": (B,)}``, as PNGs under the
    run folder with their sources' relative names (``trainer.datamodule.files``), then packs them in a ``.tgz``.
    Nothing is overwritten: a taken name becomes ``<folder>-1``, ``-2``, ...; files are created exclusively."""

    def __init__(self, folder: str = "adversarial") -> None:
        """
        Args:
            folder: name of the output folder (and ``<folder>.tgz``) under ``trainer.default_root_dir``.
        """
        super().__init__(write_interval="batch")
        self.folder = folder
        self.out: Path | None = None
        self.counts: dict[str, torch.Tensor] = {}

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not hasattr(trainer.datamodule, "files"):
            raise SettingError(
                f"predict writes adversarial images named after their sources, and {type(trainer.datamodule).__name__}"
                " does not name them: set data.class_path to datamodules.attack_folder.AttackFolderDataModule "
                "(configs/attack_hw10.yaml)"
            )
        self.out, self.counts = claim_output_folder(trainer, self.folder), {}

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx):
        files = trainer.datamodule.files
        for image, index in zip(prediction["images"], prediction["index"].tolist(), strict=True):
            path = self.out / Path(files[index]).with_suffix(".png")
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "xb") as fh:  # exclusive: never overwrite
                fh.write(png_bytes(image))
        for name, correct in prediction.get("correct", {}).items():
            self.counts[name] = (
                self.counts.get(name, torch.zeros(3, dtype=torch.long))
                + torch.stack([correct[0].sum(), correct[1].sum(), torch.tensor(len(correct[0]))]).cpu()
            )

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        trainer.strategy.barrier()  # every rank's images are written
        reduce = trainer.strategy.reduce
        counts = {k: reduce(v.to(pl_module.device), reduce_op="sum").cpu() for k, v in self.counts.items()}
        if not trainer.is_global_zero:
            return
        archive = self.out.parent / f"{self.out.name}.tgz"
        members = sorted(p.relative_to(self.out).as_posix() for p in self.out.rglob("*.png"))
        with tarfile.open(archive, "x:gz") as tar:  # HW10's hand-in: relative names, as `tar zcvf` from inside
            for member in members:
                tar.add(self.out / member, arcname=member)
        summary = "; ".join(f"{k} {100 * c[0] / c[2]:.1f}% -> {100 * c[1] / c[2]:.1f}%" for k, c in counts.items())
        rank_zero_info(f"wrote {len(members)} adversarial images to {self.out} and {archive}")
        if summary:
            rank_zero_info(f"accuracy on the clean -> written adversarial images: {summary}")
