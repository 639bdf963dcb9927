"""Sequence encoders, poolings and heads for sequence classification (lecture 4 / HW4), as pure modules.

* Encoders of frames (B, T, F) -> (B, T, d): RNN / LSTM / GRU (bidirectional, packed so padding is skipped), the
  Transformer encoder of :mod:`.attention`, and the Conformer (Gulati et al. 2020, arXiv 2005.08100): each block is
  x + 1/2 FFN(x), + MHSA, + Conv, + 1/2 FFN, then LayerNorm (the "macaron" pair of half-step feed-forward nets
  around attention and a depthwise-convolution module: pointwise conv, GLU, depthwise conv, BatchNorm, SiLU,
  pointwise conv).
* Poolings over real frames (B, T, d) -> (B, d): the mean, or self-attention pooling (Safari et al. 2020,
  arXiv 2008.01077): weights w = softmax_t(v^T h_t) over real frames, then sum_t w_t h_t.
* Heads (B, d) -> logits: a linear softmax layer, or additive-margin softmax (Wang et al. 2018, arXiv 1801.05599):
  logits s (cos theta_j - m [j = y]) with L2-normalised features and class weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from lecture_modules.base import bad_setting
from lecture_modules.nets import Spec
from lecture_modules.sequence.attention import EncoderLayer, MultiHeadAttention, _feed_forward, sinusoidal_encoding

__all__ = ["AMSoftmaxHead", "AttentionPooling", "ConformerBlock", "EncoderSpec", "SequenceEncoder", "masked_mean"]

ENCODERS = ("rnn", "lstm", "gru", "transformer", "conformer")


@dataclass(frozen=True)
class EncoderSpec(Spec):
    """A sequence encoder of feature frames.

    Attributes:
        kind: ``rnn``, ``lstm``, ``gru``, ``transformer`` or ``conformer``.
        d_model: width of the frame representations (bidirectional RNNs: d_model / 2 per direction).
        layers: encoder layers (blocks).
        heads: attention heads (transformer, conformer).
        d_ff: feed-forward hidden width (transformer, conformer).
        kernel_size: depthwise convolution kernel (conformer; odd).
        dropout: dropout rate in [0, 1).
        positional: positions of the transformer and conformer attention: ``rope`` (relative offsets),
            ``sinusoidal`` (added absolute positions) or ``none`` (attention alone is order-blind).
    """

    kind: Literal["rnn", "lstm", "gru", "transformer", "conformer"] = "transformer"
    d_model: int = 80
    layers: int = 2
    heads: int = 2
    d_ff: int = 256
    kernel_size: int = 15
    dropout: float = 0.1
    positional: Literal["rope", "sinusoidal", "none"] = "rope"

    def validate(self, owner: str = "net") -> None:
        if self.kind not in ENCODERS:
            raise bad_setting(f"{owner}.kind", self.kind, f"one of {list(ENCODERS)}")
        for name in ("d_model", "layers", "heads", "d_ff"):
            if getattr(self, name) < 1:
                raise bad_setting(f"{owner}.{name}", getattr(self, name), ">= 1")
        if self.d_model % self.heads:
            raise bad_setting(f"{owner}.d_model", self.d_model, f"divisible by {owner}.heads ({self.heads})")
        if self.kind in ("rnn", "lstm", "gru") and self.d_model % 2:
            raise bad_setting(f"{owner}.d_model", self.d_model, "even (two directions of d_model / 2)")
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise bad_setting(f"{owner}.kernel_size", self.kernel_size, "odd and >= 1")
        if not 0.0 <= self.dropout < 1.0:
            raise bad_setting(f"{owner}.dropout", self.dropout, "in [0, 1)")
        if self.positional not in ("rope", "sinusoidal", "none"):
            raise bad_setting(f"{owner}.positional", self.positional, "'rope', 'sinusoidal' or 'none'")
        if self.positional == "rope" and (self.d_model // self.heads) % 2:
            raise bad_setting(f"{owner}.d_model", self.d_model, "such that d_model / heads is even (RoPE)")


def masked_mean(h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, T, d), (B, T) True at real frames -> (B, d) mean over the real frames."""
    weights = mask.to(h.dtype)[:, :, None]
    return (h * weights).sum(1) / weights.sum(1).clamp(min=1.0)


class AttentionPooling(nn.Module):
    """Self-attention pooling: one learned score per frame, softmax over real frames, weighted sum."""

    def __init__(self, d_model: int) -> None:
        """
        Args:
            d_model: frame width.
        """
        super().__init__()
        self.score = nn.Linear(d_model, 1)

    def forward(self, h: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        weights = self.score(h).squeeze(-1).masked_fill(~mask, float("-inf")).softmax(dim=-1)  # (B, T)
        return (weights[:, :, None] * h).sum(1), weights


class AMSoftmaxHead(nn.Module):
    """Additive-margin softmax: s (cos theta - m) for the true class, s cos theta for the others."""

    def __init__(self, d_model: int, num_classes: int, margin: float, scale: float) -> None:
        """
        Args:
            d_model: feature width.
            num_classes: number of classes.
            margin: the additive margin m (the paper: 0.35-0.4).
            scale: the scale s (the paper: 30).
        """
        super().__init__()
        self.weight = nn.Parameter(torch.randn(num_classes, d_model) * 0.01)
        self.margin, self.scale = margin, scale

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        cos = F.normalize(x, dim=-1) @ F.normalize(self.weight, dim=-1).T  # (B, K) in [-1, 1]
        if labels is not None:  # training: subtract the margin at the true class
            cos = cos - self.margin * F.one_hot(labels, cos.shape[1]).to(cos.dtype)
        return self.scale * cos


class ConvModule(nn.Module):
    """Conformer's convolution module: LN, pointwise conv + GLU, depthwise conv, BatchNorm, SiLU, pointwise conv."""

    def __init__(self, d_model: int, kernel_size: int, dropout: float) -> None:
        """
        Args:
            d_model: frame width.
            kernel_size: depthwise kernel (odd: same length out).
            dropout: dropout at the output.
        """
        super().__init__()
        self.norm = nn.LayerNorm(d_model)
        self.pointwise_in = nn.Conv1d(d_model, 2 * d_model, 1)
        self.depthwise = nn.Conv1d(d_model, d_model, kernel_size, padding=kernel_size // 2, groups=d_model)
        self.batch_norm = nn.BatchNorm1d(d_model)
        self.pointwise_out, self.drop = nn.Conv1d(d_model, d_model, 1), nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.norm(x).transpose(1, 2)  # (B, d, T)
        h = F.glu(self.pointwise_in(h), dim=1).masked_fill(~mask[:, None, :], 0.0)  # padding zeroed: the depthwise
        # convolution sees zeros past the end, as if the sequence were alone
        h = F.silu(self.batch_norm(self.depthwise(h)))
        return self.drop(self.pointwise_out(h).transpose(1, 2))  # (B, T, d)


class ConformerBlock(nn.Module):
    """x + FFN/2, + MHSA, + Conv, + FFN/2, LayerNorm (Gulati et al. 2020, equation 1)."""

    def __init__(self, d_model: int, heads: int, d_ff: int, kernel_size: int, dropout: float, rope: bool) -> None:
        """
        Args:
            d_model: frame width.
            heads: attention heads.
            d_ff: feed-forward hidden width.
            kernel_size: depthwise convolution kernel.
            dropout: dropout rate.
            rope: rotary positions in the attention (the paper uses Transformer-XL's relative positions).
        """
        super().__init__()
        self.ff1, self.ff2 = (nn.Sequential(nn.LayerNorm(d_model), _feed_forward(d_model, d_ff, dropout)) for _ in "12")
        self.attn_norm, self.attn = nn.LayerNorm(d_model), MultiHeadAttention(d_model, heads, dropout, rope)
        self.conv, self.norm, self.drop = (
            ConvModule(d_model, kernel_size, dropout),
            nn.LayerNorm(d_model),
            nn.Dropout(dropout),
        )

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = x + 0.5 * self.drop(self.ff1(x))  # macaron: the first half-step feed-forward
        x = x + self.drop(self.attn(self.attn_norm(x), key_mask=mask)[0])
        x = x + self.conv(x, mask)
        x = x + 0.5 * self.drop(self.ff2(x))
        return self.norm(x)


class SequenceEncoder(nn.Module):
    """Frames (B, T, F) and a real-frame mask (B, T) -> (B, T, d_model), by the kind the spec names."""

    def __init__(self, spec: EncoderSpec, input_dim: int) -> None:
        """
        Args:
            spec: the encoder.
            input_dim: feature size F of one frame.
        """
        super().__init__()
        self.kind, d, rope = spec.kind, spec.d_model, spec.positional == "rope"
        self.sinusoidal = spec.positional == "sinusoidal"
        self.proj = nn.Linear(input_dim, d)
        if spec.kind in ("rnn", "lstm", "gru"):
            cls = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}[spec.kind]
            self.rnn = cls(d, d // 2, spec.layers, batch_first=True, bidirectional=True,
                           dropout=spec.dropout if spec.layers > 1 else 0.0)  # fmt: skip
        elif spec.kind == "conformer":
            self.blocks = nn.ModuleList(ConformerBlock(d, spec.heads, spec.d_ff, spec.kernel_size, spec.dropout, rope)
                                        for _ in range(spec.layers))  # fmt: skip
        else:
            self.blocks = nn.ModuleList(EncoderLayer(d, spec.heads, spec.d_ff, spec.dropout, rope, True)
                                        for _ in range(spec.layers))  # fmt: skip
            self.final_norm = nn.LayerNorm(d)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.proj(x)  # (B, T, d)
        if self.kind in ("rnn", "lstm", "gru"):
            packed = nn.utils.rnn.pack_padded_sequence(h, mask.sum(1).cpu(), batch_first=True, enforce_sorted=False)
            out, _ = self.rnn(packed)
            return nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])[0]
        if self.sinusoidal:  # absolute positions added; RoPE rotates inside the attention instead
            h = h + sinusoidal_encoding(x.shape[1], h.shape[-1]).to(h)
        if self.kind == "transformer":
            for block in self.blocks:
                h = block(h, key_mask=mask)[0]
            return self.final_norm(h)
        for block in self.blocks:  # conformer: order also enters through the depthwise convolution
            h = block(h, mask)
        return h
