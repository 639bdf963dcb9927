"""Input-transformation defences applied at test time, and the wrapper that puts one in front of a classifier.

Each transform maps [0, 1] images to [0, 1] images and says whether gradients pass through it (``differentiable``):

* JPEG re-encoding at a quality (PIL; Das et al. 2017, arXiv 1705.02900; Guo et al. 2018, arXiv 1711.00117): not
  differentiable (it leaves autograd).
* Bit-depth reduction (feature squeezing, Xu et al. 2018, arXiv 1704.01155): piecewise constant, its gradient is
  zero almost everywhere: marked not differentiable.
* Median smoothing over a k x k window (Xu et al. 2018): differentiable (the median selects one input).

A non-differentiable defence *masks* gradients: a white-box attack through it sees zero or no gradient and looks
defeated. Athalye et al. (2018, arXiv 1802.00420) break such defences with BPDA: use the transform in the forward
pass and the identity in the backward pass. ``InputTransformDefence(..., bpda=True)`` is that adaptive attacker's
view of the same defence; report robust accuracy against it, not only against the masked gradient.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["DEFENCES", "BitDepth", "InputTransformDefence", "JpegCompression", "MedianSmoothing", "make_defence"]


class JpegCompression(nn.Module):
    """Re-encode each image as a JPEG of ``quality`` (1-95) with PIL and decode it (grey or RGB)."""

    differentiable = False

    def __init__(self, quality: int = 75) -> None:
        super().__init__()
        if not 1 <= quality <= 95:
            raise ValueError(f"JPEG quality must be in 1..95, got {quality}")
        self.quality = quality

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from PIL import Image

        pixels = (x.detach().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()  # (B, C, H, W)
        out = []
        for image in pixels:
            channels = image.shape[0]
            pil = Image.fromarray(image[0] if channels == 1 else image.transpose(1, 2, 0))
            buffer = io.BytesIO()
            pil.save(buffer, format="JPEG", quality=self.quality)
            decoded = np.asarray(Image.open(io.BytesIO(buffer.getvalue())))
            out.append(decoded[None] if channels == 1 else decoded.transpose(2, 0, 1))
        return torch.from_numpy(np.stack(out)).to(x.device, x.dtype) / 255.0


class BitDepth(nn.Module):
    """Keep ``bits`` bits per channel: round(x (2^bits - 1)) / (2^bits - 1)."""

    differentiable = False

    def __init__(self, bits: int = 4) -> None:
        super().__init__()
        if not 1 <= bits <= 8:
            raise ValueError(f"bit depth must be in 1..8, got {bits}")
        self.levels = 2**bits - 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.round(x * self.levels) / self.levels


class MedianSmoothing(nn.Module):
    """The median of each ``kernel`` x ``kernel`` window (reflect padding), per channel."""

    differentiable = True

    def __init__(self, kernel: int = 3) -> None:
        super().__init__()
        if kernel < 1 or kernel % 2 == 0:
            raise ValueError(f"median kernel must be an odd number >= 1, got {kernel}")
        self.kernel = kernel

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, (b, c, h, w) = self.kernel, x.shape
        padded = F.pad(x, (k // 2,) * 4, mode="reflect")  # (B, C, H + k - 1, W + k - 1)
        windows = F.unfold(padded, k).reshape(b, c, k * k, h * w)  # (B, C, k*k, H*W)
        return windows.median(dim=2).values.reshape(b, c, h, w)


DEFENCES: dict[str, Callable[[int], nn.Module]] = {
    "jpeg": JpegCompression,
    "bit_depth": BitDepth,
    "median": MedianSmoothing,
}
"""Defence name -> transform class; its one argument (quality, bits, kernel) is the defence's strength."""


def make_defence(name: str, strength: int) -> nn.Module:
    """``make_defence("jpeg", 75)``, ``("bit_depth", 4)``, ``("median", 3)``."""
    if name not in DEFENCES:
        raise ValueError(f"unknown defence {name!r}; known: {', '.join(DEFENCES)}")
    return DEFENCES[name](strength)


class InputTransformDefence(nn.Module):
    """A classifier on [0, 1] images behind an input transform: ``model(normalize(transform(x)))``.

    Attributes:
        differentiable: whether gradients with respect to ``x`` are meaningful: the transform's own flag, or True
            with ``bpda`` (whose gradient is the identity approximation, not the transform's).
    """

    def __init__(
        self,
        model: nn.Module,
        transform: nn.Module,
        *,
        normalize: Callable[[torch.Tensor], torch.Tensor] | None = None,
        bpda: bool = False,
    ) -> None:
        """
        Args:
            model: the classifier, taking normalised inputs.
            transform: a [0, 1] -> [0, 1] transform with a ``differentiable`` flag (see :data:`DEFENCES`).
            normalize: [0, 1] pixels -> the model's inputs (None: the model takes pixels).
            bpda: backward pass differentiable approximation: the transform forward, the identity backward.
        """
        super().__init__()
        self.model, self.transform, self.normalize, self.bpda = model, transform, normalize, bpda
        self.mode: Literal["masked", "bpda", "exact"] = (
            "bpda" if bpda else "exact" if getattr(transform, "differentiable", False) else "masked"
        )

    @property
    def differentiable(self) -> bool:
        return self.mode != "masked"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        defended = self.transform(x)
        if self.bpda:
            defended = x + (defended - x).detach()  # forward: transform(x); backward: identity
        inputs = self.normalize(defended) if self.normalize is not None else defended
        return self.model(inputs)
