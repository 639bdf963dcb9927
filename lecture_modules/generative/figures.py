"""Figures of the generative lectures: image grids (samples, interpolations, trajectories) and metric curves."""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["curve_figure", "grid_figure", "latent_figure"]


def grid_figure(images: torch.Tensor, title: str, ncols: int = 8):
    """Images (N, C, H, W) in [-1, 1] as one grid, ``ncols`` per row (grey for one channel)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    images = ((images.detach().float().cpu() + 1) / 2).clamp(0, 1)
    n, c, h, w = images.shape
    rows = -(-n // ncols)
    canvas = torch.ones(c, rows * (h + 1), ncols * (w + 1))
    for i, image in enumerate(images):
        r, col = divmod(i, ncols)
        canvas[:, r * (h + 1) : r * (h + 1) + h, col * (w + 1) : col * (w + 1) + w] = image
    fig, ax = plt.subplots(figsize=(ncols * 0.6 + 0.5, rows * 0.6 + 0.6))
    shown = canvas[0] if c == 1 else canvas.permute(1, 2, 0)
    ax.imshow(shown.numpy(), cmap="gray" if c == 1 else None, vmin=0, vmax=1, interpolation="nearest")
    ax.set_title(title, fontsize=8)
    ax.axis("off")
    return fig


def curve_figure(steps: Sequence[int], values: Sequence[float], title: str, ylabel: str = "FID"):
    """One metric against the global step."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot(list(steps), list(values), marker="o")
    ax.set_xlabel("global step")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    return fig


def latent_figure(codes: torch.Tensor, labels: torch.Tensor, title: str):
    """A 2-D code (N, 2) as a scatter plot coloured by class."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 4))
    points = ax.scatter(codes[:, 0].numpy(), codes[:, 1].numpy(), c=labels.numpy(), cmap="tab10", s=6)
    fig.colorbar(points, ax=ax, label="class")
    ax.set_xlabel("z1")
    ax.set_ylabel("z2")
    ax.set_title(title, fontsize=9)
    return fig
