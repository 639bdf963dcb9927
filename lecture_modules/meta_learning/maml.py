"""MAML — lecture 15 / HW15: model-agnostic meta-learning (Finn, Abbeel & Levine 2017, arXiv 1703.03400).

Learn an initialisation theta such that a few SGD steps on a new task's support set give good query accuracy:
``theta' = theta - alpha * grad L_support(theta)`` (inner loop), then update theta with the gradient of
``L_query(theta')`` averaged over a meta-batch of tasks (outer loop, the YAML ``optimizer:``). The meta-gradient
is the true second-order one: it differentiates through the inner gradients (Hessian-vector products), with
``torch.func.grad`` / ``functional_call`` (``vectorize: true`` maps the tasks with ``torch.func.vmap``).
``first_order: true`` drops the second-order term (see ``fomaml``); ``adapt: head`` adapts only the head (see
``anil``).

Run: ``python cli.py fit --config configs/maml.yaml`` (then ``test`` reports accuracy ± 95% CI over 600 tasks).
"""

from __future__ import annotations

from typing import Literal

from lecture_modules.meta_learning.common import MetaLearningModule

__all__ = ["MAML"]


class MAML(MetaLearningModule):
    """MAML with second-order meta-gradients on N-way K-shot tasks (arXiv 1703.03400, lecture 15)."""

    def __init__(
        self,
        num_classes: int = 5,
        input_shape: tuple[int, int, int] = (1, 28, 28),
        hidden: int = 64,
        blocks: int = 4,
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
            hidden: filters of each conv block (64 in the paper).
            blocks: conv blocks (4 in the paper: conv-4), each halving the image size.
            inner_lr: inner-loop (task adaptation) step size alpha; the meta step size is ``optimizer.init_args.lr``.
            inner_steps: inner-loop SGD steps during meta-training.
            eval_inner_steps: inner-loop SGD steps on the support set at validation and test time.
            first_order: treat the inner gradients as constants (first-order MAML).
            adapt: ``all`` parameters in the inner loop (MAML), or only the ``head`` (ANIL).
            vectorize: run the tasks of a meta-batch as one batched computation (``torch.func.vmap``, per-task
                weights become grouped convolutions); false loops over tasks. Same result; the loop is faster on
                CPU (see benchmarks/meta_learning.py), measure on your GPU.
        """
        super().__init__(
            num_classes,
            input_shape,
            hidden,
            blocks,
            inner_lr,
            inner_steps,
            eval_inner_steps,
            first_order,
            adapt,
            vectorize,
        )
