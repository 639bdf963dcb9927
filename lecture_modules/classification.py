"""Classification — lectures 1-3: from regression to deep networks, optimisation tricks, and CNNs.

Image classification with an MLP or a small CNN and cross-entropy, with the knobs the lectures teach: batch
normalisation (Ioffe & Szegedy 2015, arXiv 1502.03167), dropout (Srivastava et al. 2014), weight decay, SGD with
momentum, Adam/AdamW (arXiv 1412.6980, 1711.05101) and learning-rate warm-up then decay — the optimiser and
schedule come from the YAML ``optimizer:`` / ``lr_scheduler:`` sections. Embedded default data: scikit-learn's
handwritten digits; the same DataModule reads MNIST IDX files, image folders and Hugging Face datasets.

Run: ``python cli.py fit --config configs/classification.yaml``
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix

from lecture_modules.base import LectureModule

__all__ = ["Classification", "build_cnn", "build_mlp"]


def _block(layer: nn.Module, width: int, batch_norm: bool, dropout: float, dims: int) -> list[nn.Module]:
    norm = (nn.BatchNorm1d if dims == 1 else nn.BatchNorm2d)(width) if batch_norm else nn.Identity()
    drop = (nn.Dropout if dims == 1 else nn.Dropout2d)(dropout) if dropout > 0 else nn.Identity()
    return [layer, norm, nn.ReLU(inplace=True), drop]


def build_mlp(
    input_shape: tuple[int, ...], num_classes: int, hidden: list[int], batch_norm: bool, dropout: float
) -> nn.Sequential:
    """Flatten -> [Linear -> BN -> ReLU -> Dropout] * len(hidden) -> Linear."""
    layers: list[nn.Module] = [nn.Flatten()]  # (B, C*H*W)
    width = int(torch.tensor(input_shape).prod())
    for h in hidden:
        layers += _block(nn.Linear(width, h, bias=not batch_norm), h, batch_norm, dropout, dims=1)
        width = h
    layers.append(nn.Linear(width, num_classes))  # (B, num_classes)
    return nn.Sequential(*layers)


def build_cnn(
    input_shape: tuple[int, ...], num_classes: int, channels: list[int], batch_norm: bool, dropout: float
) -> nn.Sequential:
    """[Conv3x3 -> BN -> ReLU -> Dropout2d -> MaxPool2 (while the map is >= 4 px)] per width -> GAP -> Linear."""
    in_ch, size = input_shape[0], min(input_shape[1:])
    layers: list[nn.Module] = []
    for out_ch in channels:
        layers += _block(
            nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=not batch_norm), out_ch, batch_norm, dropout, dims=2
        )  # (B, out_ch, H, W)
        if size >= 4:
            layers.append(nn.MaxPool2d(2))  # (B, out_ch, H/2, W/2)
            size //= 2
        in_ch = out_ch
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(in_ch, num_classes)]  # (B, num_classes)
    return nn.Sequential(*layers)


class Classification(LectureModule):
    """Image classification with an MLP or CNN backbone and cross-entropy (lectures 1-3)."""

    def __init__(
        self,
        num_classes: int = 10,
        input_shape: tuple[int, int, int] = (1, 8, 8),
        backbone: Literal["mlp", "cnn"] = "cnn",
        hidden: list[int] | None = None,
        batch_norm: bool = True,
        dropout: float = 0.1,
        label_smoothing: float = 0.0,
    ) -> None:
        """
        Args:
            num_classes: number of classes (linked from the DataModule by the CLI).
            input_shape: (channels, height, width) of one image (linked from the DataModule by the CLI).
            backbone: ``mlp`` (fully connected) or ``cnn`` (3x3 convolutions with pooling).
            hidden: layer widths: hidden units for the MLP, channels for the CNN
                (default: [256, 128] for the MLP, [32, 64, 128] for the CNN).
            batch_norm: add batch normalisation after each hidden layer.
            dropout: dropout probability after each hidden layer (0 disables it).
            label_smoothing: cross-entropy label smoothing in [0, 1).
        """
        super().__init__()
        if backbone not in ("mlp", "cnn"):
            raise ValueError(f"Classification.backbone must be 'mlp' or 'cnn', got {backbone!r}")
        if num_classes < 2:
            raise ValueError(f"Classification.num_classes must be >= 2, got {num_classes}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"Classification.dropout must be in [0, 1), got {dropout}")
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"Classification.label_smoothing must be in [0, 1), got {label_smoothing}")
        if len(input_shape) != 3:
            raise ValueError(f"Classification.input_shape must be (C, H, W), got {input_shape}")
        hidden = hidden if hidden is not None else ([256, 128] if backbone == "mlp" else [32, 64, 128])
        if not hidden or min(hidden) < 1:
            raise ValueError(f"Classification.hidden must list positive widths, got {hidden}")
        self.save_hyperparameters()
        build = build_mlp if backbone == "mlp" else build_cnn
        self.net = build(tuple(input_shape), num_classes, hidden, batch_norm, dropout)
        self.example_input_array = torch.zeros(2, *input_shape)
        self.train_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_loss, self.test_loss = MeanMetric(), MeanMetric()
        self.val_confmat = MulticlassConfusionMatrix(num_classes)
        self.last_confusion: torch.Tensor | None = None

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

    def on_validation_epoch_end(self) -> None:
        self.last_confusion = self.val_confmat.compute().cpu()  # synced across ranks
        self.val_confmat.reset()

    def on_fit_end(self) -> None:
        if self.last_confusion is not None and self.trainer.is_global_zero:
            self.log_figure("val/confusion_matrix", confusion_figure(self.last_confusion))


def confusion_figure(matrix: torch.Tensor):
    """A labelled confusion-matrix heat map (rows: true class, columns: predicted)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 4))
    im = ax.imshow(matrix.numpy(), cmap="Blues")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("validation confusion matrix")
    fig.colorbar(im, ax=ax)
    return fig
