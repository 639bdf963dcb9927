"""Sliced Cramér preservation — lecture 14 / HW14 (Kolouri et al. 2020, openreview BJge3TNKwH).

Importance is how much each parameter moves the distribution of the network's mean output, measured along random
directions of the output space (the sliced Cramér distance); no labels are needed. For every task ``k`` of the
stream, in order:

1. Train on task ``k`` with ``CE + lambda * sum_i Gamma_i (theta_i - theta*_i)^2`` (the penalty of
   :class:`~lecture_modules.lifelong.penalty.Regularised`).
2. When task ``k`` ends, draw ``slices`` unit directions ``xi_l`` per batch (seeded by the task, the same on every
   process) and estimate ``Gamma_k = 1/L sum_l (d <xi_l, mean_batch f(x)> / d theta)^2``, averaged over batches of
   its training images, at its final weights ``theta*_k`` (:meth:`SCP.estimate_importance`, from
   :func:`~lecture_modules.lifelong.importance.scp_importance`).
3. ``Gamma`` becomes the ``sum`` or the ``mean`` of ``Gamma_0..Gamma_k``, anchored at ``theta*_k``
   (:meth:`SCP.consolidate`).

Run: ``python cli.py fit --config configs/scp.yaml``
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from lecture_modules.base import bad_setting
from lecture_modules.lifelong.continual import HW14_MLP
from lecture_modules.lifelong.importance import Params, scp_importance
from lecture_modules.lifelong.penalty import (
    Accumulate,
    Regularised,
    check_accumulate,
    check_importance_args,
    upgrade_estimated,
)
from lecture_modules.nets import NetSpec

__all__ = ["SCP"]


class SCP(Regularised):
    """Sliced Cramér preservation: importance from random 1-D projections of the mean output (lecture 14)."""

    def __init__(
        self,
        num_classes: int = 10,
        input_shape: tuple[int, int, int] = (1, 8, 8),
        net: NetSpec = HW14_MLP,
        penalty_weight: float = 100.0,
        slices: int = 100,
        importance_samples: int | None = None,
        importance_batch_size: int = 64,
        accumulate: Accumulate = "sum",
    ) -> None:
        """
        Args:
            num_classes: number of classes (linked from the DataModule by the CLI).
            input_shape: (channels, height, width) of one image (linked from the DataModule by the CLI).
            net: the network (default HW14's 1024-512-256 ReLU MLP).
            penalty_weight: lambda of the penalty ``lambda * sum Gamma (theta - theta*)^2`` (HW14: 100).
            slices: number L of random unit directions per batch.
            importance_samples: training samples of the task the importance is estimated on (None: all).
            importance_batch_size: samples per batch whose mean output is sliced (all processes together).
            accumulate: ``sum`` adds each task's importance to the running total, ``mean`` holds their mean (the
                penalty then does not grow stiffer with every task).
        """
        super().__init__(num_classes=num_classes, input_shape=input_shape, net=net, penalty_weight=penalty_weight)
        if slices < 1:
            raise bad_setting("slices", slices, ">= 1")
        check_importance_args(importance_samples, importance_batch_size)
        check_accumulate(accumulate)

    @classmethod
    def upgrade_hparams(cls, hparams: Mapping[str, Any]) -> dict[str, Any]:
        """Older checkpoints: the network arguments folded into ``net``; ``estimate_on: current`` dropped."""
        return upgrade_estimated(cls.__name__, super().upgrade_hparams(hparams))

    def slice_generator(self, task: int) -> torch.Generator:
        """The generator of the directions drawn when ``task`` ends: seeded by the task, the same on every process."""
        return torch.Generator().manual_seed(self.stream.seed * 7919 + task)

    def estimate_importance(self, task: int, directions: torch.Generator) -> Params:
        """Step 2: ``Gamma`` of ``task`` at the current weights, on its training images (all processes together)."""
        hp = self.hparams
        batches = self.importance_batches(task, hp.importance_samples, hp.importance_batch_size)
        return scp_importance(self.net, batches, hp.slices, directions, self.all_reduce())

    def consolidate(self, task: int) -> None:
        """Steps 2 and 3, once when ``task`` ends: estimate its ``Gamma_k``, accumulate, anchor at ``theta*_k``."""
        importance = self.estimate_importance(task, self.slice_generator(task))
        self.anchor_accumulated(importance, self.hparams.accumulate, tasks=task + 1)
