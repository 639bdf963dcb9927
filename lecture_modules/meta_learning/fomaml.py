"""First-order MAML — lecture 15 / HW15 (Finn et al. 2017, arXiv 1703.03400, section 5.2).

MAML with the inner-loop gradients treated as constants: the meta-gradient is the query-loss gradient at the
adapted weights, ``grad L_query(theta')``, applied to theta. No second derivatives, so a meta-step costs about as
much as two ordinary forward/backward passes per task, at a small cost in accuracy on Omniglot.

Run: ``python cli.py fit --config configs/fomaml.yaml``
"""

from __future__ import annotations

from typing import Literal

from lecture_modules.meta_learning.maml import MAML

__all__ = ["FOMAML"]


class FOMAML(MAML):
    """First-order MAML: meta-gradient without second derivatives (arXiv 1703.03400 section 5.2, lecture 15)."""

    def __init__(
        self,
        num_classes: int = 5,
        input_shape: tuple[int, int, int] = (1, 28, 28),
        hidden: int = 64,
        blocks: int = 4,
        inner_lr: float = 0.4,
        inner_steps: int = 1,
        eval_inner_steps: int = 3,
        first_order: bool = True,
        adapt: Literal["all", "head"] = "all",
        vectorize: bool = False,
    ) -> None:
        """Arguments as for :class:`~lecture_modules.meta_learning.maml.MAML`; ``first_order`` defaults to true."""
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
