"""Memory aware synapses — lecture 14 / HW14 (Aljundi et al. 2018, arXiv 1711.09601).

Importance is how sensitive the network's output is to each parameter; no labels are needed. For every task ``k``
of the stream, in order:

1. Train on task ``k`` with ``CE + lambda * sum_i Omega_i (theta_i - theta*_i)^2`` (the penalty of
   :class:`~lecture_modules.lifelong.penalty.Regularised`).
2. When task ``k`` ends, estimate ``Omega_k = E_x |d ||f(x)||_2^2 / d theta|`` at its final weights ``theta*_k`` on
   its training images (:meth:`MAS.estimate_importance`, from
   :func:`~lecture_modules.lifelong.importance.mas_importance`). ``per_sample: true`` averages it per sample (the
   paper's formula); ``false`` takes it of each batch's mean output norm (HW14's sample code and the official MAS
   code, which estimate on mini-batches; ``configs/mas.yaml``). The per-sample estimate is never smaller, and is
   largest where single samples pull in different directions; at HW14's lambda it both learns the new tasks less
   well and forgets more on HW14's full permuted-MNIST budget (``benchmarks/lifelong.py``).
3. ``Omega`` becomes the ``sum`` or the ``mean`` of ``Omega_0..Omega_k``, anchored at ``theta*_k``
   (:meth:`MAS.consolidate`).

Run: ``python cli.py fit --config configs/mas.yaml``
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lecture_modules.lifelong.continual import HW14_MLP
from lecture_modules.lifelong.importance import Params, mas_importance
from lecture_modules.lifelong.penalty import (
    Accumulate,
    Regularised,
    check_accumulate,
    check_importance_args,
    upgrade_estimated,
)
from lecture_modules.nets import NetSpec

__all__ = ["MAS"]


class MAS(Regularised):
    """Memory aware synapses: output-sensitivity importance, label-free (lecture 14)."""

    def __init__(
        self,
        num_classes: int = 10,
        input_shape: tuple[int, int, int] = (1, 8, 8),
        net: NetSpec = HW14_MLP,
        penalty_weight: float = 0.1,
        importance_samples: int | None = None,
        importance_batch_size: int = 64,
        vectorize: bool = True,
        accumulate: Accumulate = "sum",
        per_sample: bool = True,
    ) -> None:
        """
        Args:
            num_classes: number of classes (linked from the DataModule by the CLI).
            input_shape: (channels, height, width) of one image (linked from the DataModule by the CLI).
            net: the network (default HW14's 1024-512-256 ReLU MLP).
            penalty_weight: lambda of the penalty ``lambda * sum Omega (theta - theta*)^2`` (HW14: 0.1).
            importance_samples: training samples of the task the importance is averaged over (None: all).
            importance_batch_size: samples per batch of per-sample gradients (all processes together).
            vectorize: per-sample gradients with ``vmap`` (one call per batch); False loops over the samples
                (the faster choice on CPUs for wide MLPs; see ``benchmarks/lifelong.py``).
            accumulate: how the importances of successive tasks add up: ``sum`` adds each task's estimate to the
                running total; ``mean`` holds the mean of the tasks' estimates, so the penalty does not grow stiffer
                with every task (HW14's 2021 sample code averages over the data of all tasks seen so far).
            per_sample: True: the mean absolute per-sample gradient (the paper's definition). False: the absolute
                gradient of each batch's mean output norm, averaged over the batches of ``importance_batch_size``
                (HW14's sample code; cancellations inside a batch make it smaller and sparser).
        """
        super().__init__(num_classes=num_classes, input_shape=input_shape, net=net, penalty_weight=penalty_weight)
        check_importance_args(importance_samples, importance_batch_size)
        check_accumulate(accumulate)

    @classmethod
    def upgrade_hparams(cls, hparams: Mapping[str, Any]) -> dict[str, Any]:
        """Older checkpoints: the network arguments folded into ``net``; ``estimate_on: current`` dropped."""
        return upgrade_estimated(cls.__name__, super().upgrade_hparams(hparams))

    def estimate_importance(self, task: int) -> Params:
        """Step 2: ``Omega`` of ``task`` at the current weights, on its training images (all processes together)."""
        hp = self.hparams
        batches = self.importance_batches(task, hp.importance_samples, hp.importance_batch_size)
        return mas_importance(self.net, batches, self.all_reduce(), hp.vectorize, per_sample=hp.per_sample)

    def consolidate(self, task: int) -> None:
        """Steps 2 and 3, once when ``task`` ends: estimate its ``Omega_k``, accumulate, anchor at ``theta*_k``."""
        self.anchor_accumulated(self.estimate_importance(task), self.hparams.accumulate, tasks=task + 1)
