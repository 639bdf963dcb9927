"""Episodic DataModule: N-way K-shot Q-query tasks from any class-structured image source.

A task picks ``ways`` classes of one split, and ``shots + queries`` distinct images of each; its labels are
``0..ways-1`` in a random class order. A batch is a meta-batch of tasks stacked along a leading dimension:
``(x_support (T, N*K, C, H, W), y_support (T, N*K), x_query (T, N*Q, C, H, W), y_query (T, N*Q))``.

* Classes, not images, are split: meta-train, meta-val and meta-test classes are disjoint. A source's own ``test``
  split (Omniglot's ``images_evaluation``) is the meta-test set; otherwise ``test_fraction`` of the classes are
  held out with ``seed``; ``val_fraction`` of the remaining training classes form the meta-validation set.
* ``rotations`` adds the 90, 180 and 270 degree rotations of every meta-train class as new classes (the standard
  Omniglot augmentation, Santoro et al. 2016).
* Task ``i`` of a stream (train, val, test) is drawn from its own generator seeded by ``(seed, stream, i)``:
  episodes do not depend on the global RNG, on worker processes or on the number of ranks. Training episode
  indices run on across epochs (epoch ``e`` holds ``e * episodes_per_epoch + i``), each rank takes every
  ``world_size``-th one, so a rank's meta-batch of ``meta_batch_size / world_size`` tasks and the other ranks'
  together are exactly the meta-batch a single process would see; a resumed run continues with the next episode.
* Validation uses the same ``val_episodes`` tasks every time; test uses ``test_episodes`` tasks (600, as papers).
"""

from __future__ import annotations

import logging

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from datamodules.image import conform_images, make_loader, resume_sampler
from datamodules.samplers import ResumableSampler, ShardSampler
from datamodules.sources import ImageSource, ImageSplits

__all__ = ["ClassSplit", "EpisodeDataset", "EpisodeSampler", "EpisodicDataModule", "split_classes"]

log = logging.getLogger(__name__)
STREAMS = {"train": 0, "val": 1, "test": 2}


class ClassSplit:
    """The images of one meta-split: ``images`` float (M, C, H, W), ``members[c]`` the indices of class ``c``."""

    def __init__(self, images: torch.Tensor, members: list[torch.Tensor], names: list[str]) -> None:
        self.images, self.members, self.names = images, members, names

    def rotated(self) -> ClassSplit:
        """This split plus each class rotated by 90, 180 and 270 degrees as three new classes."""
        n = len(self.images)
        images = torch.cat([torch.rot90(self.images, k, dims=(2, 3)) for k in range(4)])
        members = [m + k * n for k in range(4) for m in self.members]
        names = [name if k == 0 else f"{name} (rot{90 * k})" for k in range(4) for name in self.names]
        return ClassSplit(images, members, names)

    def check(self, split: str, ways: int, per_class: int, where: str) -> None:
        if len(self.members) < ways:
            raise ValueError(
                f"{where}: the meta-{split} split has {len(self.members)} classes, but {ways}-way tasks need at "
                f"least {ways}; lower data.ways or change the class fractions (data.val_fraction/test_fraction)"
            )
        for name, members in zip(self.names, self.members, strict=True):
            if len(members) < per_class:
                raise ValueError(
                    f"{where}: class '{name}' (meta-{split}) has {len(members)} images, but each task needs "
                    f"{per_class} per class (shots + queries); lower data.shots or data.queries, or remove the class"
                )


def split_classes(
    loaded: ImageSplits, val_fraction: float, test_fraction: float, seed: int
) -> dict[str, tuple[str, np.ndarray]]:
    """Meta-split -> (source split its images come from, class ids); classes never appear in two meta-splits."""
    rng = np.random.default_rng(seed)
    present = {name: np.unique(y.numpy()) for name, (_, y) in loaded.splits.items() if len(y)}
    train = rng.permutation(present["train"])
    out = {}
    for split, fraction in (("test", test_fraction), ("val", val_fraction)):
        if split in present:
            out[split] = (split, np.sort(present[split]))
        else:
            n = round(fraction * len(train))
            if fraction > 0 and n == 0:
                raise ValueError(f"{split}_fraction={fraction} of {len(train)} classes holds out no class")
            out[split], train = ("train", np.sort(train[:n])), train[n:]
    out["train"] = ("train", np.sort(train))
    overlap = set(out["train"][1]) & (set(out["val"][1]) | set(out["test"][1]))
    if overlap:
        names = [loaded.classes[i] for i in sorted(overlap)[:5]]
        raise ValueError(
            f"classes {names} are in the source's train split and in its val/test split: few-shot splits need "
            "disjoint classes (use a source whose splits hold different classes, or only its train split)"
        )
    return out


class EpisodeDataset(Dataset):
    """Task ``i`` = a deterministic function of ``(seed, stream, i)``; returns (x_s, y_s, x_q, y_q)."""

    def __init__(
        self, split: ClassSplit, ways: int, shots: int, queries: int, seed: int, stream: int, length: int
    ) -> None:
        self.split, self.ways, self.shots, self.queries = split, ways, shots, queries
        self.seed, self.stream, self.length = seed, stream, length

    def __len__(self) -> int:
        return self.length

    def generator(self, index: int) -> torch.Generator:
        state = np.random.SeedSequence([self.seed, self.stream, index]).generate_state(1, dtype=np.uint64)[0]
        return torch.Generator().manual_seed(int(state))

    def __getitem__(self, index: int) -> tuple[torch.Tensor, ...]:
        g = self.generator(index)
        members = self.split.members
        classes = torch.randperm(len(members), generator=g)[: self.ways].tolist()
        k = self.shots + self.queries
        picks = torch.stack([members[c][torch.randperm(len(members[c]), generator=g)[:k]] for c in classes])  # (N, K+Q)
        labels = torch.arange(self.ways)
        x_support = self.split.images[picks[:, : self.shots].reshape(-1)]  # (N*K, C, H, W), class-major
        x_query = self.split.images[picks[:, self.shots :].reshape(-1)]  # (N*Q, C, H, W)
        return x_support, labels.repeat_interleave(self.shots), x_query, labels.repeat_interleave(self.queries)


class EpisodeSampler(ResumableSampler):
    """Training episode indices: this rank's share of ``epoch * episodes_per_epoch + i`` (resumable mid-epoch)."""

    def __init__(self, episodes_per_epoch: int, num_replicas: int, rank: int) -> None:
        super().__init__(episodes_per_epoch, num_replicas, rank, shuffle=False, drop_last=True)

    def __iter__(self):
        offset = self.epoch * self.data_len
        return (offset + i for i in super().__iter__())


class EpisodicDataModule(L.LightningDataModule):
    """N-way K-shot Q-query tasks from any class-structured image source; disjoint meta-train/val/test classes."""

    def __init__(
        self,
        source: ImageSource | None = None,
        ways: int = 5,
        shots: int = 1,
        queries: int = 15,
        meta_batch_size: int = 32,
        eval_meta_batch_size: int | None = None,
        episodes_per_epoch: int = 3200,
        val_episodes: int = 200,
        test_episodes: int = 600,
        val_fraction: float = 0.15,
        test_fraction: float = 0.25,
        rotations: bool = False,
        image_size: int | None = 28,
        channels: int | None = 1,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        """
        Args:
            source: where the images come from; default: letters rendered from matplotlib's DejaVu fonts
                (:class:`datamodules.few_shot_sources.GlyphSource`, no download). Omniglot:
                :class:`datamodules.few_shot_sources.OmniglotSource`; any ``root/<class>/*.png`` tree:
                :class:`datamodules.sources.ImageFolderSource`; a Hugging Face dataset with a label column:
                :class:`datamodules.sources.HFDatasetSource`.
            ways: classes per task (N); linked into the model's ``num_classes``.
            shots: support images per class (K).
            queries: query images per class (Q).
            meta_batch_size: tasks per meta-update, over all processes (split evenly across DDP ranks).
            eval_meta_batch_size: tasks per validation/test batch per process (default: ``meta_batch_size``).
            episodes_per_epoch: training tasks per epoch (a multiple of ``meta_batch_size``).
            val_episodes: validation tasks (the same ones at every validation).
            test_episodes: test tasks (600, as papers report).
            val_fraction: part of the meta-train classes held out for meta-validation (if the source has no val).
            test_fraction: part of the classes held out for meta-test (if the source has no test split).
            rotations: add 90/180/270-degree rotations of each meta-train class as new classes (square images).
            image_size: resize images to this square size (28 for Omniglot; null keeps the source's).
            channels: convert to this many channels (1 = grey, 3 = RGB; null keeps the source's).
            num_workers: DataLoader worker processes.
            seed: seed of the class split and of every task.
        """
        super().__init__()
        for name, value in (
            ("ways", ways),
            ("shots", shots),
            ("queries", queries),
            ("meta_batch_size", meta_batch_size),
        ):
            if value < 1:
                raise ValueError(f"EpisodicDataModule.{name} must be >= 1, got {value}")
        if ways < 2:
            raise ValueError(f"EpisodicDataModule.ways must be >= 2, got {ways}")
        if episodes_per_epoch < meta_batch_size or episodes_per_epoch % meta_batch_size:
            raise ValueError(
                f"EpisodicDataModule.episodes_per_epoch ({episodes_per_epoch}) must be a positive multiple of "
                f"meta_batch_size ({meta_batch_size})"
            )
        for name, value in (("val_episodes", val_episodes), ("test_episodes", test_episodes)):
            if value < 1:
                raise ValueError(f"EpisodicDataModule.{name} must be >= 1, got {value}")
        for name, frac in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
            if not 0.0 <= frac < 1.0:
                raise ValueError(f"EpisodicDataModule.{name} must be in [0, 1), got {frac}")
        if channels not in (None, 1, 3):
            raise ValueError(f"EpisodicDataModule.channels must be 1, 3 or null, got {channels}")
        self.save_hyperparameters(ignore=["source"])  # a source object would make checkpoints unsafe to load
        if source is None:
            from datamodules.few_shot_sources import GlyphSource

            source = GlyphSource()
        self.source = source
        self.source.name_settings("data.init_args.source")
        self.ways, self.shots, self.queries = ways, shots, queries
        self.meta_batch_size = meta_batch_size
        self.eval_meta_batch_size = eval_meta_batch_size or meta_batch_size
        self.episodes = {"train": episodes_per_epoch, "val": val_episodes, "test": test_episodes}
        self.val_fraction, self.test_fraction, self.rotations = val_fraction, test_fraction, rotations
        self.image_size, self.channels = image_size, channels
        self.num_workers, self.seed = num_workers, seed
        self.splits: dict[str, ClassSplit] | None = None

    # ------------------------------------------------------------------ shapes read by the CLI
    @property
    def num_classes(self) -> int:
        """Output size of the model's head: the ways N."""
        return self.ways

    @property
    def input_shape(self) -> tuple[int, int, int]:
        self._ensure_loaded()
        return tuple(self.splits["train"].images.shape[1:])  # (C, H, W)

    # ------------------------------------------------------------------ loading
    def setup(self, stage: str | None = None) -> None:
        self._ensure_loaded()

    def _ensure_loaded(self) -> None:
        if self.splits is None:
            self.splits = self.build_splits(self.source.load())
            sizes = {k: f"{len(v.members)} classes / {len(v.images)} images" for k, v in self.splits.items()}
            log.info("%s: %s", self.source.describe(), sizes)

    def build_splits(self, loaded: ImageSplits) -> dict[str, ClassSplit]:
        where = self.source.describe()
        out = {}
        for split, (from_split, class_ids) in split_classes(
            loaded, self.val_fraction, self.test_fraction, self.seed
        ).items():
            x, y = loaded.splits[from_split]
            keep = torch.isin(y, torch.from_numpy(class_ids))
            x, y = conform_images(x[keep], self.channels, self.image_size), y[keep]
            members = [torch.nonzero(y == c).flatten() for c in class_ids.tolist()]
            out[split] = ClassSplit(x, members, [loaded.classes[c] for c in class_ids.tolist()])
        if self.rotations:
            if out["train"].images.shape[-1] != out["train"].images.shape[-2]:
                raise ValueError(f"EpisodicDataModule.rotations needs square images; set image_size ({where})")
            out["train"] = out["train"].rotated()
        for split, classes in out.items():
            classes.check(split, self.ways, self.shots + self.queries, where)
        return out

    # ------------------------------------------------------------------ loaders
    def _world(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)

    def _dataset(self, split: str) -> EpisodeDataset:
        self._ensure_loaded()
        return EpisodeDataset(
            self.splits[split], self.ways, self.shots, self.queries, self.seed, STREAMS[split], self.episodes[split]
        )

    def train_dataloader(self) -> DataLoader:
        world, rank = self._world()
        if self.meta_batch_size % world:
            raise ValueError(
                f"EpisodicDataModule.meta_batch_size ({self.meta_batch_size}) must be divisible by the number of "
                f"processes ({world}): each rank takes an equal share of every meta-batch"
            )
        per_rank = self.meta_batch_size // world
        sampler = EpisodeSampler(self.episodes["train"], world, rank)
        resume_sampler(self.trainer, sampler, per_rank)
        return make_loader(self._dataset("train"), sampler, per_rank, self.num_workers, self.seed)

    def _eval_loader(self, split: str) -> DataLoader:
        world, rank = self._world()
        sampler = ShardSampler(self.episodes[split], world, rank)
        return make_loader(self._dataset(split), sampler, self.eval_meta_batch_size, self.num_workers, self.seed)

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")
