"""Riemannian walk — lecture 14 / HW14 (Chaudhry et al. 2018, arXiv 1801.10112).

EWC++ plus a path score. For every task ``k`` of the stream, in order:

1. Train on task ``k`` with ``CE + lambda * sum_i (F_i + S_i) (theta_i - theta*_i)^2`` (the penalty of
   :class:`~lecture_modules.lifelong.penalty.Regularised`).
2. Along the way, after every optimiser step (:class:`~lecture_modules.lifelong.importance.RiemannianWalk`):
   ``F <- alpha * F + (1 - alpha) * g^2``, an online (empirical) Fisher (EWC++), and the task's score
   ``s += -g * delta / (1/2 F delta^2 + eps)``, the loss decrease per unit of KL-distance moved.
3. When task ``k`` ends (:meth:`RWalk.consolidate`): ``S <- (S + max(s, 0)) / 2``, and the one pair
   ``(theta*_k, F + S)`` replaces the earlier one (``F`` and ``S`` each divided by its maximum with ``normalize``).

Run: ``python cli.py fit --config configs/rwalk.yaml``
"""

from __future__ import annotations

from typing import Any

import torch

from lecture_modules.base import bad_setting
from lecture_modules.lifelong.continual import HW14_MLP
from lecture_modules.lifelong.importance import Params, RiemannianWalk
from lecture_modules.lifelong.penalty import Regularised
from lecture_modules.nets import NetSpec

__all__ = ["RWalk"]


class RWalk(Regularised):
    """Riemannian walk: online Fisher plus path-integral score (lecture 14)."""

    def __init__(
        self,
        num_classes: int = 10,
        input_shape: tuple[int, int, int] = (1, 8, 8),
        net: NetSpec = HW14_MLP,
        penalty_weight: float = 100.0,
        alpha: float = 0.9,
        eps: float = 0.1,
        normalize: bool = False,
    ) -> None:
        """
        Args:
            num_classes: number of classes (linked from the DataModule by the CLI).
            input_shape: (channels, height, width) of one image (linked from the DataModule by the CLI).
            net: the network (default HW14's 1024-512-256 ReLU MLP).
            penalty_weight: lambda of the penalty ``lambda * sum (F + S) (theta - theta*)^2`` (HW14: 100).
            alpha: weight of the old value in the moving average of the squared gradients.
            eps: damping of the score's denominator ``1/2 F delta^2 + eps``. With tiny steps the quadratic term is
                far below any usual eps, so the score is about ``-g delta / eps``: eps sets its scale (0.1 puts
                it on SI's scale, where HW14's lambda of 100 fits; 1e-8 makes it 10^7 times larger).
            normalize: divide F and S each by its maximum over all parameters before adding them (then lambda
                must be far smaller than HW14's 100: the paper's experiments used 0.1).
        """
        super().__init__(num_classes=num_classes, input_shape=input_shape, net=net, penalty_weight=penalty_weight)
        if not 0.0 <= alpha < 1.0:
            raise bad_setting("alpha", alpha, "in [0, 1)")
        if eps <= 0:
            raise bad_setting("eps", eps, "> 0")
        self.tracker = RiemannianWalk(alpha, eps)
        self.score: Params = {}  # averaged over the tasks so far

    def consolidate(self, task: int) -> None:
        """Step 3, once when ``task`` ends: average the score, anchor ``F + S`` at ``theta*_k``."""
        new = {n: s.clamp_min(0) for n, s in self.tracker.score.items()}
        self.score = new if not self.score else {n: 0.5 * (self.score[n] + new[n]) for n in new}
        fisher = {n: self.tracker.fisher.get(n, torch.zeros_like(s)) for n, s in self.score.items()}
        if self.hparams.normalize:
            fisher, score = _by_max(fisher), _by_max(self.score)
        else:
            score = self.score
        self.anchor_one_pair({n: fisher[n] + score[n] for n in score})

    def method_state(self) -> dict[str, Any]:
        return {**super().method_state(), "score": dict(self.score)}

    def load_method_state(self, state: dict[str, Any]) -> None:
        super().load_method_state(state)
        self.score = dict(state["score"])


def _by_max(values: Params) -> Params:
    top = max(float(v.max()) for v in values.values())
    return {n: v / top for n, v in values.items()} if top > 0 else values
