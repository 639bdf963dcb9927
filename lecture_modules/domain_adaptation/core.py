"""Pure building blocks of domain adaptation, testable without a Trainer.

* :class:`GradientReverse` / :func:`grad_reverse` — identity forward, gradient times ``-coeff`` backward
  (Ganin & Lempitsky 2015, arXiv 1409.7495).
* :func:`dann_lambda` — DANN's adaptation-weight schedule ``2 / (1 + exp(-gamma p)) - 1``.
* :func:`classifier_discrepancy` — MCD's ``mean |softmax(p1) - softmax(p2)|`` (Saito et al. 2018, arXiv 1712.02560).
* :func:`normalized_entropy`, :func:`label_free_score` — scores that need no target labels.
* :func:`proxy_a_distance` — ``2 (1 - 2 err)`` of a linear domain classifier on features (Ben-David et al. 2007).
* :func:`recompute_batch_norm_statistics` — AdaBN (Li et al. 2016, arXiv 1603.04779): a network's batch-norm
  running statistics recomputed on one domain's images, to measure what evaluating with mixed statistics costs.
* :class:`DomainNetSpec` — the network every method shares (feature extractor G, label classifier F, domain
  classifier D) as one typed argument, with its builders; :func:`fold_legacy_domain_net_args` maps checkpoints
  written before it.
* :func:`optimizer_factory` / :func:`describe_optimizer` — an optimiser factory (``OptimizerCallable``) from the
  config or a checkpoint, and back to plain data, for lectures that build several optimisers (MCD).
"""

from __future__ import annotations

import functools
import importlib
import math
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from datamodules.errors import SettingError
from lecture_modules.base import bad_setting, model_setting
from lecture_modules.nets import Spec, build_cnn

__all__ = [
    "DomainNetSpec",
    "GradientReverse",
    "build_feature_extractor",
    "build_flatten_extractor",
    "build_head",
    "classifier_discrepancy",
    "dann_lambda",
    "describe_optimizer",
    "fold_legacy_domain_net_args",
    "grad_reverse",
    "label_free_score",
    "normalized_entropy",
    "optimizer_factory",
    "proxy_a_distance",
    "recompute_batch_norm_statistics",
]

OptimizerFactory = Callable[[Iterable], torch.optim.Optimizer]  # lightning.pytorch.cli.OptimizerCallable


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


@torch.no_grad()
def recompute_batch_norm_statistics(network: nn.Module, images: torch.Tensor, batch_size: int = 256) -> int:
    """Replace the running statistics of every batch-norm layer ``network(images)`` passes through by the average of
    its batch means and variances over ``images`` (N, C, H, W), fed in batches of ``batch_size`` with dropout off.
    Returns the number of batch-norm layers in ``network``; the network is left in eval mode."""
    layers = [m for m in network.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in layers]
    network.eval()
    for layer in layers:
        layer.reset_running_stats()
        layer.momentum = None  # cumulative average over the batches below
        layer.train()
    device = next(network.parameters()).device
    for chunk in images.split(batch_size):
        network(chunk.to(device))
    for layer, momentum in zip(layers, saved, strict=True):
        layer.momentum = momentum
        layer.eval()
    return len(layers)


def build_feature_extractor(
    input_shape: tuple[int, int, int], channels: list[int], feature_dim: int, batch_norm: bool, dropout: float
) -> nn.Sequential:
    """G: the lecture-1-3 CNN (conv blocks -> GAP -> Linear to ``feature_dim``) followed by ReLU. (B,C,H,W) -> (B,D)."""
    return nn.Sequential(*build_cnn(input_shape, feature_dim, channels, batch_norm, dropout), nn.ReLU(inplace=True))


def build_flatten_extractor(
    input_shape: tuple[int, int, int], channels: list[int], kernel_size: int, batch_norm: bool, dropout: float
) -> nn.Sequential:
    """G of Ganin et al.'s digit networks: [Conv k x k (no padding) -> BN -> ReLU -> MaxPool2] per width, Dropout2d
    in the last block only, then flatten (the spatial layout is kept). (B, C, H, W) -> (B, C_last * h * w)."""
    in_ch, layers = input_shape[0], []
    for index, out_ch in enumerate(channels):
        layers += [
            nn.Conv2d(in_ch, out_ch, kernel_size, bias=not batch_norm),
            nn.BatchNorm2d(out_ch) if batch_norm else nn.Identity(),
            nn.ReLU(inplace=True),
            nn.Dropout2d(dropout) if dropout > 0 and index == len(channels) - 1 else nn.Identity(),
            nn.MaxPool2d(2),
        ]
        in_ch = out_ch
    layers.append(nn.Flatten())
    return nn.Sequential(*layers)


def flatten_map_size(size: int, blocks: int, kernel_size: int) -> int:
    """Side of the last feature map of :func:`build_flatten_extractor`: each block takes ``(s - k + 1) // 2``."""
    for _ in range(blocks):
        size = (size - kernel_size + 1) // 2
    return size


def build_head(
    in_dim: int, hidden: int, out_dim: int, batch_norm: bool, dropout: float, layers: int = 1
) -> nn.Sequential:
    """An MLP head: ``layers`` x [Linear -> BN -> ReLU], Dropout after the first, then Linear.
    (B, in_dim) -> (B, out_dim)."""
    modules: list[nn.Module] = []
    for index in range(layers):
        modules += [
            nn.Linear(in_dim if index == 0 else hidden, hidden, bias=not batch_norm),
            nn.BatchNorm1d(hidden) if batch_norm else nn.Identity(),
            nn.ReLU(inplace=True),
        ]
        if index == 0:
            modules.append(nn.Dropout(dropout) if dropout > 0 else nn.Identity())
    return nn.Sequential(*modules, nn.Linear(hidden, out_dim))


@dataclass(frozen=True)
class DomainNetSpec(Spec):
    """The network of every domain-adaptation method: feature extractor G, label classifier F (MCD: F1 and F2) and,
    for DANN, the domain classifier D.

    The default is the lecture's small CNN (fast on the embedded 16x16 pair). Ganin et al. 2016's MNIST -> MNIST-M
    network is ``{extractor: flatten, conv_channels: [32, 48], kernel_size: 5, head_layers: 2, hidden: 100,
    batch_norm: false, dropout: 0}`` (G: 5x5 conv 32 -> pool -> 5x5 conv 48 -> pool -> 768 features on 28x28;
    F: fc 100 -> fc 100 -> 10; D: fc 100 -> 1).

    Attributes:
        conv_channels: convolution widths of the feature extractor G, one block each.
        extractor: ``gap`` (3x3 padded convs, global average pooling, Linear to ``feature_dim``: the lecture-1-3
            CNN) or ``flatten`` (``kernel_size`` convs without padding, 2x2 max-pool each, flattened: the paper's).
        kernel_size: convolution size of the ``flatten`` extractor (5 in the paper); ``gap`` always uses 3.
        feature_dim: feature size of the ``gap`` extractor (``flatten``: computed from the input shape).
        hidden: width of the heads' hidden layers (label classifiers and domain classifier).
        head_layers: hidden layers of the label classifiers (2 in the paper); the domain classifier has one.
        batch_norm: batch normalisation in G and in the heads.
        dropout: dropout probability in G (``flatten``: last block only) and after the first hidden layer of the
            label classifiers, in [0, 1) (the domain classifier has none).
    """

    conv_channels: list[int] = field(default_factory=lambda: [32, 64, 128])
    extractor: Literal["gap", "flatten"] = "gap"
    kernel_size: int = 3
    feature_dim: int = 128
    hidden: int = 128
    head_layers: int = 1
    batch_norm: bool = True
    dropout: float = 0.1

    def validate(self, owner: str = "net") -> None:
        """Raise :class:`~datamodules.errors.SettingError` naming the setting (``model.init_args.net.feature_dim``
        ...) when a field is out of range."""
        if not self.conv_channels or min(self.conv_channels) < 1:
            raise bad_setting(f"{owner}.conv_channels", self.conv_channels, "a list of positive widths")
        if self.extractor not in ("gap", "flatten"):
            raise bad_setting(f"{owner}.extractor", self.extractor, "'gap' or 'flatten'")
        for name in ("kernel_size", "feature_dim", "hidden", "head_layers"):
            if getattr(self, name) < 1:
                raise bad_setting(f"{owner}.{name}", getattr(self, name), ">= 1")
        if not 0.0 <= self.dropout < 1.0:
            raise bad_setting(f"{owner}.dropout", self.dropout, "in [0, 1)")

    def feature_size(self, input_shape: tuple[int, ...], owner: str = "net") -> int:
        """Size of G's output for (C, H, W) images; a ``flatten`` G that shrinks the map below 1 px is a
        :class:`~datamodules.errors.SettingError` naming ``model.init_args.net.conv_channels`` and ``kernel_size``."""
        if self.extractor == "gap":
            return self.feature_dim
        side = flatten_map_size(min(input_shape[1:]), len(self.conv_channels), self.kernel_size)
        if side < 1:
            owner = model_setting(owner)
            raise SettingError(
                f"{owner}.conv_channels {self.conv_channels} with {owner}.kernel_size {self.kernel_size} shrink "
                f"{tuple(input_shape[1:])} images below 1 px (each block: (s - k + 1) // 2); use fewer blocks, a "
                "smaller kernel or extractor: gap"
            )
        return self.conv_channels[-1] * side * side

    def build_extractor(self, input_shape: tuple[int, ...]) -> nn.Sequential:
        """G: (B, C, H, W) -> (B, feature_size(input_shape))."""
        if self.extractor == "flatten":
            return build_flatten_extractor(
                tuple(input_shape), list(self.conv_channels), self.kernel_size, self.batch_norm, self.dropout
            )
        return build_feature_extractor(
            tuple(input_shape), list(self.conv_channels), self.feature_dim, self.batch_norm, self.dropout
        )

    def build_classifier(self, num_classes: int, input_shape: tuple[int, ...]) -> nn.Sequential:
        """A label classifier F: (B, feature_size) -> (B, num_classes)."""
        in_dim = self.feature_size(input_shape)
        return build_head(in_dim, self.hidden, num_classes, self.batch_norm, self.dropout, layers=self.head_layers)

    def build_domain_classifier(self, input_shape: tuple[int, ...]) -> nn.Sequential:
        """DANN's domain classifier D, one hidden layer, no dropout: (B, feature_size) -> (B, 1) logits (target 1)."""
        return build_head(self.feature_size(input_shape), self.hidden, 1, self.batch_norm, dropout=0.0)


LEGACY_NET_ARGS = ("conv_channels", "feature_dim", "hidden", "batch_norm", "dropout")


def fold_legacy_domain_net_args(hparams: Mapping[str, Any]) -> dict[str, Any]:
    """Hyper-parameters of a checkpoint written before the network became one ``net`` argument, with the old
    ``conv_channels``/``feature_dim``/``hidden``/``batch_norm``/``dropout`` entries folded into ``net`` (a null
    ``conv_channels`` meant the default widths; other entries are left as they are)."""
    out = dict(hparams)
    if "net" in out or not any(key in out for key in LEGACY_NET_ARGS):
        return out
    net = {key: out.pop(key) for key in LEGACY_NET_ARGS if key in out}
    if net.get("conv_channels", ()) is None:
        del net["conv_channels"]
    out["net"] = net
    return out


# ---------------------------------------------------------------------------------------------- optimiser factories
def optimizer_factory(value: OptimizerFactory | Mapping[str, Any], owner: str = "optimizer") -> OptimizerFactory:
    """The optimiser factory ``params -> Optimizer`` that ``value`` describes.

    ``value`` is what the CLI hands over for an ``OptimizerCallable`` argument (a callable), an optimiser class, a
    ``functools.partial`` of one, or the plain ``{"class_path": ..., "init_args": {...}}`` a checkpoint or a default
    holds; ``owner`` names the setting in errors (for example ``MCD.optimizer``).
    """
    if not isinstance(value, Mapping):
        if not callable(value):
            raise TypeError(f"{owner} must be an optimiser factory or {{class_path, init_args}}, got {value!r}")
        return value
    unknown = sorted(set(value) - {"class_path", "init_args"})
    if unknown or not isinstance(value.get("class_path"), str):
        raise bad_setting(owner, dict(value), "{class_path: <optimiser class>, init_args: {...}}")
    module, _, name = value["class_path"].rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name) if module else None
    except (ImportError, AttributeError):
        cls = None
    if not (isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer)):
        raise bad_setting(f"{owner}.class_path", value["class_path"], "a torch.optim.Optimizer subclass")
    return functools.partial(cls, **dict(value.get("init_args") or {}))


def describe_optimizer(factory: OptimizerFactory | Mapping[str, Any], owner: str = "optimizer") -> dict[str, Any]:
    """Plain ``{"class_path", "init_args"}`` of an optimiser factory, for the hyper-parameters (checkpoints stay
    ``weights_only``). Understands optimiser classes and ``functools.partial`` objects whose function or positional
    arguments name the class (as the CLI builds them); anything else is a ``TypeError`` naming ``owner``."""
    if isinstance(factory, Mapping):
        optimizer_factory(factory, owner)  # validates it
        return {"class_path": factory["class_path"], "init_args": dict(factory.get("init_args") or {})}
    keywords: dict[str, Any] = {}
    target: Any = factory
    if isinstance(factory, functools.partial):
        keywords = dict(factory.keywords)
        classes = [a for a in (factory.func, *factory.args) if isinstance(a, type)]
        target = classes[-1] if classes else None
    if not (isinstance(target, type) and issubclass(target, torch.optim.Optimizer)):
        raise TypeError(
            f"{owner}: cannot record {factory!r} in the checkpoint; give an optimiser class, a functools.partial of "
            "one, or {class_path, init_args}"
        )
    module = target.__module__
    parent = module.rpartition(".")[0]  # torch.optim.adam.Adam -> torch.optim.Adam, as configs spell it
    if parent and getattr(sys.modules.get(parent), target.__qualname__, None) is target:
        module = parent
    return {"class_path": f"{module}.{target.__qualname__}", "init_args": keywords}
