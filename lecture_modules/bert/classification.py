"""BERT sentence classification — lecture 7 (self-supervised learning, BERT; Devlin et al. 2019, arXiv 1810.04805).

A pre-trained encoder reads ``[CLS] a [SEP]`` (or a GLUE sentence pair ``[CLS] a [SEP] b [SEP]``) and a linear
head on the [CLS] vector predicts the label; everything is fine-tuned with AdamW and a linear warm-up/decay.

Run: ``python cli.py fit --config configs/bert_classification.yaml``
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix

from lecture_modules.base import bad_setting
from lecture_modules.bert.common import BertFineTuning

__all__ = ["BertClassification"]


class BertClassification(BertFineTuning):
    """BERT sequence classification: a linear head on [CLS] for sentences or sentence pairs (lecture 7)."""

    task = "classification"

    def __init__(self, num_classes: int = 2, **kwargs: Any) -> None:
        """
        Args:
            num_classes: number of labels (linked from the DataModule by the CLI).
            **kwargs: the fine-tuning settings shared with :class:`BertQA` (:class:`BertFineTuning`: the model,
                AdamW, warm-up, freezing).
        """
        if num_classes < 2:
            raise bad_setting("num_classes", num_classes, ">= 2 (the CLI links it from the data's labels)")
        super().__init__(**kwargs)
        self.build_backbone(num_labels=num_classes)
        self.train_acc, self.val_acc, self.test_acc = (MulticlassAccuracy(num_classes) for _ in range(3))
        self.val_loss, self.test_loss = MeanMetric(), MeanMetric()
        self.val_confmat = MulticlassConfusionMatrix(num_classes)
        self.last_confusion: torch.Tensor | None = None

    def forward(self, batch: dict[str, Any]) -> torch.Tensor:
        return self.model(**self.model_inputs(batch)).logits  # (B, num_classes)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        logits = self(batch)
        loss = self.combine_losses({"ce": F.cross_entropy(logits.float(), batch["labels"])})
        self.train_acc.update(logits.detach(), batch["labels"])
        self.log("train/acc", self.train_acc, on_step=False, on_epoch=True)
        return loss

    def _evaluate(self, batch: dict[str, Any], stage: str) -> None:
        logits = self(batch).float()
        self.log_accuracy_and_loss(stage, logits, batch["labels"])
        if stage == "val":
            self.val_confmat.update(logits, batch["labels"])

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        return self(batch).argmax(dim=-1)

    def on_validation_epoch_end(self) -> None:
        self.last_confusion = self.val_confmat.compute().cpu()  # synced across ranks; plotted when fit ends
        self.val_confmat.reset()

    def on_fit_end(self) -> None:
        if self.last_confusion is not None and self.trainer.is_global_zero:
            import matplotlib

            matplotlib.use("Agg")
            figure, _ = self.val_confmat.plot(self.last_confusion)  # true class per row, predicted per column
            self.log_figure("val/confusion_matrix", figure)
