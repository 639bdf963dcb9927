"""ANIL — lecture 15 / HW15: almost no inner loop (Raghu, Raghu, Bengio & Vinyals 2020, arXiv 1909.09157).

MAML where the inner loop adapts only the linear head; the conv-4 body is shared by all tasks and learned only in
the outer loop. The body runs once per support and query set, and the inner loop is a few steps of logistic
regression on the body's features, so a meta-step is much cheaper than MAML's, with similar accuracy (the paper's
point: MAML's success is mostly feature reuse). The meta-gradient still flows into the body through the adapted
head (second order unless ``first_order: true``). The algorithm is ``MAML.meta_loss`` in :mod:`.maml`; this class
only changes the default of ``adapt``.

Run: ``python cli.py fit --config configs/anil.yaml``
"""

from __future__ import annotations

from typing import Literal

from lecture_modules.meta_learning.maml import MAML

__all__ = ["ANIL"]


class ANIL(MAML):
    """ANIL: MAML whose inner loop adapts only the classifier head (arXiv 1909.09157, lecture 15)."""

    def __init__(self, adapt: Literal["all", "head"] = "head", **kwargs) -> None:
        """
        Args:
            adapt: which parameters the inner loop adapts (``head`` here); every other argument is MAML's.
        """
        super().__init__(adapt=adapt, **kwargs)
