"""Images for generative models (lecture 6, HW6): any image source, scaled to [-1, 1], plus a predict loader of
sample indices for the HW6 hand-in.

* :class:`GenerationDataModule` — an :class:`~datamodules.image.ImageDataModule` whose batches are ``(x, y)`` with
  ``x`` in [-1, 1] (a generator's ``tanh`` range), resized to ``image_size`` (16 by default: scikit-learn's 8x8
  digits upsampled to the size of the shipped digits classifier ``builtin:digits_cnn``, so the metric classifier
  sees exactly the shape it was trained on). ``predict`` yields sample indices ``0..num_generate-1``: a generative
  model's predict step turns each into one image.
* :class:`FlatImageFolderSource` — HW6's ``faces/*.jpg``: a flat folder of images (one class) or a class tree,
  resized while reading.
* :class:`HFImageSource` — a Hugging Face image dataset (``save_to_disk`` folder, a folder of data files, one
  ``.parquet``/``.arrow`` file, or a cached hub name), labelled or not (``unlabelled: true``: one class).

``real_stats`` is the per-channel mean and std of the training split in [0, 1] pixels: the standardisation a
classifier trained on the same data by ``configs/classification.yaml`` expects, used by the quality metrics.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import DataLoader, TensorDataset

from datamodules.errors import DataFileError, SettingError
from datamodules.image import ImageDataModule, channel_stats, make_loader
from datamodules.paths import require_folder
from datamodules.samplers import ShardSampler
from datamodules.sources import (
    IMAGE_EXTENSIONS,
    HFDatasetSource,
    ImageFolderSource,
    ImageSource,
    ImageSplits,
    read_image,
    stack_images,
)

__all__ = ["FlatImageFolderSource", "GenerationDataModule", "HFImageSource", "to_unit_range"]

UNLABELLED = "__generation_label__"  # the constant label column added to an unlabelled dataset


def to_unit_range(x: torch.Tensor) -> torch.Tensor:
    """[0, 1] pixels -> [-1, 1] (the range a ``tanh`` generator produces)."""
    return x * 2.0 - 1.0


class FlatImageFolderSource(ImageSource):
    """A folder of images for generation: flat (``faces/*.jpg``, HW6: one class) or one sub-folder per class."""

    def __init__(self, root: str, image_size: int | None = 64) -> None:
        """
        Args:
            root: the folder; images directly inside it form one class, else each sub-folder is a class.
            image_size: resize every image to this square size while reading (HW6's faces are 96x96; 64 is the
                DCGAN size). Null keeps the files' size (they must then agree).
        """
        if image_size is not None and image_size < 4:
            raise SettingError(f"FlatImageFolderSource.image_size must be >= 4 or null, got {image_size}")
        self.root = Path(root)
        self.image_size = image_size

    def load(self) -> ImageSplits:
        hint = "give a folder of images (faces/*.jpg) or one with a sub-folder of images per class"
        require_folder(self.root, self.setting("root"), hint=hint)
        files = sorted(p for p in self.root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        if not files:
            if any(p.is_dir() for p in self.root.iterdir()):
                tree = ImageFolderSource(str(self.root), image_size=self.image_size)
                if self.config_key:
                    tree.name_settings(self.config_key)
                return tree.load()
            raise DataFileError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {self.root} or its sub-folders")
        images = [read_image(path, self.image_size) for path in files]
        x = stack_images(images, str(self.root), self.setting("image_size"))
        return ImageSplits({"train": (x, torch.zeros(len(x), dtype=torch.int64))}, ["image"])

    def describe(self) -> str:
        return f"image folder {self.root}"


class HFImageSource(HFDatasetSource):
    """A Hugging Face image dataset for generation: :class:`~datamodules.sources.HFDatasetSource`, plus unlabelled
    data (HW6's faces: ``unlabelled: true`` makes every image class 0) and a single ``.parquet``/``.arrow`` file."""

    def __init__(self, unlabelled: bool = False, **kwargs) -> None:
        """
        Args:
            unlabelled: the data has no labels (HW6's faces): every image is class 0 and ``label_key`` is not read.
            **kwargs: the :class:`~datamodules.sources.HFDatasetSource` arguments: ``name_or_path`` (also one
                ``.parquet`` or ``.arrow`` file here), ``image_key``, ``label_key``, ...
        """
        super().__init__(**kwargs)
        self.unlabelled = unlabelled
        if unlabelled:
            self.label_key = UNLABELLED

    def _load_dict(self):
        import datasets

        loaded = super()._load_dict()  # one .parquet / .arrow file, a saved dataset, a folder or a hub name
        if self.unlabelled:
            loaded = datasets.DatasetDict({k: ds.add_column(UNLABELLED, [0] * len(ds)) for k, ds in loaded.items()})
        return loaded


class GenerationDataModule(ImageDataModule):
    """Images in [-1, 1] for generative models, with train/val splits and a predict loader of sample indices."""

    def __init__(self, image_size: int | None = 16, num_generate: int = 1000, **kwargs) -> None:
        """
        Args:
            image_size: resize images to this square size (16: the 8x8 digits upsampled to the shipped digits
                classifier's size; 28 for MNIST; null keeps the source's size).
            num_generate: how many images ``predict`` generates (HW6 hands in 1,000).
            **kwargs: the :class:`~datamodules.image.ImageDataModule` arguments (source, batch_size, splits, seed);
                ``normalize`` is refused: generation scales to [-1, 1]. The split defaults are
                configs/classification.yaml's, so on the digits the training split is the metric classifier's.
        """
        if kwargs.get("normalize"):
            raise SettingError(
                "data.init_args.normalize must be false for generation (images are scaled to [-1, 1]), got True"
            )
        super().__init__(image_size=image_size, normalize=False, **kwargs)
        if num_generate < 1:
            raise SettingError(f"data.init_args.num_generate must be >= 1, got {num_generate}")
        self.num_generate = num_generate
        self._real_stats: tuple[torch.Tensor, torch.Tensor] | None = None

    def build_splits(self, loaded: ImageSplits) -> dict[str, TensorDataset]:
        data = super().build_splits(loaded)  # [0, 1] pixels (normalize is off)
        self._real_stats = channel_stats(data["train"].tensors[0])
        return {k: TensorDataset(to_unit_range(d.tensors[0]), *d.tensors[1:]) for k, d in data.items()}

    @property
    def real_stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, std), each (1, C, 1, 1), of the training split in [0, 1] pixels: what a classifier trained on this
        data by ``configs/classification.yaml`` standardises with."""
        self._ensure_loaded()
        return self._real_stats

    def reference_images(self, limit: int | None = None) -> torch.Tensor:
        """The first ``limit`` (shuffled) training images in [-1, 1], (N, C, H, W): the real set the quality metrics
        compare samples with."""
        self._ensure_loaded()
        return self._data["train"].tensors[0][:limit]

    def predict_dataloader(self) -> DataLoader:
        """Sample indices ``0..num_generate-1`` (each rank its shard), batches of ``eval_batch_size``."""
        world, rank = self._world()
        indices = TensorDataset(torch.arange(self.num_generate))
        sampler = ShardSampler(self.num_generate, world, rank)
        return make_loader(indices, sampler, self.eval_batch_size, self.num_workers, self.seed)
