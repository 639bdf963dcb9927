"""Elastic weight consolidation — lecture 14 / HW14 (Kirkpatrick et al. 2017, arXiv 1612.00796).

After every task the diagonal Fisher information ``F`` of the network at its weights ``theta*`` is estimated on the
task's training data (:func:`~lecture_modules.lifelong.importance.fisher_diagonal`, ``empirical`` or ``true``), and
later tasks pay ``penalty_weight * sum_k sum_i F_ki (theta_i - theta*_ki)^2``: one term per earlier task, as in the
paper. ``online: true`` is online EWC (Schwarz et al. 2018, arXiv 1805.06370): one term, anchored at the latest
task's weights, with ``F <- gamma * F + F_new``.

Run: ``python cli.py fit --config configs/ewc.yaml``
"""

from __future__ import annotations

from typing import Literal

from lecture_modules.lifelong.base import Regularised, check_importance_args
from lecture_modules.lifelong.importance import fisher_diagonal

__all__ = ["EWC"]


class EWC(Regularised):
    """Elastic weight consolidation: diagonal Fisher penalty (empirical / true Fisher, online EWC) (lecture 14)."""

    def __init__(
        self,
        num_classes: int = 10,
        input_shape: tuple[int, int, int] = (1, 8, 8),
        backbone: Literal["mlp", "cnn"] = "mlp",
        hidden: list[int] | None = None,
        batch_norm: bool = False,
        dropout: float = 0.0,
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
            backbone: ``mlp`` (HW14) or ``cnn``.
            hidden: layer widths (default [1024, 512, 256] for the MLP, as in HW14).
            batch_norm: batch normalisation after each hidden layer.
            dropout: dropout probability after each hidden layer.
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
        super().__init__(num_classes, input_shape, backbone, hidden, batch_norm, dropout, penalty_weight)
        if fisher not in ("empirical", "true"):
            raise ValueError(f"EWC.fisher must be 'empirical' or 'true', got {fisher!r}")
        if not 0.0 <= gamma <= 1.0:
            raise ValueError(f"EWC.gamma must be in [0, 1], got {gamma}")
        check_importance_args(type(self).__name__, importance_samples, importance_batch_size)
        self.save_hyperparameters()

    def consolidate(self, task: int) -> None:
        hp = self.hparams
        batches = self.importance_batches(task, hp.importance_samples, hp.importance_batch_size)
        chunk = None if hp.fisher == "empirical" else max(1, 64 // self.num_classes)
        fisher = fisher_diagonal(self.net, batches, hp.fisher, self.all_reduce(), hp.vectorize, chunk)
        if hp.online and self.penalties:
            old = self.penalties[0][1]
            fisher = {n: hp.gamma * old[n] + fisher[n] for n in fisher}
            self.penalties = []
        self.anchor_with(fisher, accumulate=False)
