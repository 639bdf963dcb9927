"""Elastic weight consolidation — lecture 14 / HW14 (Kirkpatrick et al. 2017, arXiv 1612.00796).

For every task ``k`` of the stream, in order:

1. Train on task ``k`` with the loss ``CE + lambda * sum_(j<k) sum_i F_ji (theta_i - theta*_ji)^2``, one term per
   earlier task (the penalty of :class:`~lecture_modules.lifelong.penalty.Regularised`).
2. When task ``k`` ends, estimate the diagonal Fisher information ``F_k`` at its final weights ``theta*_k`` on its
   training images (:meth:`EWC.estimate_fisher`, from
   :func:`~lecture_modules.lifelong.importance.fisher_diagonal`): ``empirical``, the squared per-sample gradient of
   the cross-entropy at the true label, or ``true``, its expectation over the model's own predictions.
3. Store the pair ``(theta*_k, F_k)`` (:meth:`EWC.consolidate`). Online EWC (Schwarz et al. 2018, arXiv 1805.06370;
   ``online: true``) keeps one pair instead, ``F <- gamma * F + F_k`` anchored at ``theta*_k``.

Run: ``python cli.py fit --config configs/ewc.yaml``
"""

from __future__ import annotations

from typing import Literal

from lecture_modules.base import bad_setting
from lecture_modules.lifelong.continual import HW14_MLP
from lecture_modules.lifelong.importance import Params, fisher_diagonal
from lecture_modules.lifelong.penalty import Regularised, check_importance_args
from lecture_modules.nets import NetSpec

__all__ = ["EWC"]


class EWC(Regularised):
    """Elastic weight consolidation: diagonal Fisher penalty (empirical / true Fisher, online EWC) (lecture 14)."""

    def __init__(
        self,
        num_classes: int = 10,
        input_shape: tuple[int, int, int] = (1, 8, 8),
        net: NetSpec = HW14_MLP,
        penalty_weight: float = 100.0,
        fisher: Literal["empirical", "true"] = "empirical",
        online: bool = False,
        gamma: float = 1.0,
        importance_samples: int | None = None,
        importance_batch_size: int = 64,
        vectorize: bool = True,
    ) -> None:
        """
        Args:
            num_classes: number of classes (linked from the DataModule by the CLI).
            input_shape: (channels, height, width) of one image (linked from the DataModule by the CLI).
            net: the network (default HW14's 1024-512-256 ReLU MLP).
            penalty_weight: lambda of the penalty ``lambda * sum F (theta - theta*)^2`` (HW14: 100).
            fisher: ``empirical`` (gradients at the true labels) or ``true`` (expectation over the model's own
                predictive distribution, exact over all classes).
            online: online EWC: one accumulated Fisher anchored at the latest weights instead of one per task.
            gamma: online EWC's decay of the earlier Fisher (1 keeps it whole).
            importance_samples: training samples of the task the Fisher is averaged over (None: all).
            importance_batch_size: samples per batch of per-sample gradients (all processes together).
            vectorize: per-sample gradients with ``vmap`` (one call per batch); False loops over the samples
                (the faster choice on CPUs for wide MLPs; see ``benchmarks/lifelong.py``).
        """
        super().__init__(num_classes=num_classes, input_shape=input_shape, net=net, penalty_weight=penalty_weight)
        if fisher not in ("empirical", "true"):
            raise bad_setting("fisher", fisher, "'empirical' or 'true'")
        if not 0.0 <= gamma <= 1.0:
            raise bad_setting("gamma", gamma, "in [0, 1]")
        check_importance_args(importance_samples, importance_batch_size)

    def estimate_fisher(self, task: int) -> Params:
        """Step 2: ``F_k`` at the current weights on ``task``'s training images (all processes together)."""
        hp = self.hparams
        batches = self.importance_batches(task, hp.importance_samples, hp.importance_batch_size)
        chunk = None if hp.fisher == "empirical" else max(1, 64 // self.num_classes)  # true: C gradients a sample
        return fisher_diagonal(self.net, batches, hp.fisher, self.all_reduce(), hp.vectorize, chunk)

    def consolidate(self, task: int) -> None:
        """Steps 2 and 3, once when ``task`` ends: estimate ``F_k`` and anchor it at ``theta*_k``."""
        fisher = self.estimate_fisher(task)
        if self.hparams.online and self.penalties:
            [(_, earlier)] = self.penalties
            gamma = self.hparams.gamma
            self.anchor_one_pair({n: gamma * earlier[n] + fisher[n] for n in fisher})
        else:
            self.anchor_new_pair(fisher)
