"""Pure building blocks of domain adaptation, testable without a Trainer.

* :class:`GradientReverse` / :func:`grad_reverse` — identity forward, gradient times ``-coeff`` backward
  (Ganin & Lempitsky 2015, arXiv 1409.7495).
* :func:`dann_lambda` — DANN's adaptation-weight schedule ``2 / (1 + exp(-gamma p)) - 1``.
* :func:`classifier_discrepancy` — MCD's ``mean |softmax(p1) - softmax(p2)|`` (Saito et al. 2018, arXiv 1712.02560).
* :func:`normalized_entropy`, :func:`label_free_score` — scores that need no target labels.
* :func:`proxy_a_distance` — ``2 (1 - 2 err)`` of a linear domain classifier on features (Ben-David et al. 2007).
* Network builders: feature extractor, classifier head.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lecture_modules.nets import build_cnn

__all__ = [
    "GradientReverse",
    "build_feature_extractor",
    "build_head",
    "classifier_discrepancy",
    "dann_lambda",
    "grad_reverse",
    "label_free_score",
    "normalized_entropy",
    "proxy_a_distance",
]


class GradientReverse(torch.autograd.Function):
    """Identity in the forward pass; multiplies the incoming gradient by ``-coeff`` in the backward pass."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, coeff: float) -> torch.Tensor:
        ctx.coeff = float(coeff)
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> tuple[torch.Tensor, None]:
        return -ctx.coeff * grad_output, None


def grad_reverse(x: torch.Tensor, coeff: float = 1.0) -> torch.Tensor:
    """Gradient reversal layer: ``x`` forward, ``-coeff * grad`` backward."""
    return GradientReverse.apply(x, coeff)


def dann_lambda(progress: float, gamma: float = 10.0) -> float:
    """DANN's adaptation weight ``2 / (1 + exp(-gamma p)) - 1``: 0 at p = 0, rising towards 1 at p = 1."""
    p = min(max(float(progress), 0.0), 1.0)
    return 2.0 / (1.0 + math.exp(-gamma * p)) - 1.0


def classifier_discrepancy(logits1: torch.Tensor, logits2: torch.Tensor) -> torch.Tensor:
    """MCD's discrepancy: mean absolute difference of the two classifiers' softmax outputs. (B, K), (B, K) -> ()."""
    return (F.softmax(logits1, dim=1) - F.softmax(logits2, dim=1)).abs().mean()


def normalized_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Prediction entropy divided by log K, in [0, 1] per sample. (B, K) -> (B,)."""
    log_p = F.log_softmax(logits, dim=1)
    return -(log_p.exp() * log_p).sum(dim=1) / math.log(logits.shape[1])


def label_free_score(source_acc: float | torch.Tensor, target_entropy: float | torch.Tensor):
    """Model-selection score without target labels: source validation accuracy minus the mean normalised
    entropy of the target predictions (higher is better; both terms in [0, 1])."""
    return source_acc - target_entropy


def proxy_a_distance(source_features: np.ndarray, target_features: np.ndarray, seed: int = 0) -> float:
    """Proxy A-distance ``2 (1 - 2 err)``: ``err`` is the held-out error of a logistic-regression domain classifier
    trained on half of the (standardised) features. 0 = domains indistinguishable, 2 = perfectly separable."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    x = np.concatenate([source_features, target_features]).astype(np.float64)
    d = np.concatenate([np.zeros(len(source_features)), np.ones(len(target_features))])
    order = np.random.default_rng(seed).permutation(len(x))
    train, test = order[: len(x) // 2], order[len(x) // 2 :]
    if len(np.unique(d[train])) < 2 or len(test) == 0:
        raise ValueError("proxy_a_distance needs samples of both domains on each side of the split")
    scaler = StandardScaler().fit(x[train])
    clf = LogisticRegression(C=1.0, max_iter=500).fit(scaler.transform(x[train]), d[train])
    err = 1.0 - clf.score(scaler.transform(x[test]), d[test])
    return 2.0 * (1.0 - 2.0 * err)


def build_feature_extractor(
    input_shape: tuple[int, int, int], channels: list[int], feature_dim: int, batch_norm: bool, dropout: float
) -> nn.Sequential:
    """G: the lecture-1-3 CNN (conv blocks -> GAP -> Linear to ``feature_dim``) followed by ReLU. (B,C,H,W) -> (B,D)."""
    return nn.Sequential(*build_cnn(input_shape, feature_dim, channels, batch_norm, dropout), nn.ReLU(inplace=True))


def build_head(in_dim: int, hidden: int, out_dim: int, batch_norm: bool, dropout: float) -> nn.Sequential:
    """A two-layer head: Linear -> BN -> ReLU -> Dropout -> Linear. (B, in_dim) -> (B, out_dim)."""
    return nn.Sequential(
        nn.Linear(in_dim, hidden, bias=not batch_norm),
        nn.BatchNorm1d(hidden) if batch_norm else nn.Identity(),
        nn.ReLU(inplace=True),
        nn.Dropout(dropout) if dropout > 0 else nn.Identity(),
        nn.Linear(hidden, out_dim),
    )
