"""The regularisation penalty of EWC, SI, MAS, RWalk and SCP: ``lambda * sum_k sum_i b_ki (theta_i - theta*_ki)^2``.

:class:`Regularised` holds a list of (anchors ``theta*``, importance ``b``) pairs and adds their quadratic penalty
(:func:`~lecture_modules.lifelong.importance.quadratic_penalty`) to every training step's loss. A method decides,
when a task ends, how its new importance joins the pairs:

* :meth:`~Regularised.anchor_new_pair`: one more pair (EWC: one per task, as in the paper);
* :meth:`~Regularised.anchor_one_pair`: every pair replaced by one (online EWC, RWalk);
* :meth:`~Regularised.anchor_accumulated`: one pair whose importance is the ``sum`` (SI, MAS, SCP) or the ``mean``
  of every task's importance so far.

All of them anchor at the current weights (the closing task's). SI and RWalk also follow the optimisation path:
their ``tracker`` (:class:`~lecture_modules.lifelong.importance.PathIntegral`,
:class:`~lecture_modules.lifelong.importance.RiemannianWalk`) sees every optimiser step's gradient and update.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import torch
from torch import Tensor

from lecture_modules.base import GENERIC_NON_FINITE_HINT, bad_setting
from lecture_modules.lifelong.continual import ContinualLearning
from lecture_modules.lifelong.importance import (
    Batch,
    Params,
    PathIntegral,
    RiemannianWalk,
    add_params,
    copy_params,
    quadratic_penalty,
)

__all__ = ["Accumulate", "Regularised", "check_accumulate", "check_importance_args", "upgrade_estimated"]

Accumulate = Literal["sum", "mean"]


class Regularised(ContinualLearning):
    """Quadratic penalties ``penalty_weight * sum_k sum_i b_ki (theta_i - theta*_ki)^2`` (base of EWC, SI, MAS,
    RWalk and SCP; not an entry point)."""

    def __init__(self, *, penalty_weight: float, **kwargs: Any) -> None:
        """
        Args:
            penalty_weight: lambda of the penalty (>= 0).
            **kwargs: the shared arguments (``num_classes``, ``input_shape``, ``net``) of :class:`ContinualLearning`.
        """
        super().__init__(**kwargs)
        if penalty_weight < 0:
            raise bad_setting("penalty_weight", penalty_weight, ">= 0")
        self.penalty_weight = penalty_weight
        self.penalties: list[tuple[Params, Params]] = []  # (anchors theta*, importance b) pairs
        self.importance_sum: Params | None = None  # the running sum behind a mean penalty (accumulate="mean")
        self.tracker: PathIntegral | RiemannianWalk | None = None  # SI / RWalk: statistics along the path

    # ------------------------------------------------------------------ the penalty
    def extra_losses(self, batch: Batch) -> dict[str, Tensor]:
        if not self.penalties:
            return {}
        params = dict(self.named_params())
        total = torch.stack([quadratic_penalty(params, a, b) for a, b in self.penalties]).sum()
        return {"penalty": self.penalty_weight * total}

    def non_finite_hint(self, term: str) -> str:
        """A penalty that blows up is first the fault of its weight lambda."""
        if term != "penalty":
            return super().non_finite_hint(term)
        weight, lr = self.describe_setting("model.init_args.penalty_weight"), self.describe_setting(self.lr_setting)
        return f"lower the penalty weight {weight} or the learning rate {lr}; {GENERIC_NON_FINITE_HINT}"

    # ------------------------------------------------------------------ anchoring at a task's end
    def anchors_now(self) -> Params:
        """A copy of the current weights: the closing task's ``theta*``."""
        return copy_params(dict(self.named_params()))

    def anchor_new_pair(self, importance: Params) -> None:
        """Add the pair (current weights, ``importance``) to the earlier ones."""
        self.penalties.append((self.anchors_now(), copy_params(importance)))

    def anchor_one_pair(self, importance: Params) -> None:
        """Replace every pair by the one (current weights, ``importance``)."""
        self.penalties = [(self.anchors_now(), copy_params(importance))]

    def anchor_accumulated(self, importance: Params, accumulate: Accumulate, tasks: int) -> None:
        """One pair at the current weights whose importance is the ``sum`` or the ``mean`` (over ``tasks``, the
        tasks closed so far including this one) of every task's importance. The mean does not grow stiffer with
        every task, so a lambda tuned on a few tasks holds on a longer stream."""
        if accumulate == "mean":
            self.importance_sum = add_params(self.importance_sum, importance)
            self.anchor_one_pair({n: v / tasks for n, v in self.importance_sum.items()})
        elif self.penalties:
            [(_, earlier)] = self.penalties
            self.anchor_one_pair(add_params(earlier, importance))
        else:
            self.anchor_one_pair(importance)

    # ------------------------------------------------------------------ the path (SI, RWalk)
    # The path statistics see every optimiser step: the gradient the optimiser used and the update it made. The
    # update is recorded right after the step, before any checkpoint of that step is written.
    def begin_task(self, task: int) -> None:
        if self.tracker is not None:
            self.tracker.begin_task(self.named_params())

    def on_before_optimizer_step(self, optimizer) -> None:
        if self.tracker is not None:
            self.tracker.before_step(self.named_params())

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        super().optimizer_step(*args, **kwargs)
        if self.tracker is not None:
            self.tracker.after_step(self.named_params())

    # ------------------------------------------------------------------ checkpoint state
    def method_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {"penalties": [[dict(a), dict(b)] for a, b in self.penalties]}
        if self.importance_sum is not None:
            state["importance_sum"] = dict(self.importance_sum)
        if self.tracker is not None:
            state["tracker"] = self.tracker.state_dict()
        return state

    def load_method_state(self, state: dict[str, Any]) -> None:
        self.penalties = [(dict(a), dict(b)) for a, b in state["penalties"]]
        running = state.get("importance_sum", state.get("guard_sum"))  # guard_sum: its name before the split
        self.importance_sum = dict(running) if running is not None else None
        if self.tracker is not None:
            self.tracker.load_state_dict(state["tracker"])


def check_importance_args(samples: int | None, batch_size: int) -> None:
    """Validate the ``importance_samples`` / ``importance_batch_size`` settings."""
    if samples is not None and samples < 1:
        raise bad_setting("importance_samples", samples, ">= 1 or null (all)")
    if batch_size < 1:
        raise bad_setting("importance_batch_size", batch_size, ">= 1")


def check_accumulate(accumulate: str) -> None:
    """Validate the ``accumulate`` setting (see :meth:`Regularised.anchor_accumulated`)."""
    if accumulate not in ("sum", "mean"):
        raise bad_setting("accumulate", accumulate, "'sum' or 'mean'")


def upgrade_estimated(owner: str, hparams: Mapping[str, Any]) -> dict[str, Any]:
    """Hyper-parameters of a MAS / SCP checkpoint written before the MAS-vs-HW14 investigation's settings left the
    product: ``estimate_on: current`` is dropped (it is what the method does); ``estimate_on: seen`` and
    ``accumulate: hw14`` stop with the investigation class that still takes them."""
    out = dict(hparams)
    if out.get("estimate_on", "current") != "current" or out.get("accumulate") == "hw14":
        raise ValueError(
            f"{owner}: this checkpoint was trained with estimate_on {out.get('estimate_on')!r} and accumulate "
            f"{out.get('accumulate')!r}, settings of the MAS-vs-HW14 investigation; load it with "
            f"benchmarks.investigations.hw14_protocol.{owner}HW14"
        )
    out.pop("estimate_on", None)
    return out
