"""Pure pieces of HW9's BERT part, for a ``transformers`` sequence classifier (``model(input_ids=...,
attention_mask=...).logits``), no Trainer:

* Token attributions: layer integrated gradients on the word embeddings (captum ``LayerIntegratedGradients``;
  Sundararajan et al. 2017, arXiv 1703.01365), against a baseline sentence in which every token except the special
  ones ([CLS], [SEP], padding) is replaced by [PAD]; the attribution of a token is the sum over its embedding
  dimensions. Returned with captum's completeness gap.
* Attention maps per layer and head (Vig 2019, arXiv 1906.05714; Clark et al. 2019, arXiv 1906.04341), with the
  model switched to its eager attention for the call (fused attention does not return the weights).
* The data randomisation test's similarity of two attributions of the same sentences: the Spearman rank correlation
  over each sentence's real tokens (Adebayo et al. 2018, arXiv 1810.03292).
* A token's representation across layers (the embedding output, then every encoder layer; HW9's PCA): the hidden
  states at chosen positions, and a per-layer 2-d PCA of those points (Ethayarajh 2019, arXiv 1909.00512, studies
  how contextual the layers are).

Shapes: ``input_ids`` and ``attention_mask`` (B, T); L encoder layers, H heads, D hidden units.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn

__all__ = [
    "attention_maps",
    "eager_attention",
    "hidden_states",
    "layer_pca",
    "token_attributions",
    "token_spearman",
]


def token_attributions(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    target: torch.Tensor,
    *,
    special_ids: list[int],
    pad_id: int,
    token_type_ids: torch.Tensor | None = None,
    steps: int = 64,
    internal_batch_size: int = 64,
) -> dict[str, torch.Tensor]:
    """Layer IG on the input embeddings for the ``target`` logits.

    Args:
        special_ids: token ids kept in the baseline ([CLS], [SEP]); every other token becomes ``pad_id``.
        pad_id: the [PAD] id.
        token_type_ids: segment ids of sentence pairs (None: the model's default).
        steps: integration steps.
        internal_batch_size: sentences per forward pass inside IG (bounds memory).

    Returns:
        ``attributions`` (B, T) (zero on padding), ``gap`` F(x) - F(baseline) (B,) and ``delta`` (B,), captum's
        completeness gap sum(attributions) - (F(x) - F(baseline)).
    """
    from captum.attr import LayerIntegratedGradients

    def logits(ids: torch.Tensor, mask: torch.Tensor, types: torch.Tensor | None) -> torch.Tensor:
        return model(input_ids=ids, attention_mask=mask, token_type_ids=types).logits

    keep = torch.isin(input_ids, torch.tensor(special_ids, device=input_ids.device)) | (attention_mask == 0)
    baseline = torch.where(keep, input_ids, torch.full_like(input_ids, pad_id))
    lig = LayerIntegratedGradients(logits, model.get_input_embeddings())
    attributions, delta = lig.attribute(
        input_ids, baselines=baseline, additional_forward_args=(attention_mask, token_type_ids), target=target,
        n_steps=steps, internal_batch_size=internal_batch_size, return_convergence_delta=True,
    )  # fmt: skip
    for p in model.parameters():
        p.grad = None
    with torch.no_grad():
        rows = torch.arange(len(target))
        gap = logits(input_ids, attention_mask, token_type_ids) - logits(baseline, attention_mask, token_type_ids)
    return {
        "attributions": (attributions.sum(-1) * attention_mask).detach(),
        "gap": gap[rows, target].detach(),
        "delta": delta.detach(),
    }


@contextmanager
def eager_attention(model: nn.Module):
    """Run ``model`` with its eager attention (the weights are returned), then restore its implementation."""
    before = getattr(model.config, "_attn_implementation", None)
    if before not in (None, "eager"):
        model.set_attn_implementation("eager")
    try:
        yield model
    finally:
        if before not in (None, "eager"):
            model.set_attn_implementation(before)


def attention_maps(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Attention weights (B, L, H, T, T): row t is where token t attends; rows sum to 1 over the unpadded keys."""
    with torch.no_grad(), eager_attention(model):
        out = model(input_ids=input_ids, attention_mask=attention_mask, output_attentions=True)
    return torch.stack(out.attentions, dim=1)


def hidden_states(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The representation of every token after the embeddings and after each encoder layer: (B, L + 1, T, D)."""
    with torch.no_grad():
        out = model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
    return torch.stack(out.hidden_states, dim=1)


def layer_pca(points: torch.Tensor, components: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """PCA of N points in each of L + 1 layers (L + 1, N, D), layer by layer (HW9: one token in N contexts).

    Returns:
        The projections (L + 1, N, components) (each component's sign fixed so its largest loading is positive)
        and the fraction of the variance each component explains (L + 1, components).
    """
    centred = points.double() - points.double().mean(dim=1, keepdim=True)
    _, singular, vh = torch.linalg.svd(centred, full_matrices=False)  # vh: (L + 1, min(N, D), D)
    axes = vh[:, :components]  # (L + 1, k, D)
    signs = torch.sign(axes.gather(2, axes.abs().argmax(dim=2, keepdim=True)))  # (L + 1, k, 1)
    axes = axes * signs
    variance = singular.pow(2)
    explained = variance[:, :components] / variance.sum(dim=1, keepdim=True).clamp_min(1e-30)
    return (centred @ axes.transpose(1, 2)).float(), explained.float()


def token_spearman(a: torch.Tensor, b: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """Spearman rank correlation of two attributions (B, T) of the same sentences over each sentence's ``real``
    (B, T) positions (words: not [CLS], [SEP] or padding); NaN for a sentence with fewer than 3 such tokens, 0 where
    either attribution is constant there."""
    from torchmetrics.functional.regression import spearman_corrcoef

    out = []
    for i in range(len(a)):
        x, y = a[i][real[i]].double(), b[i][real[i]].double()
        if len(x) < 3:
            out.append(torch.tensor(float("nan"), dtype=torch.float64))
        elif x.std() == 0 or y.std() == 0:
            out.append(torch.tensor(0.0, dtype=torch.float64))
        else:
            out.append(spearman_corrcoef(x, y).cpu())
    return torch.stack(out).float()
