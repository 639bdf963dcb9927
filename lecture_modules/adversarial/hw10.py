"""HW10's flow, end to end: attack a folder of images with an ensemble of proxies and hand in PNGs and a ``.tgz``.

HW10 gives ``<root>/<class>/<class><n>.png`` (32x32 RGB, 20 per class of CIFAR-10) and grades the adversarial
images, saved as 8-bit PNGs under the same relative names and packed as a ``.tgz``, on hidden victims. Here:

* :class:`AttackFolderDataModule` reads such a folder (every image, in a fixed order, with its relative name) and
  standardises it with the mean and std the proxies were trained with (``mean``, ``std``);
* ``AttackEvaluation.predict_step`` crafts ``transfer_attack`` on the proxies (their ensemble when several) at
  ``epsilon`` and rounds the result to 8-bit pixels within the budget (:func:`~.core.to_uint8_within`);
* :class:`AdversarialImageWriter` (added by ``AttackEvaluation.configure_callbacks``) writes them under the run
  folder, ``<trainer.default_root_dir>/adversarial/<class>/<class><n>.png`` and ``adversarial.tgz`` (``-1``,
  ``-2``, ... when taken: nothing is overwritten).

Run: ``python cli.py predict --config configs/attack_hw10.yaml --data.init_args.root <folder>
--model.init_args.proxies '[{name: a, path: a.ckpt}, {name: b, path: b.ckpt}]'``

The DataModule and the writer import nothing from ``lecture_modules``: they can move to ``datamodules/`` and
``callbacks/`` unchanged.
"""

from __future__ import annotations

import io
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import DataLoader, TensorDataset

from datamodules.errors import DataFileError, OutputFolderError, SettingError
from datamodules.paths import require_folder
from datamodules.samplers import ShardSampler
from datamodules.sources import IMAGE_EXTENSIONS, read_image, stack_images

__all__ = ["AdversarialImageWriter", "AttackFolder", "AttackFolderDataModule", "read_attack_folder"]

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)  # HW10's normalisation of its proxies' inputs
CIFAR10_STD = (0.2023, 0.1994, 0.2010)


@dataclass
class AttackFolder:
    """The images of a folder to attack: uint8 ``images`` (N, C, H, W), ``labels`` (N,), ``files`` (N relative
    POSIX paths, ``dog/dog1.png``) and ``classes`` (label -> class-folder name)."""

    images: torch.Tensor
    labels: torch.Tensor
    files: list[str]
    classes: list[str]


def _natural(name: str) -> list:
    """Sort key: ``dog2`` before ``dog10``."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _visible(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if not p.name.startswith(".")), key=lambda p: _natural(p.name))


def read_attack_folder(root: str | Path, classes: list[str] | None = None, *, setting: str = "root") -> AttackFolder:
    """Read ``root/<class>/<image>`` (HW10's layout); hidden files (``.DS_Store``) are skipped.

    Args:
        root: the folder.
        classes: the class names in the label order of the models to attack (null: the folder names, sorted; for
            CIFAR-10 that is its label order).
        setting: the config key of ``root``, for messages.

    Raises:
        DataPathError: ``root`` is missing or not a folder.
        DataFileError: naming the file or folder: a file where a class folder belongs, a folder inside a class
            folder, a non-image file, an unreadable image, an empty class folder, a class not in ``classes``, two
            images that would be written to the same PNG, images of different sizes.
    """
    root = require_folder(root, setting, hint="give the folder holding <class>/<class><n>.png (HW10's layout)")
    entries = _visible(root)
    loose = [p for p in entries if not p.is_dir()]
    if loose:
        raise DataFileError(f"{loose[0]}: a file where only class folders belong (<root>/<class>/<class><n>.png)")
    if not entries:
        raise DataFileError(f"image folder {root} has no class folders; HW10's layout is {root}/<class>/<class><n>.png")
    names = [p.name for p in entries]
    classes = list(classes) if classes is not None else sorted(names)
    images, labels, files = [], [], []
    for folder in entries:
        if folder.name not in classes:
            raise DataFileError(f"{folder}: class {folder.name!r} is not one of the classes {classes}")
        found = _visible(folder)
        if not found:
            raise DataFileError(f"class folder {folder} has no images")
        written: dict[str, Path] = {}
        for path in found:
            if path.is_dir() or path.suffix.lower() not in IMAGE_EXTENSIONS:
                what = "a folder" if path.is_dir() else "not an image file"
                allowed = ", ".join(IMAGE_EXTENSIONS)
                raise DataFileError(f"{path} is {what}; a class folder holds only images ({allowed})")
            out = f"{folder.name}/{path.stem}.png"
            if out in written:
                raise DataFileError(f"{path} and {written[out]} would both be written as {out}")
            written[out] = path
            images.append(read_image(path))
            labels.append(classes.index(folder.name))
            files.append(f"{folder.name}/{path.name}")
    return AttackFolder(stack_images(images, str(root)), torch.tensor(labels), files, classes)


class AttackFolderDataModule(L.LightningDataModule):
    """Every image of a folder in HW10's layout (``<root>/<class>/<class><n>.png``), in order, with its name;
    ``predict`` and ``test`` batches are ``(x, y, index)``."""

    def __init__(
        self,
        root: str,
        classes: list[str] | None = None,
        mean: list[float] | None = None,
        std: list[float] | None = None,
        batch_size: int = 64,
        num_workers: int = 0,
    ) -> None:
        """
        Args:
            root: the folder of images to attack, ``<root>/<class>/<image>``.
            classes: class names in the models' label order (null: the class folders, sorted).
            mean: per-channel mean, in [0, 1] pixels, the proxies' inputs were standardised with (null: none).
            std: per-channel std to go with ``mean``.
            batch_size: images per batch.
            num_workers: DataLoader worker processes.
        """
        super().__init__()
        if (mean is None) != (std is None):
            raise SettingError("data.init_args.mean and data.init_args.std go together: give both or neither")
        if std is not None and (len(std) != len(mean) or min(std) <= 0):
            raise SettingError(f"data.init_args.std must be positive, one per channel of mean {mean}, got {std}")
        if batch_size < 1:
            raise SettingError(f"data.init_args.batch_size must be >= 1, got {batch_size}")
        self.save_hyperparameters()
        self.root, self.classes_given, self.mean, self.std = root, classes, mean, std
        self.batch_size, self.num_workers = batch_size, num_workers
        self._folder: AttackFolder | None = None
        self._data: TensorDataset | None = None

    @property
    def folder(self) -> AttackFolder:
        if self._folder is None:
            self._folder = read_attack_folder(self.root, self.classes_given, setting="data.init_args.root")
            channels = self._folder.images.shape[1]
            if self.mean is not None and len(self.mean) != channels:
                raise SettingError(
                    f"data.init_args.mean has {len(self.mean)} values; the images in {self.root} have {channels} "
                    "channel(s)"
                )
        return self._folder

    @property
    def num_classes(self) -> int:
        return len(self.folder.classes)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.folder.images.shape[1:])  # (C, H, W)

    @property
    def files(self) -> list[str]:
        """The relative name of each image, by index."""
        return self.folder.files

    @property
    def pixel_stats(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(mean, std), each (1, C, 1, 1): batches are ``(x01 - mean) / std``; None: batches are [0, 1] pixels."""
        if self.mean is None:
            return None
        return (torch.tensor(self.mean).reshape(1, -1, 1, 1), torch.tensor(self.std).reshape(1, -1, 1, 1))

    def setup(self, stage: str | None = None) -> None:
        if self._data is None:
            x = self.folder.images.float() / 255.0  # (N, C, H, W) in [0, 1]
            if self.pixel_stats is not None:
                x = (x - self.pixel_stats[0]) / self.pixel_stats[1]
            self._data = TensorDataset(x, self.folder.labels, torch.arange(len(x)))

    def _loader(self) -> DataLoader:
        self.setup()
        trainer = self.trainer
        world, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
        sampler = ShardSampler(len(self._data), world, rank)
        return DataLoader(self._data, batch_size=self.batch_size, sampler=sampler, num_workers=self.num_workers)

    def predict_dataloader(self) -> DataLoader:
        return self._loader()

    def test_dataloader(self) -> DataLoader:
        return self._loader()


# ---------------------------------------------------------------------------------------------- the writer
def _free_name(root: Path, stem: str) -> str:
    """``stem``, or ``stem-1``, ``stem-2``, ...: the first for which neither the folder nor the ``.tgz`` exists."""
    name, n = stem, 0
    while (root / name).exists() or (root / f"{name}.tgz").exists():
        n += 1
        name = f"{stem}-{n}"
    return name


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
                " does not name them: set data.class_path to lecture_modules.adversarial.hw10.AttackFolderDataModule "
                "(configs/attack_hw10.yaml)"
            )
        root = Path(trainer.default_root_dir)
        name = trainer.strategy.broadcast(_free_name(root, self.folder) if trainer.is_global_zero else None)
        self.out, self.counts = root / name, {}
        try:
            self.out.mkdir(parents=True, exist_ok=not trainer.is_global_zero)
        except OSError as exc:
            raise OutputFolderError(f"cannot create {self.out} (trainer.default_root_dir): {exc}") from exc

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
