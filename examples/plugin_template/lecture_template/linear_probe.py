"""Linear probe — the smallest complete lecture: softmax regression on raw pixels (lecture 1).

A copy-and-rename starting point for a new lecture: typed ``__init__`` with validation, metrics named
``stage/metric``, loss terms through ``combine_losses`` (logging and the non-finite check come with it).

Run: ``python cli.py fit --model LinearProbe --optimizer SGD --optimizer.lr 0.1``
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from lecture_modules import LectureModule

__all__ = ["LinearProbe"]


class LinearProbe(LectureModule):
    """Softmax regression on flattened pixels (template plugin)."""

    def __init__(
        self, num_classes: int = 10, input_shape: tuple[int, int, int] = (1, 8, 8), weight_decay_l2: float = 0.0
    ) -> None:
        """
        Args:
            num_classes: number of classes (linked from the DataModule by the CLI).
            input_shape: (channels, height, width) (linked from the DataModule by the CLI).
            weight_decay_l2: explicit L2 penalty on the weights, added as its own loss term.
        """
        super().__init__()
        if weight_decay_l2 < 0:
            raise ValueError(f"LinearProbe.weight_decay_l2 must be >= 0, got {weight_decay_l2}")
        self.save_hyperparameters()
        self.linear = nn.Linear(int(torch.tensor(input_shape).prod()), num_classes)
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.flatten(1))  # (B, C*H*W) -> (B, num_classes)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        x, y = batch
        terms = {"ce": F.cross_entropy(self(x), y)}
        if self.hparams.weight_decay_l2 > 0:
            terms["l2"] = self.hparams.weight_decay_l2 * self.linear.weight.square().sum()
        return self.combine_losses(terms)

    def validation_step(self, batch, batch_idx: int) -> None:
        x, y = batch
        self.val_acc.update(self(x), y)
        self.log("val/acc", self.val_acc, on_epoch=True, prog_bar=True)
