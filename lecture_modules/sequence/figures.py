"""Figures of the sequence lectures: attention maps and BLEU over training (the confusion matrix is shared:
:mod:`lecture_modules.figures`)."""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["attention_figure", "bleu_figure"]


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _heat(ax, matrix: torch.Tensor, x_labels: list[str], y_labels: list[str], title: str) -> None:
    ax.imshow(matrix.numpy(), cmap="viridis", vmin=0.0, aspect="auto")
    rotation = 90 if max((len(t) for t in x_labels), default=0) > 2 else 0  # a rotated "m" reads as "E"
    ax.set_xticks(range(len(x_labels)), x_labels, rotation=rotation, fontsize=7)
    ax.set_yticks(range(len(y_labels)), y_labels, fontsize=7)
    ax.set_title(title, fontsize=8)


def attention_figure(maps: list[dict[str, torch.Tensor | None]], examples: dict[str, Any], source_tok, target_tok):
    """Up to three validation examples: cross-attention (rows: output tokens, columns: source tokens), and the
    encoder self-attention of the first when the model has one (the Transformer)."""
    plt = _plt()
    shown = maps[:3]
    extra = 1 if shown and shown[0]["encoder"] is not None else 0
    fig, axes = plt.subplots(1, len(shown) + extra, figsize=(3.6 * (len(shown) + extra), 3.6), squeeze=False)
    for i, m in enumerate(shown):
        length = int(examples["mask"][i].sum())
        src = source_tok.pieces(examples["src"][i, :length].tolist())
        out = [*target_tok.pieces(examples["hyp_ids"][i]), "</s>"][: m["cross"].shape[0]]
        _heat(axes[0, i], m["cross"], src, out, f"cross-attention, example {i}")
    if extra:
        length = int(examples["mask"][0].sum())
        src = source_tok.pieces(examples["src"][0, :length].tolist())
        _heat(axes[0, -1], shown[0]["encoder"], src, src, "encoder self-attention, example 0")
    fig.tight_layout()
    return fig


def bleu_figure(history: list[tuple[int, float]]):
    """Validation BLEU (greedy decoding) against the training step."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.5, 3))
    ax.plot([s for s, _ in history], [b for _, b in history], marker="o")
    ax.set_xlabel("training step")
    ax.set_ylabel("val BLEU (greedy)")
    ax.grid(alpha=0.3)
    return fig
