"""Joint multi-task training — lecture 14's upper bound: the network sees the data of every task together.

With the stream's ``train_on: seen`` (configs/joint.yaml), task ``k`` trains on the union of tasks 0..k, so the
accuracy matrix is comparable row by row with the continual methods and its last row is multi-task training on
all tasks; ``train_on: all`` trains on all tasks from the first epoch. Nothing is regularised: the only
difference from fine-tuning is the data.

Run: ``python cli.py fit --config configs/joint.yaml``
"""

from __future__ import annotations

from typing import Literal

from lecture_modules.lifelong.base import ContinualLearning

__all__ = ["Joint"]


class Joint(ContinualLearning):
    """Joint (multi-task) training on all tasks seen so far, the upper bound (lecture 14)."""

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

    def setup(self, stage: str) -> None:
        super().setup(stage)
        if stage == "fit" and self.stream.train_on == "current":
            raise ValueError(
                "Joint trains on several tasks at once: set data.init_args.train_on to 'seen' or 'all' "
                "(with 'current' it is plain fine-tuning)"
            )
