"""Sliced Cramér preservation — lecture 14 / HW14 (Kolouri et al. 2020, openreview BJge3TNKwH).

Importance is how much each parameter moves the distribution of the network's mean output, measured along
``slices`` random directions of the output space (the sliced Cramér distance):
``1/L sum_l (d <xi_l, mean f(x)> / d theta)^2`` per batch (:func:`~lecture_modules.lifelong.importance.scp_importance`),
accumulated over tasks and anchored at the latest task's weights. Label-free.

Run: ``python cli.py fit --config configs/scp.yaml``
"""

from __future__ import annotations

from typing import Literal

import torch

from lecture_modules.lifelong.base import Regularised, check_accumulate, check_importance_args
from lecture_modules.lifelong.importance import Params, scp_importance

__all__ = ["SCP"]


class SCP(Regularised):
    """Sliced Cramér preservation: importance from random 1-D projections of the mean output (lecture 14)."""

    def __init__(
        self,
        num_classes: int = 10,
        input_shape: tuple[int, int, int] = (1, 8, 8),
        backbone: Literal["mlp", "cnn"] = "mlp",
        hidden: list[int] | None = None,
        batch_norm: bool = False,
        dropout: float = 0.0,
        penalty_weight: float = 100.0,
        slices: int = 100,
        importance_samples: int | None = None,
        importance_batch_size: int = 64,
        accumulate: Literal["sum", "mean", "hw14"] = "sum",
        estimate_on: Literal["current", "seen"] = "current",
    ) -> None:
        """
        Args:
            num_classes: number of classes (linked from the DataModule by the CLI).
            input_shape: (channels, height, width) of one image (linked from the DataModule by the CLI).
            backbone: ``mlp`` (HW14) or ``cnn``.
            hidden: layer widths (default [1024, 512, 256] for the MLP, as in HW14).
            batch_norm: batch normalisation after each hidden layer.
            dropout: dropout probability after each hidden layer.
            penalty_weight: lambda of the penalty ``lambda * sum Gamma (theta - theta*)^2`` (HW14: 100).
            slices: number L of random unit directions per batch.
            importance_samples: training samples of the task the importance is estimated on (None: all).
            importance_batch_size: samples per batch whose mean output is sliced (all processes together).
            accumulate: ``sum`` adds each task's importance to the running total, ``mean`` holds their mean,
                ``hw14`` compounds them as HW14's later (rotated-MNIST) sample code does (as for MAS; see
                ``Regularised.anchor_with``).
            estimate_on: ``current``: each task's importance is estimated once, on its own data, when it ends.
                ``seen``: every task's end re-estimates the importances of all tasks so far at the current weights
                (their mean or sum, per ``accumulate``, replaces the penalty; HW14's 2021 sample code). Needs the
                old tasks' data: ``importance_samples`` images of each.
        """
        super().__init__(num_classes, input_shape, backbone, hidden, batch_norm, dropout, penalty_weight)
        if slices < 1:
            raise ValueError(f"SCP.slices must be >= 1, got {slices}")
        check_importance_args(type(self).__name__, importance_samples, importance_batch_size)
        check_accumulate(type(self).__name__, accumulate, estimate_on)
        self.save_hyperparameters()

    def consolidate(self, task: int) -> None:
        hp = self.hparams
        directions = torch.Generator().manual_seed(self.stream.seed * 7919 + task)  # the same on every process

        def importance_of(k: int) -> Params:
            batches = self.importance_batches(k, hp.importance_samples, hp.importance_batch_size)
            return scp_importance(self.net, batches, hp.slices, directions, self.all_reduce())

        self.consolidate_estimated(task, importance_of, hp.accumulate, hp.estimate_on)
