"""HW10's input: a folder of images ``<root>/<class>/<class><n>.png`` (32x32 RGB, 20 per class of CIFAR-10), read
in a fixed order with each image's relative name, so an attack can hand in its adversarial images under the same
names (``lecture_modules.adversarial.attack_eval``'s ``predict`` with ``configs/attack_hw10.yaml``;
``callbacks/adversarial_image_writer.py`` writes them).

:class:`AttackFolderDataModule` standardises the images with the mean and std the proxies were trained with
(``mean``, ``std``; CIFAR-10's by default). Every bad file or folder is one error naming it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

from datamodules.errors import DataFileError, SettingError
from datamodules.paths import require_folder
from datamodules.samplers import ShardSampler
from datamodules.sources import IMAGE_EXTENSIONS, read_image, stack_images

__all__ = ["CIFAR10_MEAN", "CIFAR10_STD", "AttackFolder", "AttackFolderDataModule", "read_attack_folder"]

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
