"""Sequence classification — lecture 4 / HW4 (speaker identification): encode frames, pool, classify.

For a batch of frame sequences x (B, T, F) with a real-frame mask, :meth:`SequenceClassifier.training_step` does:

1. Encode: h = encoder(x) (B, T, d): a (bidirectional) RNN / LSTM / GRU, a Transformer encoder (Vaswani et al.,
   arXiv 1706.03762) or a Conformer (Gulati et al., arXiv 2005.08100), per ``net.kind``.
2. Pool over real frames: the mean, or self-attention pooling (arXiv 2008.01077), to one vector (B, d).
3. Classify: a softmax layer, or additive-margin softmax (Wang et al., arXiv 1801.05599: the margin m is
   subtracted from the true class's cosine in training only); cross-entropy; one optimiser step.

The DataModule trains on random fixed-length segments (HW4's 128 frames) and evaluates whole sequences, padded and
masked. Metrics ``train|val|test/loss`` and ``/acc``; a validation confusion matrix is plotted when fitting ends.
``predict`` on HW4's ``testdata.json`` writes the homework's submission CSV (``Id,Category``: feature path, speaker
name) as ``predictions.csv`` in the run folder, never over an earlier one.

Run: ``python cli.py fit --config configs/speaker_transformer.yaml`` (``configs/speaker_conformer.yaml``)
"""

from __future__ import annotations

import csv
from pathlib import Path

import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_info
from torch import nn
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix

from lecture_modules.base import LectureModule, bad_setting, free_name
from lecture_modules.figures import ValidationConfusion
from lecture_modules.sequence.core import gather_rows
from lecture_modules.sequence.encoders import AMSoftmaxHead, AttentionPooling, EncoderSpec, SequenceEncoder, masked_mean

__all__ = ["SequenceClassifier"]


class SequenceClassifier(ValidationConfusion, LectureModule):
    """Sequence classification (HW4): RNN / Transformer / Conformer encoder, mean or attention pooling, (AM-)softmax."""

    def __init__(
        self,
        num_classes: int = 6,
        input_shape: tuple[int, ...] = (16,),
        net: EncoderSpec = EncoderSpec(),
        pooling: str = "attention",
        head: str = "softmax",
        margin: float = 0.35,
        scale: float = 30.0,
    ) -> None:
        """
        Args:
            num_classes: number of classes (linked from the DataModule by the CLI).
            input_shape: (F,) features per frame (linked from the DataModule by the CLI).
            net: the encoder: kind ('rnn', 'lstm', 'gru', 'transformer', 'conformer') and sizes.
            pooling: 'mean' or 'attention' (self-attention pooling).
            head: 'softmax' or 'amsoftmax' (additive margin).
            margin: AM-softmax's margin m (the paper: 0.35).
            scale: AM-softmax's scale s (the paper: 30).
        """
        super().__init__()
        net = EncoderSpec.of(net, owner="net")
        if num_classes < 2 or len(input_shape) != 1:
            raise bad_setting("num_classes/input_shape", (num_classes, input_shape),
                              ">= 2 classes and (F,) frames (the CLI links both from the data)")  # fmt: skip
        if pooling not in ("mean", "attention"):
            raise bad_setting("pooling", pooling, "'mean' or 'attention'")
        if head not in ("softmax", "amsoftmax"):
            raise bad_setting("head", head, "'softmax' or 'amsoftmax'")
        if not 0.0 <= margin < 1.0 or scale <= 0:
            raise bad_setting("margin/scale", (margin, scale), "margin in [0, 1) and scale > 0")
        self.save_hyperparameters(ignore=["net"])
        self.hparams["net"] = net.as_dict()  # plain data: the checkpoint stays weights_only
        self.encoder = SequenceEncoder(net, input_shape[0])
        self.pool = AttentionPooling(net.d_model) if pooling == "attention" else None
        self.head = (AMSoftmaxHead(net.d_model, num_classes, margin, scale) if head == "amsoftmax"
                     else nn.Linear(net.d_model, num_classes))  # fmt: skip
        self.train_acc, self.val_acc, self.test_acc = (MulticlassAccuracy(num_classes, average="micro") for _ in "123")
        self.val_loss, self.test_loss = MeanMetric(), MeanMetric()
        self.val_confmat = MulticlassConfusionMatrix(num_classes)

    def embed(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Steps 1-2: frames (B, T, F) -> one vector per sequence (B, d)."""
        h = self.encoder(x, mask)  # step 1: (B, T, d)
        return self.pool(h, mask)[0] if self.pool is not None else masked_mean(h, mask)  # step 2: (B, d)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        z = self.embed(x, mask)
        return self.head(z, labels) if isinstance(self.head, AMSoftmaxHead) else self.head(z)  # step 3: (B, K)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self(x, torch.ones(x.shape[:2], dtype=torch.bool, device=x.device))

    # ------------------------------------------------------------------ the algorithm
    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        logits = self(batch["x"], batch["mask"], batch["y"])  # steps 1-3 (the margin applies in training)
        loss = self.combine_losses({"ce": F.cross_entropy(logits, batch["y"])})
        self.train_acc.update(logits.detach(), batch["y"])
        self.log("train/acc", self.train_acc, on_step=False, on_epoch=True)
        return loss

    def _evaluate(self, batch, stage: str) -> None:
        logits = self(batch["x"], batch["mask"])  # whole sequences, no margin
        self.log_accuracy_and_loss(stage, logits, batch["y"])
        if stage == "val":
            self.val_confmat.update(logits, batch["y"])

    def validation_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, "test")

    # ------------------------------------------------------------------ HW4's submission
    def on_predict_epoch_start(self) -> None:
        self._predictions: list[tuple[int, int]] = []
        self.predictions_path: Path | None = None

    def predict_step(self, batch, batch_idx: int) -> None:
        """Whole utterances, no margin; (row, class) pairs are written once the epoch ends."""
        classes = self(batch["x"], batch["mask"]).argmax(1)
        self._predictions += [(int(r), int(c)) for r, c in zip(batch["index"], classes, strict=True)]

    def on_predict_epoch_end(self) -> None:
        """``predictions.csv`` (``Id,Category``) in the run folder, rows in ``testdata.json`` order."""
        rows = sorted(gather_rows(self._predictions))
        dm = self.trainer.datamodule
        if not self.trainer.is_global_zero or dm is None:
            return
        names = getattr(dm, "class_names", None) or [str(i) for i in range(self.hparams.num_classes)]
        folder = Path(self.trainer.default_root_dir)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{free_name(folder, 'predictions', ('.csv',))}.csv"
        with path.open("x", newline="", encoding="utf-8") as f:  # exclusive: never overwrite
            writer = csv.writer(f)
            writer.writerow(["Id", "Category"])
            writer.writerows([dm.predict_ids[row], names[c]] for row, c in rows)
        self.predictions_path = path
        rank_zero_info(f"{len(rows)} predictions written to {path}")
