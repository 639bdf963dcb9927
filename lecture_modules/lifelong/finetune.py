"""Naive fine-tuning — lecture 14 / HW14's baseline: train each task in turn with nothing to prevent forgetting.

The lower bound every continual-learning method is compared with (catastrophic forgetting, McCloskey & Cohen 1989).

Run: ``python cli.py fit --config configs/finetune.yaml``
"""

from __future__ import annotations

from typing import Literal

from lecture_modules.lifelong.base import ContinualLearning

__all__ = ["FineTune"]


class FineTune(ContinualLearning):
    """Naive sequential fine-tuning, the forgetting baseline (lecture 14)."""

    def __init__(
        self,
        num_classes: int = 10,
        input_shape: tuple[int, int, int] = (1, 8, 8),
        backbone: Literal["mlp", "cnn"] = "mlp",
        hidden: list[int] | None = None,
        batch_norm: bool = False,
        dropout: float = 0.0,
    ) -> None:
        """
        Args:
            num_classes: number of classes (linked from the DataModule by the CLI).
            input_shape: (channels, height, width) of one image (linked from the DataModule by the CLI).
            backbone: ``mlp`` (HW14) or ``cnn``.
            hidden: layer widths (default [1024, 512, 256] for the MLP, as in HW14).
            batch_norm: batch normalisation after each hidden layer.
            dropout: dropout probability after each hidden layer.
        """
        super().__init__(num_classes, input_shape, backbone, hidden, batch_norm, dropout)
        self.save_hyperparameters()
