"""Memory aware synapses — lecture 14 / HW14 (Aljundi et al. 2018, arXiv 1711.09601).

Importance is how sensitive the network's output is to each parameter, with no labels needed: the absolute
gradient of the squared L2 norm of the output (:func:`~lecture_modules.lifelong.importance.mas_importance`),
accumulated over tasks and anchored at the latest task's weights. ``per_sample: true`` averages it per sample
(the paper's formula); ``false`` takes it of each batch's mean output norm (HW14's sample code and the official
MAS code, which estimate on mini-batches; ``configs/mas.yaml``). The per-sample estimate is never smaller, and
is largest where single samples pull in different directions; at HW14's lambda it both learns the new tasks less
well and forgets more on HW14's full permuted-MNIST budget (README, ``benchmarks/lifelong.py``).

Run: ``python cli.py fit --config configs/mas.yaml``
"""

from __future__ import annotations

from typing import Literal

from lecture_modules.lifelong.base import Regularised, check_accumulate, check_importance_args
from lecture_modules.lifelong.importance import Params, mas_importance

__all__ = ["MAS"]


class MAS(Regularised):
    """Memory aware synapses: output-sensitivity importance, label-free (lecture 14)."""

    def __init__(
        self,
        num_classes: int = 10,
        input_shape: tuple[int, int, int] = (1, 8, 8),
        backbone: Literal["mlp", "cnn"] = "mlp",
        hidden: list[int] | None = None,
        batch_norm: bool = False,
        dropout: float = 0.0,
        penalty_weight: float = 0.1,
        importance_samples: int | None = None,
        importance_batch_size: int = 64,
        vectorize: bool = True,
        accumulate: Literal["sum", "mean", "hw14"] = "sum",
        per_sample: bool = True,
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
            penalty_weight: lambda of the penalty ``lambda * sum Omega (theta - theta*)^2`` (HW14: 0.1).
            importance_samples: training samples of the task the importance is averaged over (None: all).
            importance_batch_size: samples per batch of per-sample gradients (all processes together).
            vectorize: per-sample gradients with ``vmap`` (one call per batch); False loops over the samples
                (the faster choice on CPUs for wide MLPs; see ``benchmarks/lifelong.py``).
            accumulate: how the importances of successive tasks add up. ``sum``: each task's estimate is added to
                the running total. ``mean``: the penalty holds the mean of the tasks' estimates, so it does not grow
                stiffer with every task (HW14's 2021 sample code averages over the data of all tasks seen so far).
                ``hw14``: the compounding sum of HW14's later (rotated-MNIST) sample code: task k's estimate counts
                ``2^(j-k-1)`` times after task j, so old tasks are held ever more firmly (see
                ``Regularised.anchor_with``).
            per_sample: True: the mean absolute per-sample gradient (the paper's definition). False: the absolute
                gradient of each batch's mean output norm, averaged over the batches of ``importance_batch_size``
                (HW14's sample code; cancellations inside a batch make it smaller and sparser).
            estimate_on: ``current``: each task's importance is estimated once, on its own data, when it ends.
                ``seen``: at every task's end the importances of all tasks so far are re-estimated at the current
                weights and replace the penalty (their mean or sum, per ``accumulate``; HW14's 2021 sample code).
                Needs the old tasks' data: ``importance_samples`` images of each (set it; None means all).
        """
        super().__init__(num_classes, input_shape, backbone, hidden, batch_norm, dropout, penalty_weight)
        check_importance_args(type(self).__name__, importance_samples, importance_batch_size)
        check_accumulate(type(self).__name__, accumulate, estimate_on)
        self.save_hyperparameters()

    def consolidate(self, task: int) -> None:
        hp = self.hparams

        def importance_of(k: int) -> Params:
            batches = self.importance_batches(k, hp.importance_samples, hp.importance_batch_size)
            return mas_importance(self.net, batches, self.all_reduce(), hp.vectorize, per_sample=hp.per_sample)

        self.consolidate_estimated(task, importance_of, hp.accumulate, hp.estimate_on)
