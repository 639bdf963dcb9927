"""Reptile — lecture 15: a first-order meta-learner without query gradients (Nichol, Achiam & Schulman 2018,
arXiv 1803.02999).

Algorithm 2 of the paper (batched Reptile), as :meth:`Reptile.meta_loss` performs it:

1. A meta-batch of tasks tau_i (the DataModule); Reptile trains on each task's support and query images together.
2. Inner loop, per task: ``phi_i = U^k_tau_i(theta)``, ``k = inner_steps`` SGD steps with step size ``inner_lr``
   from theta; no gradient flows back through them.
3. Outer step: ``theta <- theta + epsilon * (mean_i phi_i - theta)``. The meta-gradient is ``theta - mean(phi)``,
   written as the gradient of ``0.5 * ||theta - mean(phi)||^2``, and the YAML ``optimizer:`` applies it (plain SGD
   with lr epsilon is exactly the paper's update), so Lightning's optimiser loop, gradient clipping and DDP's
   gradient averaging apply unchanged.

Evaluation (in :mod:`.shell`) adapts on the support set and scores the query set, as for MAML.

Run: ``python cli.py fit --config configs/reptile.yaml``
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from lecture_modules.meta_learning.core import ConvNetSpec, Params, inner_loop, over_tasks
from lecture_modules.meta_learning.shell import Batch, MetaLearningModule

__all__ = ["Reptile", "reptile_task"]


def reptile_task(
    model: nn.Module,
    params: Params,
    x_support: torch.Tensor,
    y_support: torch.Tensor,
    x_query: torch.Tensor,
    y_query: torch.Tensor,
    steps: int,
    lr: float,
) -> Params:
    """Step 2 for one task: ``steps`` SGD steps on all the task's images (support and query together); returns the
    adapted weights phi, detached (Reptile's meta-gradient is ``theta - mean(phi)``, no backpropagation)."""
    x = torch.cat([x_support, x_query])  # (N*(K+Q), C, H, W)
    y = torch.cat([y_support, y_query])  # (N*(K+Q),)
    fast = inner_loop(lambda p: F.cross_entropy(functional_call(model, p, (x,)), y), params, steps, lr, True)
    return {k: v.detach() for k, v in fast.items()}


class Reptile(MetaLearningModule):
    """Reptile: move the initialisation towards task-adapted weights (arXiv 1803.02999, lecture 15)."""

    def __init__(
        self,
        num_classes: int = 5,
        input_shape: tuple[int, int, int] = (1, 28, 28),
        net: ConvNetSpec = ConvNetSpec(),
        inner_lr: float = 0.1,
        inner_steps: int = 5,
        eval_inner_steps: int = 10,
        vectorize: bool = False,
    ) -> None:
        """
        Args:
            num_classes: the ways N of every task (linked from ``data.ways`` by the CLI).
            input_shape: (channels, height, width) of one image (linked from the DataModule by the CLI).
            net: the network, conv-4: filters per block (``hidden``) and ``blocks``, each halving the image size.
            inner_lr: SGD step size of the inner loop (training and evaluation).
            inner_steps: inner SGD steps per task during meta-training (on support and query images together).
            eval_inner_steps: inner SGD steps on the support set at validation and test time.
            vectorize: run the tasks of a meta-batch as one batched computation (``torch.func.vmap``).
        """
        super().__init__(
            num_classes=num_classes,
            input_shape=input_shape,
            net=net,
            inner_lr=inner_lr,
            inner_steps=inner_steps,
            eval_inner_steps=eval_inner_steps,
            vectorize=vectorize,
        )

    @classmethod
    def upgrade_hparams(cls, hparams: Mapping[str, Any]) -> dict[str, Any]:
        """As the shell's; checkpoints written before ``net`` existed also stored MAML's ``first_order`` and
        ``adapt`` (always true and ``all`` for Reptile), which Reptile does not take."""
        out = super().upgrade_hparams(hparams)
        out.pop("first_order", None)
        out.pop("adapt", None)
        return out

    def meta_loss(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """Steps 2-3 on a meta-batch (step 1): (scalar with gradient ``theta - mean(phi)``, that scalar, metrics)."""
        theta = self.params()
        task = partial(reptile_task, self.net, steps=self.hparams.inner_steps, lr=self.hparams.inner_lr)
        detached = {k: v.detach() for k, v in theta.items()}
        phi = over_tasks(task, detached, batch, self.hparams.vectorize)  # step 2: name -> (T, *theta[name].shape)
        target = {k: v.mean(dim=0) for k, v in phi.items()}  # mean_i phi_i, shaped as theta
        surrogate = sum(0.5 * (theta[k] - target[k]).pow(2).sum() for k in theta)  # step 3: grad = theta - mean(phi)
        with torch.no_grad():  # how far the mean adapted weights moved, relative to theta
            norm = torch.sqrt(sum((theta[k] - target[k]).pow(2).sum() for k in theta))
            relative = norm / torch.sqrt(sum(p.pow(2).sum() for p in theta.values()))
        return surrogate, surrogate, {"train/meta_step": relative}  # ||theta - mean(phi)|| / ||theta||
