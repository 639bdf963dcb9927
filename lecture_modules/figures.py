"""Figures more than one lecture draws (the shared layer): a confusion matrix."""

from __future__ import annotations

import torch

__all__ = ["confusion_figure"]


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
