"""HW14's importance protocols for MAS and SCP, kept for the MAS-vs-HW14 investigation only.

HW14's sample code accumulates the importances of successive tasks in two ways the lecture's MAS and SCP do not
offer, because they exist only to replicate that code's figures (``benchmarks/investigations/``):

* ``accumulate: hw14`` — the later (rotated-MNIST) sample code keeps a list of every task's running total and makes
  the next total the sum of that list plus the new importance: ``C_k = S_(k-1) + m_k`` with ``S_k = S_(k-1) + C_k``,
  so task k's importance counts ``2^(j-k-1)`` times in the penalty after task j > k (after 4 tasks:
  ``4 m_1 + 2 m_2 + m_3 + m_4``; the plain sum gives ``m_1 + m_2 + m_3 + m_4``).
* ``estimate_on: seen`` — the 2021 sample code re-estimates, at every task's end, the importances of every task seen
  so far at the current weights; their mean (``accumulate: mean``) or sum (``sum``) replaces the penalty. It needs
  the old tasks' data (``importance_samples`` images of each), which a memory-free regulariser does not keep.

With ``accumulate`` ``sum`` or ``mean`` and ``estimate_on: current`` the classes below are the lecture's MAS and SCP,
step for step. Use them through ``class_path`` (``--model benchmarks.investigations.hw14_protocol.MASHW14``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal

from lecture_modules.lifelong.continual import upgrade_net_args
from lecture_modules.lifelong.importance import Params, add_params
from lecture_modules.lifelong.mas import MAS
from lecture_modules.lifelong.scp import SCP

__all__ = ["MASHW14", "SCPHW14"]

Protocol = Literal["sum", "mean", "hw14"]
EstimateOn = Literal["current", "seen"]


def check_protocol(owner: str, accumulate: str, estimate_on: str) -> None:
    """Validate ``owner``'s ``accumulate`` and ``estimate_on`` settings."""
    if accumulate not in ("sum", "mean", "hw14"):
        raise ValueError(f"{owner}.accumulate must be 'sum', 'mean' or 'hw14', got {accumulate!r}")
    if estimate_on not in ("current", "seen"):
        raise ValueError(f"{owner}.estimate_on must be 'current' or 'seen', got {estimate_on!r}")
    if estimate_on == "seen" and accumulate == "hw14":
        raise ValueError(
            f"{owner}: accumulate 'hw14' compounds one estimate per task; with estimate_on 'seen' every task is "
            "re-estimated at each boundary, so use accumulate 'mean' (HW14's 2021 code) or 'sum'"
        )


class HW14Protocol:
    """The two protocols, for a regulariser whose :meth:`boundary_estimator` gives task importances (mixin)."""

    @classmethod
    def upgrade_hparams(cls, hparams: Mapping[str, Any]) -> dict[str, Any]:
        """Only the network arguments changed: these classes still take ``estimate_on`` and ``accumulate: hw14``."""
        return upgrade_net_args(hparams)

    def boundary_estimator(self, task: int) -> Callable[[int], Params]:
        """At ``task``'s end: a function of ``k`` giving task k's importance at the current weights."""
        raise NotImplementedError

    def consolidate(self, task: int) -> None:
        """At ``task``'s end: HW14's protocol, or the lecture method's own with ``sum`` / ``mean`` and ``current``."""
        hp, estimate = self.hparams, self.boundary_estimator(task)
        if hp.estimate_on == "seen":  # HW14 2021: every seen task re-estimated now, their mean or sum
            total: Params | None = None
            for k in range(task + 1):
                total = add_params(total, estimate(k))
            if hp.accumulate == "mean":
                total = {n: v / (task + 1) for n, v in total.items()}
            self.anchor_one_pair(total)
        elif hp.accumulate == "hw14":  # C_k = S_(k-1) + m_k, S_k = S_(k-1) + C_k (importance_sum holds S)
            total = add_params(self.importance_sum, estimate(task))
            self.importance_sum = add_params(self.importance_sum, total)
            self.anchor_one_pair(total)
        else:
            super().consolidate(task)


class MASHW14(HW14Protocol, MAS):
    """MAS with HW14's protocols (``accumulate: hw14``, ``estimate_on: seen``); for the investigation only."""

    def __init__(self, accumulate: Protocol = "sum", estimate_on: EstimateOn = "current", **kwargs: Any) -> None:
        """
        Args:
            accumulate: ``sum`` and ``mean`` as in MAS, or ``hw14``: the compounding sum of HW14's later sample code.
            estimate_on: ``current`` (MAS's), or ``seen``: every seen task re-estimated at each task's end.
            **kwargs: MAS's other arguments.
        """
        check_protocol(type(self).__name__, accumulate, estimate_on)
        super().__init__(accumulate="sum" if accumulate == "hw14" else accumulate, **kwargs)

    def boundary_estimator(self, task: int) -> Callable[[int], Params]:
        return self.estimate_importance


class SCPHW14(HW14Protocol, SCP):
    """SCP with HW14's protocols (``accumulate: hw14``, ``estimate_on: seen``); for the investigation only."""

    def __init__(self, accumulate: Protocol = "sum", estimate_on: EstimateOn = "current", **kwargs: Any) -> None:
        """
        Args:
            accumulate: ``sum`` and ``mean`` as in SCP, or ``hw14``: the compounding sum of HW14's later sample code.
            estimate_on: ``current`` (SCP's), or ``seen``: every seen task re-estimated at each task's end.
            **kwargs: SCP's other arguments.
        """
        check_protocol(type(self).__name__, accumulate, estimate_on)
        super().__init__(accumulate="sum" if accumulate == "hw14" else accumulate, **kwargs)

    def boundary_estimator(self, task: int) -> Callable[[int], Params]:
        directions = self.slice_generator(task)  # one generator for every seen task's estimate at this boundary
        return lambda k: self.estimate_importance(k, directions)
