"""A small UNet noise predictor eps_theta(x_t, t [, y]) for DDPM at 16-64 px (Ho et al. 2020's architecture,
shrunk: residual blocks with GroupNorm and a sinusoidal time embedding, no attention), with an optional class
embedding whose extra index is the "no label" of classifier-free guidance (Ho & Salimans 2022, arXiv 2207.12598).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lecture_modules.base import bad_setting
from lecture_modules.nets import Spec

__all__ = ["UNet", "UNetSpec", "timestep_embedding"]


@dataclass(frozen=True)
class UNetSpec(Spec):
    """The noise predictor.

    Attributes:
        channels: channels at full resolution (multiples of 8: GroupNorm uses 8 groups).
        multipliers: channel multiplier per resolution; the map halves between consecutive entries.
        dropout: dropout in the residual blocks, in [0, 1).
    """

    channels: int = 32
    multipliers: tuple[int, ...] = (1, 2, 2)
    dropout: float = 0.0

    def validate(self, owner: str = "net") -> None:
        if self.channels < 8 or self.channels % 8:
            raise bad_setting(f"{owner}.channels", self.channels, "a multiple of 8, >= 8")
        if not self.multipliers or min(self.multipliers) < 1:
            raise bad_setting(f"{owner}.multipliers", self.multipliers, "a non-empty list of positive integers")
        if not 0.0 <= self.dropout < 1.0:
            raise bad_setting(f"{owner}.dropout", self.dropout, "in [0, 1)")


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Transformer-style sinusoidal embedding of integer timesteps (B,) -> (B, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    angles = t.float()[:, None] * freqs[None]  # (B, half)
    return torch.cat([angles.sin(), angles.cos()], dim=1)


class _ResBlock(nn.Module):
    def __init__(self, ch_in: int, ch_out: int, emb_dim: int, dropout: float) -> None:
        super().__init__()
        self.norm1, self.conv1 = nn.GroupNorm(8, ch_in), nn.Conv2d(ch_in, ch_out, 3, padding=1)
        self.emb = nn.Linear(emb_dim, ch_out)
        self.norm2, self.conv2 = nn.GroupNorm(8, ch_out), nn.Conv2d(ch_out, ch_out, 3, padding=1)
        self.drop = nn.Dropout(dropout)
        self.skip = nn.Conv2d(ch_in, ch_out, 1) if ch_in != ch_out else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))  # (B, ch_out, H, W)
        h = h + self.emb(emb)[:, :, None, None]  # the time (and class) embedding, per channel
        h = self.conv2(self.drop(F.silu(self.norm2(h))))
        return h + self.skip(x)


class UNet(nn.Module):
    """eps_theta: (x_t (B, C, H, W), t (B,), labels (B,) or None) -> predicted noise (B, C, H, W)."""

    def __init__(self, image_shape: tuple[int, int, int], spec: UNetSpec, num_classes: int = 0) -> None:
        super().__init__()
        ch, emb_dim = spec.channels, spec.channels * 4
        self.emb_ch = ch
        self.time = nn.Sequential(nn.Linear(ch, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.num_classes = num_classes
        self.label = nn.Embedding(num_classes + 1, emb_dim) if num_classes else None  # index num_classes: no label
        self.stem = nn.Conv2d(image_shape[0], ch, 3, padding=1)
        widths = [ch * m for m in spec.multipliers]
        self.down, self.pool = nn.ModuleList(), nn.ModuleList()
        prev = ch
        for i, width in enumerate(widths):
            self.down.append(_ResBlock(prev, width, emb_dim, spec.dropout))
            self.pool.append(nn.Conv2d(width, width, 3, stride=2, padding=1) if i < len(widths) - 1 else nn.Identity())
            prev = width
        self.middle = _ResBlock(prev, prev, emb_dim, spec.dropout)
        self.up = nn.ModuleList()
        for width in reversed(widths):
            self.up.append(_ResBlock(prev + width, width, emb_dim, spec.dropout))
            prev = width
        self.out = nn.Sequential(nn.GroupNorm(8, prev), nn.SiLU(), nn.Conv2d(prev, image_shape[0], 3, padding=1))

    def forward(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        emb = self.time(timestep_embedding(t, self.emb_ch))  # (B, 4 ch)
        if self.label is not None:
            labels = torch.full_like(t, self.num_classes) if labels is None else labels
            emb = emb + self.label(labels)
        h, skips = self.stem(x), []
        for block, pool in zip(self.down, self.pool, strict=True):
            h = block(h, emb)
            skips.append(h)
            h = pool(h)  # halves the map, except after the last level
        h = self.middle(h, emb)
        for block in self.up:
            skip = skips.pop()
            if h.shape[-1] != skip.shape[-1]:
                h = F.interpolate(h, size=skip.shape[-2:], mode="nearest")  # back to the skip's resolution
            h = block(torch.cat([h, skip], dim=1), emb)
        return self.out(h)
