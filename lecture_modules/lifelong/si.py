"""Synaptic intelligence — lecture 14 / HW14 (Zenke et al. 2017, arXiv 1703.04200).

While a task trains, every optimiser step adds ``-g * delta`` (the gradient the optimiser used times the
update it made) to each parameter's path integral ``omega``; at the task's end the importance is
``omega / (Delta^2 + xi)`` with ``Delta`` the parameter's total change over the task
(:class:`~lecture_modules.lifelong.importance.PathIntegral`), accumulated over tasks and anchored at the latest
task's weights. Gradients are already averaged over processes under DDP, so every process holds the same path.

Run: ``python cli.py fit --config configs/si.yaml``
"""

from __future__ import annotations

from typing import Literal

from lecture_modules.lifelong.base import Regularised
from lecture_modules.lifelong.importance import PathIntegral

__all__ = ["SI"]


class SI(Regularised):
    """Synaptic intelligence: importance from each parameter's contribution to the loss decrease (lecture 14)."""

    def __init__(
        self,
        num_classes: int = 10,
        input_shape: tuple[int, int, int] = (1, 8, 8),
        backbone: Literal["mlp", "cnn"] = "mlp",
        hidden: list[int] | None = None,
        batch_norm: bool = False,
        dropout: float = 0.0,
        penalty_weight: float = 1.0,
        xi: float = 0.001,
    ) -> None:
        """
        Args:
            num_classes: number of classes (linked from the DataModule by the CLI).
            input_shape: (channels, height, width) of one image (linked from the DataModule by the CLI).
            backbone: ``mlp`` (HW14) or ``cnn``.
            hidden: layer widths (default [1024, 512, 256] for the MLP, as in HW14).
            batch_norm: batch normalisation after each hidden layer.
            dropout: dropout probability after each hidden layer.
            penalty_weight: lambda (the paper's c) of the penalty ``lambda * sum Omega (theta - theta*)^2``
                (HW14: 1).
            xi: damping of ``omega / (Delta^2 + xi)`` for parameters that barely moved.
        """
        super().__init__(num_classes, input_shape, backbone, hidden, batch_norm, dropout, penalty_weight)
        if xi <= 0:
            raise ValueError(f"SI.xi must be > 0, got {xi}")
        self.save_hyperparameters()
        self.tracker = PathIntegral()

    def consolidate(self, task: int) -> None:
        self.anchor_with(self.tracker.importance(self.named_params(), self.hparams.xi))
