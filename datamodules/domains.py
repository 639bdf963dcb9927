"""Two-domain DataModule for domain adaptation (lecture 11): labelled source, unlabelled target.

Each domain is split train/val/test with the same seed (a domain's own ``val``/``test`` splits are kept), and both
are conformed to one image format: ``channels`` (default 3, so grey images are repeated to RGB) and ``image_size``
(default: the larger of the two domains' sizes). Standardisation uses the source training split's statistics
(``normalize: source``), each domain's own training statistics (``per_domain``; label-free, so allowed), or none.

Training batches are dicts ``{"source": (x_s, y_s), "target": (x_t,)}``: the target stream carries **no labels**
unless ``train_on: target`` (the train-on-target oracle), in which case it is ``(x_t, y_t)``. The epoch is one pass
over the domain named by ``train_on``; the other stream cycles through its own seeded permutations for as many
batches. Both streams use :class:`~datamodules.samplers.ResumableSampler`, so DDP sharding and exact mid-epoch
resume work as in :class:`~datamodules.image.ImageDataModule`.

Validation and test return two loaders, ``[source, target]``, both labelled (target labels are read for
evaluation only); lectures log ``val/source_acc`` and ``val/target_acc`` from them.
"""

from __future__ import annotations

import logging
from typing import Literal

import lightning as L
import torch
from lightning.pytorch.utilities.combined_loader import CombinedLoader
from torch.utils.data import DataLoader, TensorDataset

from datamodules.domain_sources import MNISTMStyleSource
from datamodules.errors import SettingError
from datamodules.image import check_split_labels, conform_images, make_loader, resume_sampler, split_source, standardize
from datamodules.samplers import ResumableSampler, ShardSampler
from datamodules.sources import DigitsSource, ImageSource, ImageSplits

__all__ = ["DOMAINS", "TwoDomainDataModule"]

log = logging.getLogger(__name__)
DOMAINS = ("source", "target")


class TwoDomainDataModule(L.LightningDataModule):
    """Labelled source + unlabelled target images, paired per training batch, evaluated on both domains."""

    def __init__(
        self,
        source: ImageSource | None = None,
        target: ImageSource | None = None,
        train_on: Literal["source", "target"] = "source",
        batch_size: int = 64,
        eval_batch_size: int | None = None,
        val_fraction: float = 0.1,
        test_fraction: float = 0.2,
        image_size: int | None = None,
        channels: int | None = 3,
        normalize: Literal["source", "per_domain", "none"] = "source",
        limit_train_samples: int | None = None,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        """
        Args:
            source: the labelled domain; default: scikit-learn's bundled digits (8x8 grey).
            target: the domain adapted to; default: the same digits re-rendered MNIST-M style (16x16 RGB).
            train_on: whose labels training reads: ``source`` (every adaptation method) or ``target`` (the
                train-on-target oracle only; other lectures refuse it).
            batch_size: training batch size per process, per domain.
            eval_batch_size: validation/test batch size per process (default: ``batch_size``).
            val_fraction: part of each domain's ``train`` held out for validation when it has no ``val`` split.
            test_fraction: part of each domain's ``train`` held out for testing when it has no ``test`` split.
            image_size: common square image size (None: the larger of the two domains').
            channels: common channel count, 1 or 3 (None: the larger of the two domains').
            normalize: ``source`` (source training statistics for both domains), ``per_domain`` or ``none``.
            limit_train_samples: keep only the first N (shuffled) training samples of each domain.
            num_workers: DataLoader worker processes.
            seed: seed of the splits and of the per-epoch shuffling.
        """
        super().__init__()
        if train_on not in DOMAINS:
            raise ValueError(f"TwoDomainDataModule.train_on must be 'source' or 'target', got {train_on!r}")
        if normalize not in ("source", "per_domain", "none"):
            raise ValueError(f"TwoDomainDataModule.normalize must be source, per_domain or none, got {normalize!r}")
        for name, frac in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
            if not 0.0 <= frac < 1.0:
                raise ValueError(f"TwoDomainDataModule.{name} must be in [0, 1), got {frac}")
        if batch_size < 1:
            raise ValueError(f"TwoDomainDataModule.batch_size must be >= 1, got {batch_size}")
        if channels not in (None, 1, 3):
            raise ValueError(f"TwoDomainDataModule.channels must be 1, 3 or null, got {channels}")
        if image_size is not None and image_size < 1:
            raise ValueError(f"TwoDomainDataModule.image_size must be >= 1, got {image_size}")
        self.save_hyperparameters(ignore=["source", "target"])  # source objects would make checkpoints unsafe
        self.sources = {
            "source": source if source is not None else DigitsSource(),
            "target": target if target is not None else MNISTMStyleSource(),
        }
        for domain, domain_source in self.sources.items():
            domain_source.name_settings(f"data.init_args.{domain}")
        self.train_on, self.batch_size = train_on, batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.val_fraction, self.test_fraction = val_fraction, test_fraction
        self.image_size, self.channels, self.normalize = image_size, channels, normalize
        self.limit_train_samples, self.num_workers, self.seed = limit_train_samples, num_workers, seed
        self._data: dict[str, dict[str, TensorDataset]] | None = None
        self.classes: list[str] = []

    # ------------------------------------------------------------------ shapes read by the CLI
    @property
    def num_classes(self) -> int:
        self._ensure_loaded()
        return len(self.classes)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        self._ensure_loaded()
        return tuple(self._data["source"]["train"].tensors[0].shape[1:])  # (C, H, W)

    def dataset(self, domain: str, split: str) -> TensorDataset:
        """The conformed, standardised ``(images, labels)`` of one domain's split (labels -1 = unlabelled)."""
        self._ensure_loaded()
        if split not in self._data[domain]:
            raise ValueError(f"{self.sources[domain].describe()} has no '{split}' split (set {split}_fraction > 0)")
        return self._data[domain][split]

    def target_labelled(self, split: str = "val") -> bool:
        """Whether the target's ``split`` has labels (an unlabelled target such as HW11's has label -1)."""
        return bool((self.dataset("target", split).tensors[1] >= 0).any())

    # ------------------------------------------------------------------ loading
    def setup(self, stage: str | None = None) -> None:
        self._ensure_loaded()

    def _ensure_loaded(self) -> None:
        if self._data is None:
            loaded = {d: self.sources[d].load() for d in DOMAINS}
            self._data = self.build(loaded)
            sizes = {d: {k: len(v) for k, v in parts.items()} for d, parts in self._data.items()}
            log.info("two domains (%s -> %s): %s", *(self.sources[d].describe() for d in DOMAINS), sizes)

    def _check_classes(self, loaded: dict[str, ImageSplits]) -> None:
        src, tgt = loaded["source"], loaded["target"]
        target_labelled = any(bool((y >= 0).any()) for _, y in tgt.splits.values())
        if target_labelled and len(tgt.classes) != len(src.classes):
            raise SettingError(
                f"class count mismatch between domains: source {self.sources['source'].describe()} has "
                f"{len(src.classes)} classes, target {self.sources['target'].describe()} has {len(tgt.classes)} "
                "(data.init_args.source and data.init_args.target must share one class list)"
            )
        if self.train_on == "target" and not target_labelled:
            raise SettingError(
                f"TwoDomainDataModule.train_on='target' needs target labels, but {self.sources['target'].describe()}"
                " is unlabelled"
            )
        self.classes = list(src.classes)

    def _common_format(self, loaded: dict[str, ImageSplits]) -> tuple[int, int]:
        first = [parts.splits["train"][0] for parts in loaded.values()]
        channels = self.channels or max(x.shape[1] for x in first)
        size = self.image_size or max(max(x.shape[-2:]) for x in first)
        return channels, size

    def _split(self, domain: str, loaded: ImageSplits) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        parts = split_source(loaded, self.val_fraction, self.test_fraction, self.seed, self.limit_train_samples)
        for name, (_, labels) in parts.items():
            where = f"{domain} {self.sources[domain].describe()}: split '{name}'"
            check_split_labels(labels, len(self.classes), where, unlabelled_ok=domain == "target")
        return parts

    def build(self, loaded: dict[str, ImageSplits]) -> dict[str, dict[str, TensorDataset]]:
        """Split both domains, conform them to one format, standardise; returns ``data[domain][split]``."""
        self._check_classes(loaded)
        channels, size = self._common_format(loaded)
        data = {}
        for domain in DOMAINS:
            parts = self._split(domain, loaded[domain])
            data[domain] = {k: (conform_images(x, channels, size), y) for k, (x, y) in parts.items() if len(y)}
        if self.normalize != "none":
            reference = {d: data["source" if self.normalize == "source" else d]["train"][0] for d in DOMAINS}
            data = {d: standardize(data[d], reference[d]) for d in DOMAINS}
        return {d: {k: TensorDataset(x, y) for k, (x, y) in parts.items()} for d, parts in data.items()}

    # ------------------------------------------------------------------ loaders
    def _world(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)

    def train_dataloader(self) -> CombinedLoader:
        self._ensure_loaded()
        world, rank = self._world()
        epoch_size = len(self.dataset(self.train_on, "train"))
        loaders = {}
        for offset, domain in enumerate(DOMAINS):
            data = self.dataset(domain, "train")
            if domain == "target" and self.train_on != "target":
                data = TensorDataset(data.tensors[0])  # target labels never reach training
            sampler = ResumableSampler(len(data), world, rank, seed=self.seed + offset, epoch_size=epoch_size)
            resume_sampler(self.trainer, sampler, self.batch_size)
            loaders[domain] = self._loader(data, sampler, self.batch_size)
        return CombinedLoader(loaders, mode="min_size")  # both streams have the same number of batches

    def _eval_loaders(self, split: str) -> list[DataLoader]:
        world, rank = self._world()
        loaders = []
        for domain in DOMAINS:
            data = self.dataset(domain, split)
            loaders.append(self._loader(data, ShardSampler(len(data), world, rank), self.eval_batch_size))
        return loaders

    def val_dataloader(self) -> list[DataLoader]:
        return self._eval_loaders("val")

    def test_dataloader(self) -> list[DataLoader]:
        return self._eval_loaders("test")

    def predict_dataloader(self) -> DataLoader:
        return self._eval_loaders("test")[1]

    def _loader(self, dataset: TensorDataset, sampler, batch_size: int) -> DataLoader:
        return make_loader(dataset, sampler, batch_size, self.num_workers, self.seed)
