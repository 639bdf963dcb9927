"""Task streams for continual learning (lecture 14): a sequence of tasks built from any image DataModule.

The wrapped :class:`~datamodules.image.ImageDataModule` (any source: scikit-learn digits, MNIST IDX, image
folders, Hugging Face datasets) gives standardised train/val/test splits; the stream turns them into ``num_tasks``
tasks:

* ``permuted`` (HW14): every task applies its own fixed, seeded permutation to the pixels (domain-incremental:
  same 10 classes, new input distribution);
* ``rotated``: every task rotates the images by its own angle (``angles``; default evenly spaced in [0, 180));
* ``split_task``: the classes are cut into ``num_tasks`` groups (``class_order``); the model is told the task at
  test time and only the task's classes compete (masked logits, task-incremental);
* ``split_class``: the same groups, but all classes seen so far compete (class-incremental, no task label).

Batches are ``(x, y, task)``. The whole sequence runs in one ``fit``: epoch ``e`` trains on task
``e // epochs_per_task`` (``trainer.reload_dataloaders_every_n_epochs: 1`` rebuilds the training loader each
epoch; the stream refuses other values). ``train_on: seen`` trains on the union of the tasks seen so far and ``all``
on every task from the first epoch (the joint, multi-task upper bound). Validation and test return one loader per
task (all tasks, seen or not), so the accuracy matrix R[i][j] can be filled in and forward transfer measured.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from typing import Literal

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_warn
from torch.utils.data import ConcatDataset, DataLoader, TensorDataset

from datamodules.image import ImageDataModule, make_loader, resume_sampler
from datamodules.samplers import ResumableSampler, ShardSampler

__all__ = ["SCENARIOS", "TaskStreamDataModule", "permute_pixels", "rotate_images", "split_classes"]

log = logging.getLogger(__name__)
SCENARIOS = ("permuted", "rotated", "split_task", "split_class")
Scenario = Literal["permuted", "rotated", "split_task", "split_class"]


def permute_pixels(x: torch.Tensor, permutation: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) images with their C*H*W values reordered by ``permutation``."""
    return x.flatten(1)[:, permutation].view_as(x)


def rotate_images(x: torch.Tensor, degrees: float) -> torch.Tensor:
    """(N, C, H, W) images rotated counter-clockwise by ``degrees`` about the centre (bilinear, border fill)."""
    if degrees % 360 == 0:
        return x.clone()
    rad = math.radians(degrees)
    c, s = math.cos(rad), math.sin(rad)
    theta = torch.tensor([[c, -s, 0.0], [s, c, 0.0]], dtype=x.dtype).expand(len(x), 2, 3)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, padding_mode="border", align_corners=False)


def split_classes(order: list[int], num_tasks: int) -> list[list[int]]:
    """Cut ``order`` into ``num_tasks`` contiguous groups whose sizes differ by at most one."""
    sizes = [len(order) // num_tasks + (1 if i < len(order) % num_tasks else 0) for i in range(num_tasks)]
    out, start = [], 0
    for size in sizes:
        out.append(list(order[start : start + size]))
        start += size
    return out


class TaskStreamDataModule(L.LightningDataModule):
    """A stream of classification tasks (permuted, rotated, split) over any image DataModule."""

    def __init__(
        self,
        base: ImageDataModule | None = None,
        scenario: Scenario = "permuted",
        num_tasks: int = 5,
        epochs_per_task: int = 1,
        train_on: Literal["current", "seen", "all"] = "current",
        eval_split: Literal["val", "test"] = "val",
        angles: list[float] | None = None,
        class_order: list[int] | None = None,
        seed: int = 0,
    ) -> None:
        """
        Args:
            base: the image DataModule whose splits the tasks are built from (its batch sizes, workers and
                ``limit_train_samples`` apply); default: scikit-learn's digits, 10% val, 20% test.
            scenario: ``permuted``, ``rotated``, ``split_task`` (task-incremental) or ``split_class``
                (class-incremental).
            num_tasks: number of tasks in the stream.
            epochs_per_task: training epochs per task; ``trainer.max_epochs`` should be
                ``num_tasks * epochs_per_task``.
            train_on: train on the ``current`` task only (continual learning), on all tasks ``seen`` so far, or on
                ``all`` tasks from the start (the joint upper bounds).
            eval_split: split the per-epoch validation loaders read (``test`` reproduces HW14's curves, which
                were measured on the test set).
            angles: rotated only: one angle in degrees per task (default ``i * 180 / num_tasks``).
            class_order: split only: the class order cut into tasks (default 0..num_classes-1).
            seed: seed of the permutations.
        """
        super().__init__()
        if scenario not in SCENARIOS:
            raise ValueError(f"TaskStreamDataModule.scenario must be one of {SCENARIOS}, got {scenario!r}")
        if num_tasks < 1 or epochs_per_task < 1:
            raise ValueError(
                f"TaskStreamDataModule needs num_tasks >= 1 and epochs_per_task >= 1, got {num_tasks}, "
                f"{epochs_per_task}"
            )
        if train_on not in ("current", "seen", "all"):
            raise ValueError(f"TaskStreamDataModule.train_on must be current, seen or all, got {train_on!r}")
        if eval_split not in ("val", "test"):
            raise ValueError(f"TaskStreamDataModule.eval_split must be 'val' or 'test', got {eval_split!r}")
        if angles is not None and len(angles) != num_tasks:
            raise ValueError(f"TaskStreamDataModule.angles needs one angle per task ({num_tasks}), got {angles}")
        self.save_hyperparameters(ignore=["base"])  # the base's own settings are saved by the CLI config
        self.base = base if base is not None else ImageDataModule()
        self.base.name_settings("data.init_args.base")
        self.scenario, self.num_tasks, self.epochs_per_task = scenario, num_tasks, epochs_per_task
        self.train_on, self.eval_split, self.seed = train_on, eval_split, seed
        self.angles = list(angles) if angles is not None else [i * 180.0 / num_tasks for i in range(num_tasks)]
        self.class_order = class_order
        self._cache: dict[tuple[int, str], TensorDataset] = {}
        self._groups: list[list[int]] | None = None

    # ------------------------------------------------------------------ shapes read by the CLI
    @property
    def num_classes(self) -> int:
        return self.base.num_classes

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return self.base.input_shape

    # ------------------------------------------------------------------ tasks
    def task_of_epoch(self, epoch: int) -> int:
        """The task trained in ``epoch`` (epochs after the last task keep training the last task)."""
        return min(epoch // self.epochs_per_task, self.num_tasks - 1)

    def task_classes(self) -> list[list[int]] | None:
        """Split scenarios: the classes of each task; None when every task has all classes."""
        if not self.scenario.startswith("split"):
            return None
        if self._groups is None:
            n = self.num_classes
            order = list(self.class_order) if self.class_order is not None else list(range(n))
            if sorted(order) != list(range(n)):
                raise ValueError(
                    f"TaskStreamDataModule.class_order must be a permutation of 0..{n - 1}, got {self.class_order}"
                )
            if self.num_tasks > n:
                raise ValueError(f"TaskStreamDataModule: cannot split {n} classes into {self.num_tasks} tasks")
            self._groups = split_classes(order, self.num_tasks)
        return self._groups

    def class_mask(self) -> torch.Tensor | None:
        """Task-incremental only: (num_tasks, num_classes) bool, True where a class belongs to the task."""
        if self.scenario != "split_task":
            return None
        mask = torch.zeros(self.num_tasks, self.num_classes, dtype=torch.bool)
        for t, classes in enumerate(self.task_classes()):
            mask[t, classes] = True
        return mask

    def task_data(self, task: int, split: str) -> TensorDataset:
        """``(x, y, task)`` tensors of one task's split, built once and cached."""
        if not 0 <= task < self.num_tasks:
            raise ValueError(f"task {task} is outside the stream's {self.num_tasks} tasks")
        key = (task, split)
        if key not in self._cache:
            self._cache[key] = TensorDataset(*self._build(task, split))
        return self._cache[key]

    def _build(self, task: int, split: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        self.base._ensure_loaded()
        if split not in self.base._data:
            raise ValueError(f"{self.base.source.describe()} has no '{split}' split (set base {split}_fraction > 0)")
        x, y = self.base._data[split].tensors[:2]
        if self.scenario == "permuted":
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + task)
            x = permute_pixels(x, torch.randperm(x[0].numel(), generator=g))
        elif self.scenario == "rotated":
            x = rotate_images(x, self.angles[task])
        else:
            keep = torch.isin(y, torch.tensor(self.task_classes()[task]))
            x, y = x[keep], y[keep]
        return x.contiguous(), y, torch.full_like(y, task)

    def shard_batches(
        self, task: int, samples: int | None, batch_size: int, world: int = 1, rank: int = 0, split: str = "train"
    ) -> Iterator[tuple[torch.Tensor, ...]]:
        """Rank ``rank``'s part of every global batch of ``samples`` seeded-random ``split`` samples of ``task``.

        The global batches (``batch_size`` samples, all processes together) do not depend on the number of
        processes; rank ``r`` of ``w`` takes every ``w``-th sample of each, so statistics summed over processes
        equal the single-process ones. A last batch smaller than ``world`` is dropped on every rank.
        """
        data = self.task_data(task, split)
        n = len(data) if samples is None else min(samples, len(data))
        order = torch.randperm(len(data), generator=torch.Generator().manual_seed(self.seed * 7919 + task))[:n]
        for start in range(0, n, batch_size):
            part = order[start : start + batch_size]
            if len(part) < world:
                break  # every process needs a share of every batch
            yield tuple(tensor[part[rank::world]] for tensor in data.tensors)

    # ------------------------------------------------------------------ loading
    def setup(self, stage: str | None = None) -> None:
        self.base._ensure_loaded()
        self.task_classes()  # validates class_order
        trainer = self.trainer
        if stage == "fit" and trainer is not None and self.train_on != "all" and self.num_tasks > 1:
            if trainer.reload_dataloaders_every_n_epochs != 1:
                raise ValueError(
                    "TaskStreamDataModule switches task between epochs: set trainer.reload_dataloaders_every_n_epochs"
                    f" to 1 (it is {trainer.reload_dataloaders_every_n_epochs})"
                )
            total = self.num_tasks * self.epochs_per_task
            if trainer.max_epochs is not None and trainer.max_epochs != total and not trainer.fast_dev_run:
                rank_zero_warn(
                    f"TaskStreamDataModule: {self.num_tasks} tasks x {self.epochs_per_task} epochs = {total} epochs, "
                    f"but trainer.max_epochs is {trainer.max_epochs}"
                )

    def _world(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)

    def train_tasks(self, epoch: int) -> list[int]:
        """The tasks whose training data epoch ``epoch`` reads."""
        task = self.task_of_epoch(epoch)
        return {"current": [task], "seen": list(range(task + 1)), "all": list(range(self.num_tasks))}[self.train_on]

    def train_dataloader(self) -> DataLoader:
        epoch = self.trainer.current_epoch if self.trainer is not None else 0
        parts = [self.task_data(t, "train") for t in self.train_tasks(epoch)]
        data = parts[0] if len(parts) == 1 else ConcatDataset(parts)
        world, rank = self._world()
        sampler = ResumableSampler(len(data), world, rank, seed=self.seed, shuffle=True)
        resume_sampler(self.trainer, sampler, self.base.batch_size)
        return make_loader(data, sampler, self.base.batch_size, self.base.num_workers, self.seed)

    def _eval_loaders(self, split: str) -> list[DataLoader]:
        world, rank = self._world()
        loaders = []
        for task in range(self.num_tasks):
            data = self.task_data(task, split)
            sampler = ShardSampler(len(data), world, rank)
            loaders.append(make_loader(data, sampler, self.base.eval_batch_size, self.base.num_workers, self.seed))
        return loaders

    def val_dataloader(self) -> list[DataLoader]:
        return self._eval_loaders(self.eval_split)

    def test_dataloader(self) -> list[DataLoader]:
        return self._eval_loaders("test")

    def predict_dataloader(self) -> list[DataLoader]:
        return self._eval_loaders("test")
