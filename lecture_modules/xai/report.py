"""Figures of the explainable-AI lecture: the per-image grid of maps, the sanity-check cascade and similarity
curves, deletion / insertion curves and the feature-visualisation mosaics. Images are drawn in [0, 1] pixels."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

__all__ = [
    "attention_figure",
    "cascade_figure",
    "curves_figure",
    "explanation_grid",
    "layer_pca_figure",
    "mosaic_figure",
    "similarity_figure",
    "token_figure",
    "token_html",
]


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _pixels(image: torch.Tensor):
    """(C, H, W) in [0, 1] -> what imshow takes (H, W) or (H, W, 3)."""
    image = image.detach().cpu().clamp(0, 1)
    return (image[0] if image.shape[0] == 1 else image.permute(1, 2, 0)).numpy()


def _show_map(ax, heat: torch.Tensor, title: str) -> None:
    """A signed map on a symmetric colour scale (red positive, blue negative); an all-positive map stays red."""
    heat = heat.detach().cpu().float()
    limit = float(heat.abs().max()) or 1.0
    ax.imshow(heat.numpy(), cmap="bwr", vmin=-limit, vmax=limit)
    ax.set_title(title, fontsize=7)
    ax.axis("off")


def explanation_grid(results: Mapping[str, torch.Tensor], methods: Sequence[str]):
    """Rows: images; columns: the input (true label, prediction and its confidence), then each method's map."""
    plt = _plt()
    n, cols = len(results["image"]), 1 + len(methods)
    fig, axes = plt.subplots(n, cols, figsize=(1.35 * cols, 1.45 * n + 0.3), squeeze=False)
    for i in range(n):
        ax = axes[i][0]
        ax.imshow(_pixels(results["image"][i]), cmap="gray", vmin=0, vmax=1)
        label, pred, prob = int(results["label"][i]), int(results["pred"][i]), float(results["prob"][i])
        ax.set_title(f"#{int(results['index'][i])} y={label} pred {pred} ({100 * prob:.0f}%)", fontsize=7)
        ax.axis("off")
        for j, m in enumerate(methods):
            _show_map(axes[i][1 + j], results["maps"][i, j], m if i == 0 else "")
    fig.tight_layout()
    return fig


def cascade_figure(results: Mapping[str, torch.Tensor], methods: Sequence[str], layers: Sequence[str]):
    """Adebayo et al.'s figure for the first image: rows are methods; columns the original map, then the maps after
    re-initialising each layer from the top (cumulatively; ``layers`` top first)."""
    plt = _plt()
    rows, cols = len(methods), 2 + len(layers)
    fig, axes = plt.subplots(rows, cols, figsize=(1.2 * cols, 1.25 * rows + 0.4), squeeze=False)
    for i, m in enumerate(methods):
        axes[i][0].imshow(_pixels(results["image"][0]), cmap="gray", vmin=0, vmax=1)
        axes[i][0].set_title("input" if i == 0 else "", fontsize=7)
        axes[i][0].axis("off")
        axes[i][0].text(-0.1, 0.5, m, transform=axes[i][0].transAxes, ha="right", va="center", fontsize=7)
        _show_map(axes[i][1], results["maps"][0, i], "original" if i == 0 else "")
        for k, layer in enumerate(layers):
            _show_map(axes[i][2 + k], results["cascade_maps"][0, i, k], f"-> {layer}" if i == 0 else "")
    fig.suptitle("cascading randomisation, top layer first", fontsize=9)
    fig.tight_layout()
    return fig


def similarity_figure(
    results: Mapping[str, torch.Tensor], methods: Sequence[str], layers: Sequence[str], names: Sequence[str]
):
    """One panel per similarity (Spearman, Spearman of |maps|, SSIM): mean over images against the last layer
    re-initialised (cumulatively from the top); a method that passes the check falls towards 0."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.4), squeeze=False)
    mean = results["similarity"].mean(0)  # (M, L, S)
    for s, (ax, name) in enumerate(zip(axes[0], names)):
        for i, m in enumerate(methods):
            ax.plot(range(len(layers)), mean[i, :, s].numpy(), marker="o", label=m)
        ax.set_xticks(range(len(layers)), layers, rotation=45, ha="right", fontsize=7)
        ax.set_ylim(-0.3, 1.05)
        ax.axhline(0, color="grey", lw=0.5)
        ax.set_title(name, fontsize=9)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("similarity to the original map")
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    return fig


def curves_figure(results: Mapping[str, torch.Tensor], methods: Sequence[str]):
    """Mean deletion and insertion curves per method (fraction of pixels moved against the class probability)."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for ax, kind in zip(axes, ("deletion", "insertion")):
        curves = results[kind].mean(0)  # (M, S + 1)
        steps = torch.linspace(0, 1, curves.shape[-1]).numpy()
        for i, m in enumerate(methods):
            area = float(torch.trapezoid(curves[i], dx=1.0 / (curves.shape[-1] - 1)))
            ax.plot(steps, curves[i].numpy(), label=f"{m} ({area:.3f})")
        ax.set_xlabel(f"fraction of pixels {'deleted' if kind == 'deletion' else 'inserted'}")
        ax.set_ylabel("probability of the predicted class")
        ax.set_title(f"{kind} (AUC; {'lower' if kind == 'deletion' else 'higher'} is better)", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def mosaic_figure(images: torch.Tensor, layer: str, activations: Sequence[float]):
    """Activation-maximisation images (U, C, H, W) of one layer, titled with each unit's final activation."""
    plt = _plt()
    count = len(images)
    cols = min(8, count)
    rows = -(-count // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.3 * cols, 1.4 * rows + 0.3), squeeze=False)
    for k in range(rows * cols):
        ax = axes[k // cols][k % cols]
        ax.axis("off")
        if k < count:
            ax.imshow(_pixels(images[k]), cmap="gray", vmin=0, vmax=1)
            ax.set_title(f"unit {k}: {activations[k]:.2f}", fontsize=7)
    fig.suptitle(f"activation maximisation, layer {layer}", fontsize=9)
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------ HW9's BERT part
def token_figure(sentences: Sequence[Sequence[str]], attributions: Sequence[torch.Tensor], titles: Sequence[str]):
    """Each sentence's tokens coloured by their attribution (red supports the class, blue opposes it; scaled per
    sentence), one row per sentence, titled (label, prediction, confidence)."""
    plt = _plt()
    from matplotlib import cm

    fig, axes = plt.subplots(len(sentences), 1, figsize=(10, 0.75 * len(sentences) + 0.3), squeeze=False)
    for ax, tokens, values, title in zip(axes[:, 0], sentences, attributions, titles):
        ax.axis("off")
        ax.set_title(title, fontsize=8, loc="left")
        limit = float(values.abs().max()) or 1.0
        x = 0.0
        for token, value in zip(tokens, values.tolist()):
            colour = cm.bwr(0.5 + 0.5 * value / limit)
            box = {"facecolor": colour, "edgecolor": "none", "pad": 1.5}
            ax.text(x, 0.3, token, fontsize=9, transform=ax.transAxes, bbox=box)
            x += 0.012 * (len(token) + 2)  # monospace-ish advance: the figure is a sketch of the sentence
    fig.tight_layout()
    return fig


def token_html(sentences: Sequence[Sequence[str]], attributions: Sequence[torch.Tensor], titles: Sequence[str]) -> str:
    """The same as :func:`token_figure` as an HTML fragment (W&B renders it as text, searchable and selectable):
    each token on a background from blue (against the class) through white to red (for it), scaled per sentence;
    the value on hover."""
    from html import escape

    rows = []
    for tokens, values, title in zip(sentences, attributions, titles):
        limit = float(values.abs().max()) or 1.0
        spans = []
        for token, value in zip(tokens, values.tolist()):
            share = min(abs(value) / limit, 1.0)
            fade = round(255 * (1 - share))
            colour = f"rgb(255,{fade},{fade})" if value >= 0 else f"rgb({fade},{fade},255)"
            spans.append(
                f'<span title="{value:+.4f}" style="background:{colour};padding:1px 3px;margin:1px;'
                f'border-radius:3px;font-family:monospace">{escape(token)}</span>'
            )
        rows.append(f"<p><b>{escape(title)}</b><br>{''.join(spans)}</p>")
    return "<div>" + "\n".join(rows) + "</div>"


def attention_figure(maps: torch.Tensor, tokens: Sequence[str]):
    """One sentence's attention (L, H, T, T): a heat map per layer (rows) and head (columns); rows of a map are the
    attending tokens."""
    plt = _plt()
    layers, heads = maps.shape[:2]
    fig, axes = plt.subplots(layers, heads, figsize=(2.2 * heads + 0.5, 2.2 * layers + 0.5), squeeze=False)
    for i in range(layers):
        for j in range(heads):
            ax = axes[i][j]
            ax.imshow(maps[i, j].cpu().numpy(), cmap="viridis", vmin=0, vmax=1)
            ax.set_title(f"layer {i + 1} head {j + 1}", fontsize=7)
            ax.set_xticks(range(len(tokens)), tokens, rotation=90, fontsize=5)
            ax.set_yticks(range(len(tokens)), tokens, fontsize=5)
    fig.tight_layout()
    return fig


def layer_pca_figure(points: torch.Tensor, explained: torch.Tensor, groups: Sequence[str]):
    """HW9's figure: one token's representations (L + 1, N, 2) projected per layer, coloured by ``groups`` (N
    names, e.g. the word's meaning in each sentence); ``explained`` (L + 1, 2) variance fractions in the titles."""
    plt = _plt()
    count = points.shape[0]
    fig, axes = plt.subplots(1, count, figsize=(2.6 * count, 2.8), squeeze=False)
    names = list(dict.fromkeys(groups))
    for k, ax in enumerate(axes[0]):
        for name in names:
            chosen = [i for i, g in enumerate(groups) if g == name]
            ax.scatter(points[k, chosen, 0].numpy(), points[k, chosen, 1].numpy(), s=14, label=name)
        share = 100 * explained[k].sum().item()
        ax.set_title(("embeddings" if k == 0 else f"layer {k}") + f" ({share:.0f}%)", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    return fig
