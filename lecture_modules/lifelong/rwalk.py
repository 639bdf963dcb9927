"""Riemannian walk — lecture 14 / HW14 (Chaudhry et al. 2018, arXiv 1801.10112).

EWC++ plus a path score: during training an exponential moving average of the squared gradients tracks the
(empirical) Fisher ``F`` online, and every step adds ``-g * delta / (1/2 F delta^2 + eps)`` (the loss
decrease per unit of KL-distance moved) to each parameter's score ``s``
(:class:`~lecture_modules.lifelong.importance.RiemannianWalk`). At a task's end the score (clamped at 0) is
averaged with the earlier tasks' (``S <- (S + s) / 2``), and the importance is ``F + S`` (each divided by its
maximum when ``normalize`` is set), anchored at the latest task's weights.

Run: ``python cli.py fit --config configs/rwalk.yaml``
"""

from __future__ import annotations

from typing import Any, Literal

import torch

from lecture_modules.lifelong.base import Regularised
from lecture_modules.lifelong.importance import Params, RiemannianWalk

__all__ = ["RWalk"]


class RWalk(Regularised):
    """Riemannian walk: online Fisher plus path-integral score (lecture 14)."""

    def __init__(
        self,
        num_classes: int = 10,
        input_shape: tuple[int, int, int] = (1, 8, 8),
        backbone: Literal["mlp", "cnn"] = "mlp",
        hidden: list[int] | None = None,
        batch_norm: bool = False,
        dropout: float = 0.0,
        penalty_weight: float = 100.0,
        alpha: float = 0.9,
        eps: float = 0.1,
        normalize: bool = False,
    ) -> None:
        """
        Args:
            num_classes: number of classes (linked from the DataModule by the CLI).
            input_shape: (channels, height, width) of one image (linked from the DataModule by the CLI).
            backbone: ``mlp`` (HW14) or ``cnn``.
            hidden: layer widths (default [1024, 512, 256] for the MLP, as in HW14).
            batch_norm: batch normalisation after each hidden layer.
            dropout: dropout probability after each hidden layer.
            penalty_weight: lambda of the penalty ``lambda * sum (F + S) (theta - theta*)^2`` (HW14: 100).
            alpha: weight of the old value in the moving average of the squared gradients.
            eps: damping of the score's denominator ``1/2 F delta^2 + eps``. With tiny steps the quadratic term is
                far below any usual eps, so the score is about ``-g delta / eps``: eps sets its scale (0.1 puts
                it on SI's scale, where HW14's lambda of 100 fits; 1e-8 makes it 10^7 times larger).
            normalize: divide F and S each by its maximum over all parameters before adding them (then lambda
                must be far smaller than HW14's 100: the paper's experiments used 0.1).
        """
        super().__init__(num_classes, input_shape, backbone, hidden, batch_norm, dropout, penalty_weight)
        if not 0.0 <= alpha < 1.0 or eps <= 0:
            raise ValueError(f"RWalk needs alpha in [0, 1) and eps > 0, got {alpha}, {eps}")
        self.save_hyperparameters()
        self.tracker = RiemannianWalk(alpha, eps)
        self.score: Params = {}  # averaged over the tasks so far

    def consolidate(self, task: int) -> None:
        new = {n: s.clamp_min(0) for n, s in self.tracker.score.items()}
        self.score = new if not self.score else {n: 0.5 * (self.score[n] + new[n]) for n in new}
        fisher = {n: self.tracker.fisher.get(n, torch.zeros_like(s)) for n, s in self.score.items()}
        if self.hparams.normalize:
            fisher, score = _by_max(fisher), _by_max(self.score)
        else:
            score = self.score
        self.penalties = []
        self.anchor_with({n: fisher[n] + score[n] for n in score}, accumulate=False)

    def method_state(self) -> dict[str, Any]:
        return {**super().method_state(), "score": dict(self.score)}

    def load_method_state(self, state: dict[str, Any]) -> None:
        super().load_method_state(state)
        self.score = dict(state["score"])


def _by_max(values: Params) -> Params:
    top = max(float(v.max()) for v in values.values())
    return {n: v / top for n, v in values.items()} if top > 0 else values
