"""Figures of the attack-evaluation lecture: robust accuracy versus eps, perturbation examples, transfer matrix."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

__all__ = ["examples_figure", "robustness_curve_figure", "transfer_figure"]


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def robustness_curve_figure(curves: Mapping[str, tuple[str, Sequence[float], Sequence[float]]], title: str):
    """One line per attack: accuracy (y) against eps (x), one panel per norm. ``curves``: name -> (norm, eps, acc)."""
    plt = _plt()
    norms = sorted({norm for norm, _, _ in curves.values()})
    fig, axes = plt.subplots(1, len(norms), figsize=(4.5 * len(norms), 3.6), squeeze=False)
    for ax, norm in zip(axes[0], norms):
        for name, (n, eps, acc) in curves.items():
            if n == norm:
                ax.plot(eps, [100 * a for a in acc], marker="o", label=name)
        ax.set_xlabel(f"eps ({'L-inf' if norm == 'linf' else 'L2'}, [0, 1] pixels)")
        ax.set_ylabel("accuracy (%)")
        ax.set_ylim(-2, 102)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def examples_figure(
    clean: torch.Tensor,
    adversarial: Mapping[str, torch.Tensor],
    labels: torch.Tensor,
    predictions: Mapping[str, torch.Tensor],
    gain: float,
):
    """Rows: samples; columns: clean, then per attack its perturbation (x ``gain``, 0.5 = no change) and the
    adversarial image, each titled with the victim's prediction. Tensors are (N, C, H, W) in [0, 1]."""
    plt = _plt()
    n, names = len(clean), list(adversarial)
    cols = 1 + 2 * len(names)
    fig, axes = plt.subplots(n, cols, figsize=(1.3 * cols, 1.45 * n), squeeze=False)

    def show(ax, image: torch.Tensor, title: str) -> None:
        image = image.detach().cpu().clamp(0, 1)
        pixels = (image[0] if image.shape[0] == 1 else image.permute(1, 2, 0)).numpy()
        ax.imshow(pixels, cmap="gray", vmin=0, vmax=1)
        ax.set_title(title, fontsize=7)
        ax.axis("off")

    for i in range(n):
        show(axes[i][0], clean[i], f"y={int(labels[i])} pred {int(predictions['clean'][i])}")
        for j, name in enumerate(names):
            delta = adversarial[name][i] - clean[i]
            show(axes[i][1 + 2 * j], 0.5 + gain * delta, f"{name} delta x{gain:g}")
            show(axes[i][2 + 2 * j], adversarial[name][i], f"pred {int(predictions[name][i])}")
    fig.tight_layout()
    return fig


def transfer_figure(matrix: torch.Tensor, rows: Sequence[str], columns: Sequence[str], title: str):
    """Heat map of victim accuracy (%) under attacks crafted on each proxy (rows) against each victim (columns)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(1.4 * len(columns) + 2.5, 0.6 * len(rows) + 1.8))
    values = 100 * matrix.cpu().numpy()
    ax.imshow(values, cmap="RdYlGn", vmin=0, vmax=100)
    ax.set_xticks(range(len(columns)), columns, rotation=30, ha="right")
    ax.set_yticks(range(len(rows)), rows)
    for i in range(len(rows)):
        for j in range(len(columns)):
            ax.text(j, i, f"{values[i, j]:.1f}", ha="center", va="center", fontsize=9)
    ax.set_xlabel("victim")
    ax.set_ylabel("proxy (attack crafted on)")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig
