"""Reptile — lecture 15: a first-order meta-learner without query gradients (Nichol, Achiam & Schulman 2018,
arXiv 1803.02999).

For each task of a meta-batch, run ``inner_steps`` SGD steps from theta on the task's images to get phi; then move
theta towards the mean of the phi: the meta-gradient is ``theta - mean(phi)`` and the YAML ``optimizer:`` applies
it (plain SGD with lr epsilon is the paper's ``theta += epsilon * (mean(phi) - theta)``). Implemented as the
gradient of ``0.5 * ||theta - mean(phi)||^2``, so Lightning's optimiser loop, gradient clipping and DDP's
gradient averaging apply unchanged. Evaluation adapts on the support set and scores the query set, as for MAML.

Run: ``python cli.py fit --config configs/reptile.yaml``
"""

from __future__ import annotations

from functools import partial

import torch

from lecture_modules.meta_learning.common import Batch, MetaLearningModule
from lecture_modules.meta_learning.core import over_tasks, reptile_task

__all__ = ["Reptile"]


class Reptile(MetaLearningModule):
    """Reptile: move the initialisation towards task-adapted weights (arXiv 1803.02999, lecture 15)."""

    def __init__(
        self,
        num_classes: int = 5,
        input_shape: tuple[int, int, int] = (1, 28, 28),
        hidden: int = 64,
        blocks: int = 4,
        inner_lr: float = 0.1,
        inner_steps: int = 5,
        eval_inner_steps: int = 10,
        vectorize: bool = False,
    ) -> None:
        """
        Args:
            num_classes: the ways N of every task (linked from ``data.ways`` by the CLI).
            input_shape: (channels, height, width) of one image (linked from the DataModule by the CLI).
            hidden: filters of each conv block.
            blocks: conv blocks, each halving the image size.
            inner_lr: SGD step size of the inner loop (training and evaluation).
            inner_steps: inner SGD steps per task during meta-training (on support and query images together).
            eval_inner_steps: inner SGD steps on the support set at validation and test time.
            vectorize: run the tasks of a meta-batch as one batched computation (``torch.func.vmap``).
        """
        super().__init__(
            num_classes, input_shape, hidden, blocks, inner_lr, inner_steps, eval_inner_steps, True, "all", vectorize
        )

    def meta_loss(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        params = self.params()
        task = partial(reptile_task, self.net, steps=self.hparams.inner_steps, lr=self.hparams.inner_lr)
        adapted = over_tasks(task, {k: v.detach() for k, v in params.items()}, batch, self.hparams.vectorize)
        target = {k: v.mean(dim=0) for k, v in adapted.items()}  # mean(phi) over the tasks
        surrogate = sum(0.5 * (params[k] - target[k]).pow(2).sum() for k in params)  # grad = theta - mean(phi)
        with torch.no_grad():  # how far the mean adapted weights moved, relative to theta
            norm = torch.sqrt(sum((params[k] - target[k]).pow(2).sum() for k in params))
            relative = norm / torch.sqrt(sum(p.pow(2).sum() for p in params.values()))
        return surrogate, surrogate, {"train/meta_step": relative}  # ||theta - mean(phi)|| / ||theta||
