"""Figures more than one lecture draws (the shared layer): a confusion matrix, and the mixin that logs it."""

from __future__ import annotations

import torch

__all__ = ["ValidationConfusion", "confusion_figure"]


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


class ValidationConfusion:
    """Mixin for a ``LectureModule`` whose validation steps update ``self.val_confmat`` (a torchmetrics
    ``MulticlassConfusionMatrix``): keeps the last validation epoch's matrix (synced across ranks) and logs its figure
    as ``val/confusion_matrix`` once when fit ends. List it before ``LectureModule`` among the bases."""

    last_confusion: torch.Tensor | None = None

    def on_validation_epoch_end(self) -> None:
        self.last_confusion = self.val_confmat.compute().cpu()  # synced across ranks
        self.val_confmat.reset()

    def on_fit_end(self) -> None:
        if self.last_confusion is not None and self.trainer.is_global_zero:
            self.log_figure("val/confusion_matrix", confusion_figure(self.last_confusion))
