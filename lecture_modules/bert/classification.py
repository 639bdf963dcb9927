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

from lecture_modules.bert.common import BertFineTuning
from lecture_modules.classification import Classification

__all__ = ["BertClassification"]


class BertClassification(BertFineTuning):
    """BERT sequence classification: a linear head on [CLS] for sentences or sentence pairs (lecture 7)."""

    task = "classification"

    def __init__(
        self,
        model_name_or_path: str = "tiny-bert",
        num_classes: int = 2,
        learning_rate: float = 5e-5,
        weight_decay: float = 0.01,
        warmup_steps: int | float = 0.1,
        adam_epsilon: float = 1e-8,
        freeze_embeddings: bool = False,
        freeze_layers: int = 0,
    ) -> None:
        """
        Args:
            model_name_or_path: ``tiny-bert`` (random init, tests), ``minilm`` (packaged MiniLM, needs the
                ``minilm`` extra), a local model directory or a hub name (cache only when ``HF_HUB_OFFLINE``).
            num_classes: number of labels (linked from the DataModule by the CLI).
            learning_rate: AdamW peak learning rate.
            weight_decay: AdamW weight decay on weight matrices (never on biases and LayerNorm).
            warmup_steps: linear warm-up length in optimiser steps, or a fraction of all steps when below 1.
            adam_epsilon: AdamW epsilon.
            freeze_embeddings: keep the embedding layer fixed.
            freeze_layers: keep the first N encoder layers fixed.
        """
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"BertClassification.num_classes must be >= 2, got {num_classes}")
        self.save_hyperparameters()
        self._build(
            model_name_or_path, num_classes, learning_rate, weight_decay, warmup_steps, adam_epsilon,
            freeze_embeddings, freeze_layers,
        )  # fmt: skip
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

    # the image classification lecture's confusion matrix (same attributes): kept per epoch, plotted at the end
    on_validation_epoch_end = Classification.on_validation_epoch_end
    on_fit_end = Classification.on_fit_end
