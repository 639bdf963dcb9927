"""Compact student networks from the network-compression lecture: small CNNs, depthwise-separable convolutions
(Howard et al. 2017, MobileNets, arXiv 1704.04861) and low-rank factorised linear layers.

A k x k convolution from I to O channels has k^2 * I * O weights; its depthwise-separable version (one k x k filter
per input channel, then a 1 x 1 convolution) has k^2 * I + I * O, a ratio of 1/O + 1/k^2. A linear layer W (O x I)
factorised as U (O x r) V (r x I) has r * (I + O) weights instead of I * O.

A student is one typed argument, :class:`StudentSpec` (``model.init_args.student`` in a config), stored in the
hyper-parameters as a plain dict so checkpoints load with ``weights_only=True``. ``cnn`` and ``mlp`` are the shared
networks of :mod:`lecture_modules.nets`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from lecture_modules.base import bad_setting
from lecture_modules.nets import NetSpec, Spec

__all__ = [
    "STUDENTS",
    "STUDENT_WIDTHS",
    "DepthwiseSeparableConv2d",
    "LowRankLinear",
    "StudentSpec",
    "build_student",
    "count_parameters",
    "separable_ratio",
]

STUDENTS = ("cnn", "depthwise_separable", "mlp", "low_rank_mlp")
StudentKind = Literal["cnn", "depthwise_separable", "mlp", "low_rank_mlp"]
STUDENT_WIDTHS = {"cnn": [16, 32, 32], "depthwise_separable": [16, 32, 64], "mlp": [64, 32], "low_rank_mlp": [128, 64]}


def count_parameters(module: nn.Module) -> tuple[int, int]:
    """(trainable, non-trainable) parameter counts; buffers such as batch-norm running statistics are not counted."""
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in module.parameters() if not p.requires_grad)
    return trainable, frozen


def separable_ratio(out_channels: int, kernel_size: int) -> float:
    """Weights of a depthwise-separable convolution over those of a standard one: 1/O + 1/k^2 (biases left out)."""
    return 1.0 / out_channels + 1.0 / kernel_size**2


class DepthwiseSeparableConv2d(nn.Module):
    """Depthwise k x k convolution (groups = input channels) followed by a pointwise 1 x 1 convolution."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, bias: bool = False) -> None:
        super().__init__()
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, kernel_size
        self.depthwise = nn.Conv2d(
            in_channels, in_channels, kernel_size, padding=kernel_size // 2, groups=in_channels, bias=bias
        )  # (B, I, H, W) -> (B, I, H, W)
        self.pointwise = nn.Conv2d(in_channels, out_channels, 1, bias=bias)  # (B, I, H, W) -> (B, O, H, W)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))

    def extra_repr(self) -> str:
        k, i, o = self.kernel_size, self.in_channels, self.out_channels
        return (
            f"{k * k * i + i * o} weights vs {k * k * i * o} for a standard {k}x{k} conv {i}->{o}: "
            f"ratio {separable_ratio(o, k):.4f} = 1/{o} + 1/{k * k}"
        )


class LowRankLinear(nn.Module):
    """y = U (V x) + b with V: in -> rank and U: rank -> out, i.e. a rank-r factorisation of a linear layer."""

    def __init__(self, in_features: int, out_features: int, rank: int, bias: bool = True) -> None:
        super().__init__()
        if not 1 <= rank <= min(in_features, out_features):
            raise ValueError(f"LowRankLinear rank must be in [1, {min(in_features, out_features)}], got {rank}")
        self.in_features, self.out_features, self.rank = in_features, out_features, rank
        self.down = nn.Linear(in_features, rank, bias=False)  # V: (B, in) -> (B, rank)
        self.up = nn.Linear(rank, out_features, bias=bias)  # U: (B, rank) -> (B, out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.down(x))

    @classmethod
    def from_linear(cls, linear: nn.Linear, rank: int) -> LowRankLinear:
        """The best rank-r approximation of a trained linear layer (truncated SVD, Eckart-Young)."""
        layer = cls(linear.in_features, linear.out_features, rank, bias=linear.bias is not None)
        u, s, vh = torch.linalg.svd(linear.weight.detach().double(), full_matrices=False)
        root = s[:rank].sqrt()
        with torch.no_grad():
            layer.down.weight.copy_((root[:, None] * vh[:rank]).to(linear.weight.dtype))  # (rank, in)
            layer.up.weight.copy_((u[:, :rank] * root[None, :]).to(linear.weight.dtype))  # (out, rank)
            if linear.bias is not None:
                layer.up.bias.copy_(linear.bias)
        return layer

    def extra_repr(self) -> str:
        i, o, r = self.in_features, self.out_features, self.rank
        return f"{i}->{r}->{o}: {r * (i + o)} weights vs {i * o} for a full {i}->{o} layer"


def _conv_bn_relu(conv: nn.Module, width: int, batch_norm: bool) -> list[nn.Module]:
    return [conv, nn.BatchNorm2d(width) if batch_norm else nn.Identity(), nn.ReLU(inplace=True)]


def build_depthwise_separable(
    input_shape: tuple[int, ...], num_classes: int, widths: list[int], batch_norm: bool
) -> nn.Sequential:
    """Standard 3x3 conv to widths[0], then a depthwise-separable block per further width (pool while >= 4 px)."""
    in_ch, size = input_shape[0], min(input_shape[1:])
    layers: list[nn.Module] = []
    for i, out_ch in enumerate(widths):
        conv = (
            nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=not batch_norm)
            if i == 0
            else DepthwiseSeparableConv2d(in_ch, out_ch, 3, bias=not batch_norm)
        )
        layers += _conv_bn_relu(conv, out_ch, batch_norm)  # (B, out_ch, H, W)
        if size >= 4:
            layers.append(nn.MaxPool2d(2))  # (B, out_ch, H/2, W/2)
            size //= 2
        in_ch = out_ch
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(in_ch, num_classes)]  # (B, num_classes)
    return nn.Sequential(*layers)


def build_low_rank_mlp(
    input_shape: tuple[int, ...], num_classes: int, widths: list[int], rank: int, batch_norm: bool, dropout: float
) -> nn.Sequential:
    """Flatten -> [LowRankLinear -> BN -> ReLU -> Dropout] per width -> Linear (the small head stays full rank)."""
    layers: list[nn.Module] = [nn.Flatten()]
    width = int(torch.tensor(input_shape).prod())
    for h in widths:
        layers += [
            LowRankLinear(width, h, min(rank, width, h), bias=not batch_norm),
            nn.BatchNorm1d(h) if batch_norm else nn.Identity(),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout) if dropout > 0 else nn.Identity(),
        ]
        width = h
    layers.append(nn.Linear(width, num_classes))  # (B, num_classes)
    return nn.Sequential(*layers)


def build_student(
    kind: StudentKind,
    input_shape: tuple[int, ...],
    num_classes: int,
    widths: list[int],
    rank: int = 16,
    batch_norm: bool = True,
    dropout: float = 0.0,
) -> nn.Sequential:
    """One of :data:`STUDENTS`: ``cnn`` and ``mlp`` are the shared networks of :mod:`lecture_modules.nets`."""
    if kind in ("cnn", "mlp"):
        return NetSpec(kind=kind, widths=list(widths), batch_norm=batch_norm, dropout=dropout).build(
            input_shape, num_classes
        )
    if kind == "depthwise_separable":
        return build_depthwise_separable(input_shape, num_classes, widths, batch_norm)
    if kind == "low_rank_mlp":
        return build_low_rank_mlp(input_shape, num_classes, widths, rank, batch_norm, dropout)
    raise ValueError(f"student must be one of {STUDENTS}, got {kind!r}")


@dataclass(frozen=True)
class StudentSpec(Spec):
    """A compact student network.

    Attributes:
        kind: ``cnn``, ``depthwise_separable`` (MobileNets blocks), ``mlp`` or ``low_rank_mlp`` (factorised layers).
        widths: channels (CNNs) or hidden units (MLPs) per layer; null takes the kind's default (``STUDENT_WIDTHS``).
        rank: rank of each factorised layer (``low_rank_mlp`` only).
        batch_norm: batch normalisation after each hidden layer.
        dropout: dropout probability after each hidden layer, in [0, 1) (0 disables it; ``depthwise_separable`` has
            none).
    """

    kind: StudentKind = "cnn"
    widths: list[int] | None = None
    rank: int = 16
    batch_norm: bool = True
    dropout: float = 0.0

    def validate(self, owner: str = "student") -> None:
        """Raise :class:`~datamodules.errors.SettingError` naming the setting (``model.init_args.student.kind`` ...)
        when a field is out of range."""
        if self.kind not in STUDENTS:
            raise bad_setting(f"{owner}.kind", self.kind, f"one of {STUDENTS}")
        if self.widths is not None and (not self.widths or min(self.widths) < 1):
            raise bad_setting(f"{owner}.widths", self.widths, "a list of positive widths (or null: the default)")
        if self.rank < 1:
            raise bad_setting(f"{owner}.rank", self.rank, ">= 1")
        if not 0.0 <= self.dropout < 1.0:
            raise bad_setting(f"{owner}.dropout", self.dropout, "in [0, 1)")

    @property
    def layer_widths(self) -> list[int]:
        """``widths``, or the kind's default."""
        return list(self.widths) if self.widths is not None else list(STUDENT_WIDTHS[self.kind])

    def build(self, input_shape: tuple[int, ...], num_classes: int) -> nn.Sequential:
        """The student: (B, C, H, W) -> (B, num_classes)."""
        return build_student(
            self.kind, tuple(input_shape), num_classes, self.layer_widths, self.rank, self.batch_norm, self.dropout
        )
