"""Labelled-image DataModule: any :mod:`datamodules.sources` source, seeded splits, exact DDP and resume.

The source is loaded once per process; splits missing from the source are carved from ``train`` with a fixed
seed (``val_fraction``, ``test_fraction``). Images are resized / channel-converted to ``image_size`` and
``channels`` when set, scaled to [0, 1] and standardised with the training split's mean and std.
``num_classes`` and ``input_shape`` are read by the CLI and linked into the model.
"""

from __future__ import annotations

import logging

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_warn
from torch.utils.data import DataLoader, TensorDataset

from datamodules.errors import DataFileError, SettingError
from datamodules.samplers import ResumableDataLoader, ResumableSampler, ShardSampler
from datamodules.sources import DigitsSource, ImageSource, ImageSplits

__all__ = [
    "ImageDataModule",
    "channel_stats",
    "check_split_labels",
    "conform_images",
    "make_loader",
    "resume_sampler",
    "split_indices",
    "split_source",
    "standardize",
]

log = logging.getLogger(__name__)


def split_indices(n: int, fractions: list[float], seed: int) -> list[torch.Tensor]:
    """Shuffle ``range(n)`` with ``seed`` and cut off one part per fraction; the remainder comes first."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    sizes = [round(f * n) for f in fractions]
    rest = n - sum(sizes)
    if rest <= 0 or any(s == 0 for s, f in zip(sizes, fractions, strict=True) if f > 0):
        raise SettingError(
            f"cannot split {n} samples into fractions {fractions}: a part would be empty; lower the data's "
            "val_fraction/test_fraction (e.g. data.init_args.val_fraction) or give more data"
        )
    return list(torch.split(perm, [rest, *sizes]))


def conform_images(x: torch.Tensor, channels: int | None, image_size: int | None) -> torch.Tensor:
    """uint8 (N, C, H, W) -> float (N, channels, image_size, image_size) in [0, 1]."""
    x = x.float().div_(255.0)
    if channels is not None and x.shape[1] != channels:
        if x.shape[1] == 1:
            x = x.expand(-1, channels, -1, -1)
        elif channels == 1:
            x = x.mean(dim=1, keepdim=True)
        else:
            raise ValueError(f"cannot convert {x.shape[1]}-channel images to {channels} channels")
    if image_size is not None and tuple(x.shape[-2:]) != (image_size, image_size):
        x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False)
    return x.contiguous()


def split_source(
    loaded: ImageSplits, val_fraction: float, test_fraction: float, seed: int, limit_train_samples: int | None
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """train/val/test parts of one source: its own ``val``/``test`` splits where it has them, else carved from
    ``train`` with ``seed``; ``limit_train_samples`` keeps the first N (shuffled) training samples."""
    x, y = loaded.splits["train"]
    fractions = [
        0.0 if "val" in loaded.splits else val_fraction,
        0.0 if "test" in loaded.splits else test_fraction,
    ]
    train_idx, val_idx, test_idx = split_indices(len(y), fractions, seed)
    parts = {"train": (x[train_idx], y[train_idx])}
    parts["val"] = loaded.splits.get("val", (x[val_idx], y[val_idx]))
    parts["test"] = loaded.splits.get("test", (x[test_idx], y[test_idx]))
    if limit_train_samples is not None:
        parts["train"] = tuple(t[:limit_train_samples] for t in parts["train"])
    return parts


def check_split_labels(labels: torch.Tensor, num_classes: int, where: str, unlabelled_ok: bool = False) -> None:
    """Every label of a split lies in ``0..num_classes-1`` (or is -1 where ``unlabelled_ok``), else a
    :class:`DataFileError` naming ``where`` (the source and split). Sources check their files by line or record;
    this is the last guard for any source, before a label reaches the loss."""
    low = -1 if unlabelled_ok else 0
    bad = ((labels < low) | (labels >= num_classes)).nonzero().flatten()
    if len(bad):
        value = int(labels[bad[0]])
        raise DataFileError(f"{where} has label {value}, outside the {num_classes} classes 0..{num_classes - 1}")


def channel_stats(reference: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std (each (1, C, 1, 1)) of ``reference`` (N, C, H, W), as :func:`standardize` uses."""
    mean = reference.mean(dim=(0, 2, 3), keepdim=True)
    std = reference.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-6)
    return mean, std


def standardize(parts: dict[str, tuple[torch.Tensor, torch.Tensor]], reference: torch.Tensor) -> dict:
    """Standardise every part's images with the per-channel mean and std of ``reference`` (N, C, H, W)."""
    mean, std = channel_stats(reference)
    return {k: ((x - mean) / std, y) for k, (x, y) in parts.items()}


def resume_sampler(trainer: L.Trainer | None, sampler: ResumableSampler, batch_size: int) -> None:
    """Start a training sampler after the batches a restored loop already trained on (exact mid-epoch resume)."""
    if trainer is None:
        return
    if trainer.ckpt_path and not trainer.fit_loop.restarting and trainer.training:
        rank_zero_warn(
            "train_dataloader() was requested before the checkpoint's loop state was restored (for example by "
            "`trainer.estimated_stepping_batches` in configure_optimizers); this resume cannot skip the batches "
            "already seen in the interrupted epoch."
        )
    if trainer.fit_loop.restarting:
        progress = trainer.fit_loop.epoch_loop.batch_progress
        done = progress.current.processed
        # A checkpoint written on the epoch's last batch (e.g. every_n_train_steps landing there) resumes in the
        # next epoch: Lightning counts the saved epoch as finished, so nothing of the new one is skipped.
        if 0 < done < -(-sampler.num_samples // batch_size) and not progress.is_last_batch:
            sampler.resume_from(trainer.current_epoch, done, batch_size)
        else:
            sampler.set_epoch(trainer.current_epoch)


def make_loader(
    dataset: TensorDataset, sampler, batch_size: int, num_workers: int, seed: int, collate_fn=None
) -> DataLoader:
    """A DataLoader with its own generator: creating an iterator must not consume the global RNG (dropout masks),
    or resume drifts. Training samplers get the resumable loader; ``collate_fn`` (e.g. dynamic padding) is
    optional."""
    loader_cls = ResumableDataLoader if isinstance(sampler, ResumableSampler) else DataLoader
    return loader_cls(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        generator=torch.Generator().manual_seed(seed),
        persistent_workers=num_workers > 0,
        collate_fn=collate_fn,
    )


class ImageDataModule(L.LightningDataModule):
    """Labelled images from any image source, split train/val/test with a fixed seed."""

    def __init__(
        self,
        source: ImageSource | None = None,
        batch_size: int = 64,
        eval_batch_size: int | None = None,
        val_fraction: float = 0.1,
        test_fraction: float = 0.2,
        image_size: int | None = None,
        channels: int | None = None,
        normalize: bool = True,
        limit_train_samples: int | None = None,
        indexed: bool = False,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        """
        Args:
            source: where the images come from; default: scikit-learn's bundled digits (no download).
            batch_size: training batch size per process.
            eval_batch_size: validation/test batch size per process (default: ``batch_size``).
            val_fraction: part of ``train`` held out for validation when the source has no ``val`` split.
            test_fraction: part of ``train`` held out for testing when the source has no ``test`` split.
            image_size: resize images to this square size (None keeps the source's size).
            channels: convert to this many channels (1 = grey, 3 = RGB; None keeps the source's).
            normalize: standardise with the training split's per-channel mean and std.
            limit_train_samples: keep only the first N (shuffled) training samples; for quick runs.
            indexed: training batches carry each sample's index as a third element, ``(x, y, index)`` (used by
                caches keyed by sample, such as the distillation lecture's teacher logits).
            num_workers: DataLoader worker processes.
            seed: seed of the splits and of the per-epoch shuffling.
        """
        super().__init__()
        for name, frac in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
            if not 0.0 <= frac < 1.0:
                raise ValueError(f"ImageDataModule.{name} must be in [0, 1), got {frac}")
        if batch_size < 1:
            raise ValueError(f"ImageDataModule.batch_size must be >= 1, got {batch_size}")
        if channels not in (None, 1, 3):
            raise ValueError(f"ImageDataModule.channels must be 1, 3 or null, got {channels}")
        if image_size is not None and image_size < 1:
            raise ValueError(f"ImageDataModule.image_size must be >= 1, got {image_size}")
        self.save_hyperparameters(ignore=["source"])  # a source object would make checkpoints unsafe to load
        self.source = source if source is not None else DigitsSource()
        self.name_settings("data")
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.val_fraction, self.test_fraction = val_fraction, test_fraction
        self.image_size, self.channels, self.normalize = image_size, channels, normalize
        self.limit_train_samples = limit_train_samples
        self.indexed = indexed
        self.num_workers, self.seed = num_workers, seed
        self._data: dict[str, TensorDataset] | None = None
        self.classes: list[str] = []
        self._pixel_stats: tuple[torch.Tensor, torch.Tensor] | None = None

    def name_settings(self, config_key: str) -> None:
        """Record where this DataModule sits in the config (``data``; a wrapping DataModule calls this with its own
        key, e.g. ``data.init_args.base``), so its source's errors name settings by their config keys."""
        self.source.name_settings(f"{config_key}.init_args.source")

    # ------------------------------------------------------------------ shapes read by the CLI
    @property
    def num_classes(self) -> int:
        self._ensure_loaded()
        return len(self.classes)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        self._ensure_loaded()
        return tuple(self._data["train"].tensors[0].shape[1:])  # (C, H, W)

    @property
    def pixel_stats(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(mean, std), each (1, C, 1, 1), that map the [0, 1] images to the batches (``(x01 - mean) / std``); None
        without ``normalize``. Attacks use them to state budgets in pixel space."""
        self._ensure_loaded()
        return self._pixel_stats

    # ------------------------------------------------------------------ loading
    def setup(self, stage: str | None = None) -> None:
        self._ensure_loaded()

    def _ensure_loaded(self) -> None:
        if self._data is None:
            self._data = self.build_splits(self.source.load())
            log.info("%s: %s", self.source.describe(), {k: len(v) for k, v in self._data.items()})

    def build_splits(self, loaded: ImageSplits) -> dict[str, TensorDataset]:
        parts = split_source(loaded, self.val_fraction, self.test_fraction, self.seed, self.limit_train_samples)
        self.classes = list(loaded.classes)
        for name, (_, labels) in parts.items():
            check_split_labels(labels, len(self.classes), f"{self.source.describe()}: split '{name}'")
        conformed = {k: (conform_images(xi, self.channels, self.image_size), yi) for k, (xi, yi) in parts.items()}
        if self.normalize:
            self._pixel_stats = channel_stats(conformed["train"][0])
            conformed = standardize(conformed, conformed["train"][0])
        data = {k: TensorDataset(xi, yi) for k, (xi, yi) in conformed.items() if len(yi)}
        if self.indexed:
            x_train, y_train = conformed["train"]
            data["train"] = TensorDataset(x_train, y_train, torch.arange(len(y_train)))  # (x, y, index)
        return data

    # ------------------------------------------------------------------ loaders
    def _world(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)

    def train_dataloader(self) -> DataLoader:
        self._ensure_loaded()
        world, rank = self._world()
        sampler = ResumableSampler(len(self._data["train"]), world, rank, seed=self.seed, shuffle=True)
        resume_sampler(self.trainer, sampler, self.batch_size)
        return self._loader(self._data["train"], sampler, self.batch_size)

    def _eval_loader(self, split: str) -> DataLoader:
        self._ensure_loaded()
        if split not in self._data:
            raise ValueError(f"{self.source.describe()} has no '{split}' split (set {split}_fraction > 0)")
        world, rank = self._world()
        return self._loader(self._data[split], ShardSampler(len(self._data[split]), world, rank), self.eval_batch_size)

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self._eval_loader("test")

    def _loader(self, dataset: TensorDataset, sampler, batch_size: int) -> DataLoader:
        return make_loader(dataset, sampler, batch_size, self.num_workers, self.seed)
