"""Classification — lectures 1-3: from regression to deep networks, optimisation tricks, and CNNs.

Image classification with an MLP or a small CNN and cross-entropy, with the knobs the lectures teach: batch
normalisation (Ioffe & Szegedy 2015, arXiv 1502.03167), dropout (Srivastava et al. 2014), weight decay, SGD with
momentum, Adam/AdamW (arXiv 1412.6980, 1711.05101) and learning-rate warm-up then decay — the optimiser and
schedule come from the YAML ``optimizer:`` / ``lr_scheduler:`` sections. Embedded default data: scikit-learn's
handwritten digits; the same DataModule reads MNIST IDX files, image folders and Hugging Face datasets.

Run: ``python cli.py fit --config configs/classification.yaml``
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix

from lecture_modules.base import LectureModule, bad_setting, check_shapes
from lecture_modules.figures import ValidationConfusion, confusion_figure  # confusion_figure re-exported
from lecture_modules.nets import NetSpec, fold_legacy_net_args

__all__ = ["Classification", "confusion_figure"]


class Classification(ValidationConfusion, LectureModule):
    """Image classification with an MLP or CNN backbone and cross-entropy (lectures 1-3)."""

    def __init__(
        self,
        num_classes: int = 10,
        input_shape: tuple[int, int, int] = (1, 8, 8),
        net: NetSpec = NetSpec(kind="cnn", batch_norm=True, dropout=0.1),
        label_smoothing: float = 0.0,
    ) -> None:
        """
        Args:
            num_classes: number of classes (linked from the DataModule by the CLI).
            input_shape: (channels, height, width) of one image (linked from the DataModule by the CLI).
            net: the network: an MLP or a CNN with its widths, batch norm and dropout.
            label_smoothing: cross-entropy label smoothing in [0, 1).
        """
        super().__init__()
        net = NetSpec.of(net, owner="net")
        check_shapes(num_classes, input_shape)
        if not 0.0 <= label_smoothing < 1.0:
            raise bad_setting("label_smoothing", label_smoothing, "in [0, 1)")
        self.save_hyperparameters(ignore=["net"])
        self.hparams["net"] = net.as_dict()  # plain data: the checkpoint stays weights_only
        self.net = net.build(input_shape, num_classes)
        self.example_input_array = torch.zeros(2, *input_shape)
        self.train_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_loss, self.test_loss = MeanMetric(), MeanMetric()
        self.val_confmat = MulticlassConfusionMatrix(num_classes)

    @classmethod
    def upgrade_hparams(cls, hparams: dict[str, Any]) -> dict[str, Any]:
        """Checkpoints written before ``net`` existed stored ``backbone``, ``hidden``, ``batch_norm``, ``dropout``."""
        return fold_legacy_net_args(hparams)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # (B, C, H, W) -> (B, num_classes)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        logits = self(x)
        loss = self.combine_losses({"ce": F.cross_entropy(logits, y, label_smoothing=self.hparams.label_smoothing)})
        self.train_acc.update(logits.detach(), y)  # accumulate only; the epoch value is computed once
        self.log("train/acc", self.train_acc, on_step=False, on_epoch=True)
        return loss

    def _evaluate(self, batch, stage: str) -> None:
        x, y = batch
        logits = self(x)
        self.log_accuracy_and_loss(stage, logits, y)
        if stage == "val":
            self.val_confmat.update(logits, y)

    def validation_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def predict_step(self, batch, batch_idx: int) -> torch.Tensor:
        return self(batch[0]).argmax(dim=-1)
