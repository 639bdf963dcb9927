"""First-order MAML — lecture 15 / HW15 (Finn et al. 2017, arXiv 1703.03400, section 5.2).

MAML with the inner-loop gradients treated as constants: the meta-gradient is the query-loss gradient at the
adapted weights, ``grad L_query(theta')``, applied to theta. No second derivatives, so a meta-step costs about as
much as two ordinary forward/backward passes per task, at a small cost in accuracy on Omniglot. The algorithm is
``MAML.meta_loss`` in :mod:`.maml`; this class only changes the default of ``first_order``.

Run: ``python cli.py fit --config configs/fomaml.yaml``
"""

from __future__ import annotations

from lecture_modules.meta_learning.maml import MAML

__all__ = ["FOMAML"]


class FOMAML(MAML):
    """First-order MAML: meta-gradient without second derivatives (arXiv 1703.03400 section 5.2, lecture 15)."""

    def __init__(self, first_order: bool = True, **kwargs) -> None:
        """
        Args:
            first_order: treat the inner gradients as constants (true here); every other argument is MAML's.
        """
        super().__init__(first_order=first_order, **kwargs)
