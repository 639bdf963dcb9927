"""MAML — lecture 15 / HW15: model-agnostic meta-learning (Finn, Abbeel & Levine 2017, arXiv 1703.03400).

Learn an initialisation theta from which a few SGD steps on a new task's support set give good query accuracy.
Algorithm 2 of the paper (few-shot classification), as :meth:`MAML.meta_loss` performs it:

1. A meta-batch of tasks T_i, each an N-way K-shot support set D_i and a query set D'_i (the DataModule).
2. Inner loop, per task: ``inner_steps`` SGD steps on the support loss from theta,
   ``theta'_i = theta - alpha * grad_theta L_Ti(f_theta; D_i)`` with ``alpha = inner_lr``.
3. Query loss at the adapted weights: ``L_Ti(f_theta'_i; D'_i)``.
4. Meta-loss: the mean of the query losses over the tasks. The outer optimiser (the YAML ``optimizer:``, step
   size beta) updates theta with its gradient, which differentiates through step 2: the true second-order
   meta-gradient (Hessian-vector products), taken with ``torch.func.grad`` / ``functional_call``.

Switches: ``first_order: true`` treats the inner gradients of step 2 as constants (first-order MAML, section 5.2;
entry point ``fomaml``); ``adapt: head`` adapts only the linear head in step 2 (ANIL, arXiv 1909.09157; entry
point ``anil``). Evaluation (in :mod:`.shell`) repeats steps 2-3 with ``eval_inner_steps`` on held-out tasks and
reports the query accuracy with a 95% confidence interval.

Run: ``python cli.py fit --config configs/maml.yaml``, then
``python cli.py test --config configs/maml.yaml --ckpt_path <checkpoint>`` (accuracy ± 95% CI over 600 tasks).
"""

from __future__ import annotations

from functools import partial
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from lecture_modules.base import bad_setting
from lecture_modules.meta_learning.core import (
    ConvNetSpec,
    Params,
    gradient_carrier,
    inner_loop,
    meta_gradient_per_task,
    over_tasks,
    task_objective,
)
from lecture_modules.meta_learning.shell import Batch, MetaLearningModule

__all__ = ["MAML", "maml_task"]


def maml_task(
    model: nn.Module,
    params: Params,
    x_support: torch.Tensor,
    y_support: torch.Tensor,
    x_query: torch.Tensor,
    y_query: torch.Tensor,
    steps: int,
    lr: float,
    first_order: bool = False,
    head_only: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Steps 2 and 3 for one task: adapt on the support set (N*K, C, H, W), then the query loss and accuracy
    (scalars) at the adapted weights. ``params`` (theta) are never modified; the loss is a function of them.

    ``head_only`` adapts only the ``head.*`` parameters (ANIL); everything else is shared across the inner loop.
    """
    support_loss, adapted, logits_at = task_objective(model, params, x_support, y_support, head_only)
    fast = inner_loop(support_loss, adapted, steps, lr, first_order)  # step 2: theta'_i, shaped as theta
    logits = logits_at(fast, x_query)  # step 3: (N*Q, N) at the adapted weights
    return F.cross_entropy(logits, y_query), (logits.argmax(-1) == y_query).float().mean()


class MAML(MetaLearningModule):
    """MAML with second-order meta-gradients on N-way K-shot tasks (arXiv 1703.03400, lecture 15)."""

    def __init__(
        self,
        num_classes: int = 5,
        input_shape: tuple[int, int, int] = (1, 28, 28),
        net: ConvNetSpec = ConvNetSpec(),
        inner_lr: float = 0.4,
        inner_steps: int = 1,
        eval_inner_steps: int = 3,
        first_order: bool = False,
        adapt: Literal["all", "head"] = "all",
        vectorize: bool = False,
    ) -> None:
        """
        Args:
            num_classes: the ways N of every task (linked from ``data.ways`` by the CLI).
            input_shape: (channels, height, width) of one image (linked from the DataModule by the CLI).
            net: the network, conv-4: filters per block (``hidden``, 64 in the paper) and ``blocks`` (4).
            inner_lr: inner-loop (task adaptation) step size alpha; the meta step size is ``optimizer.init_args.lr``.
            inner_steps: inner-loop SGD steps during meta-training.
            eval_inner_steps: inner-loop SGD steps on the support set at validation and test time.
            first_order: treat the inner gradients as constants (first-order MAML).
            adapt: ``all`` parameters in the inner loop (MAML), or only the ``head`` (ANIL).
            vectorize: run the tasks of a meta-batch as one batched computation (``torch.func.vmap``, per-task
                weights become grouped convolutions); false loops over tasks. Same result; the loop is faster on
                CPU (see benchmarks/meta_learning.py), measure on your GPU.
        """
        if adapt not in ("all", "head"):
            raise bad_setting("adapt", adapt, "'all' or 'head'")
        super().__init__(
            num_classes=num_classes,
            input_shape=input_shape,
            net=net,
            inner_lr=inner_lr,
            inner_steps=inner_steps,
            eval_inner_steps=eval_inner_steps,
            vectorize=vectorize,
        )
        self.first_order, self.head_only = first_order, adapt == "head"

    def meta_loss(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """Steps 2-4 on a meta-batch (step 1): (scalar whose gradient is the meta-gradient, the meta-loss, metrics).

        Vectorised: one vmapped graph over all tasks, backpropagated by Lightning. Looped: each task's meta-gradient
        is taken at once and its graph freed (memory independent of the meta-batch size); the returned scalar
        carries the mean of those gradients into Lightning's backward pass (and DDP's all-reduce).
        """
        task = partial(  # steps 2-3 for one task
            maml_task,
            self.net,
            steps=self.hparams.inner_steps,
            lr=self.hparams.inner_lr,
            first_order=self.first_order,
            head_only=self.head_only,
        )
        theta = self.params()
        if self.hparams.vectorize:
            losses, accs = over_tasks(task, theta, batch, vectorize=True)  # (T,) query losses, (T,) accuracies
            meta = losses.mean()  # step 4: mean over tasks
            return meta, meta, {"train/acc": accs.mean()}
        losses, accs, grads = meta_gradient_per_task(task, theta, batch)  # (T,), (T,), d mean(losses) / d theta
        return gradient_carrier(theta, grads), losses.mean(), {"train/acc": accs.mean()}  # query acc after adapting
