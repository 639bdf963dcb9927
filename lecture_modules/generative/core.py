"""Pure pieces of the GAN family, tested without a Trainer.

* Networks: :class:`Generator` (DCGAN's transposed convolutions, z -> image in [-1, 1]) and :class:`Critic`
  (strided convolutions -> one score; batch norm (DCGAN), none (WGAN-GP: the penalty is per sample, so no batch
  norm) or spectral normalisation (SN-GAN)), both optionally class-conditional (the generator concatenates a label
  embedding to z; the critic adds a projection term <embed(y), h>, Miyato & Koyama 2018, arXiv 1802.05637).
* Losses: :func:`discriminator_loss` / :func:`generator_loss` for ``bce`` (non-saturating GAN), ``wasserstein``
  and ``hinge``; :func:`gradient_penalty` (WGAN-GP); :func:`clip_weights` (WGAN);
  :func:`largest_singular_value` (what spectral normalisation keeps at 1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from lecture_modules.base import bad_setting
from lecture_modules.nets import Spec

__all__ = [
    "LOSSES",
    "Critic",
    "GANSpec",
    "Generator",
    "clip_weights",
    "discriminator_loss",
    "generator_loss",
    "gradient_penalty",
    "largest_singular_value",
    "upsampling_plan",
]

LOSSES = ("bce", "wasserstein", "hinge")


def upsampling_plan(size: int) -> tuple[int, int]:
    """``(base, doublings)``: the smallest map the generator starts from (>= 4 px) and how often it doubles to reach
    ``size`` (16 -> (4, 2), 28 -> (7, 2), 64 -> (4, 4))."""
    base, doublings = size, 0
    while base % 2 == 0 and base // 2 >= 4:
        base, doublings = base // 2, doublings + 1
    return base, doublings


@dataclass(frozen=True)
class GANSpec(Spec):
    """The generator and critic of a DCGAN-style GAN.

    Attributes:
        width: channels of the critic's first convolution and of the generator's last hidden map; they double per
            resolution halving (DCGAN: 64 at 64x64).
        critic_norm: normalisation in the critic: ``batch`` (DCGAN), ``none`` (WGAN-GP) or ``spectral`` (SN-GAN).
    """

    width: int = 32
    critic_norm: Literal["batch", "none", "spectral"] = "batch"

    def validate(self, owner: str = "net") -> None:
        if self.width < 1:
            raise bad_setting(f"{owner}.width", self.width, ">= 1")
        if self.critic_norm not in ("batch", "none", "spectral"):
            raise bad_setting(f"{owner}.critic_norm", self.critic_norm, "'batch', 'none' or 'spectral'")


class Generator(nn.Module):
    """z (B, latent_dim) [+ label] -> Linear -> (B, C0, base, base) -> [upsample x2 -> Conv 3x3 -> BN -> ReLU] ... ->
    Conv 3x3 -> tanh: images (B, C, size, size) in [-1, 1] (Radford et al. 2015, arXiv 1511.06434, with DCGAN's
    strided transposed convolutions replaced by resize-convolutions, which avoid their checkerboard speckle:
    Odena et al. 2016, distill.pub/2016/deconv-checkerboard)."""

    def __init__(self, latent_dim: int, image_shape: tuple[int, int, int], width: int, num_classes: int = 0) -> None:
        super().__init__()
        channels, size = image_shape[0], image_shape[1]
        base, doublings = upsampling_plan(size)
        self.latent_dim, self.base = latent_dim, base
        self.embed = nn.Embedding(num_classes, latent_dim) if num_classes else None
        top = width * 2 ** max(doublings - 1, 0)
        self.project = nn.Sequential(
            nn.Linear(latent_dim * (2 if num_classes else 1), top * base * base, bias=False),
            nn.BatchNorm1d(top * base * base),
            nn.ReLU(inplace=True),
        )
        layers: list[nn.Module] = []
        ch = top
        for i in range(doublings):
            out = ch // 2 if i < doublings - 1 else ch
            layers += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(ch, out, 3, 1, 1, bias=False),
                       nn.BatchNorm2d(out), nn.ReLU(True)]  # fmt: skip
            ch = out
        layers += [nn.Conv2d(ch, channels, 3, 1, 1), nn.Tanh()]
        self.body = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.embed is not None:
            z = torch.cat([z, self.embed(labels)], dim=1)  # (B, 2 * latent_dim)
        h = self.project(z).view(len(z), -1, self.base, self.base)  # (B, C0, base, base)
        return self.body(h)  # (B, C, size, size)


class Critic(nn.Module):
    """Images (B, C, H, W) -> [Conv 4x4 stride 2 -> norm -> LeakyReLU 0.2] per halving -> flatten -> Linear: one
    score per image (B,); with labels, plus the projection <embed(y), h> (arXiv 1802.05637)."""

    def __init__(self, image_shape: tuple[int, int, int], width: int, norm: str, num_classes: int = 0) -> None:
        super().__init__()
        wrap = spectral_norm if norm == "spectral" else (lambda m: m)
        base, doublings = upsampling_plan(image_shape[1])
        layers: list[nn.Module] = []
        ch_in, ch = image_shape[0], width
        for i in range(max(doublings, 1)):
            stride = 2 if doublings else 1
            layers.append(wrap(nn.Conv2d(ch_in, ch, 4 if doublings else 3, stride, 1, bias=norm != "batch")))
            if norm == "batch" and i > 0:  # DCGAN: no batch norm on the first layer
                layers.append(nn.BatchNorm2d(ch))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            ch_in, ch = ch, ch * 2
        self.features = nn.Sequential(*layers, nn.Flatten())  # (B, ch_in * base * base)
        feature_dim = ch_in * base * base
        self.score = wrap(nn.Linear(feature_dim, 1))
        self.embed = wrap(nn.Embedding(num_classes, feature_dim)) if num_classes else None

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        h = self.features(x)  # (B, D)
        out = self.score(h).squeeze(1)  # (B,)
        if self.embed is not None:
            out = out + (self.embed(labels) * h).sum(dim=1)  # projection discriminator
        return out


# ---------------------------------------------------------------------------------------------------- losses
def discriminator_loss(real: torch.Tensor, fake: torch.Tensor, loss: str) -> torch.Tensor:
    """The critic's loss from its scores on real and fake images (each (B,)).

    ``bce``: -log D(x) - log(1 - D(G(z))) (Goodfellow et al. 2014); ``wasserstein``: E[f(G(z))] - E[f(x)]
    (Arjovsky et al. 2017); ``hinge``: E[relu(1 - f(x))] + E[relu(1 + f(G(z)))] (SN-GAN's loss).
    """
    if loss == "bce":
        return F.binary_cross_entropy_with_logits(real, torch.ones_like(real)) + F.binary_cross_entropy_with_logits(
            fake, torch.zeros_like(fake)
        )
    if loss == "wasserstein":
        return fake.mean() - real.mean()
    if loss == "hinge":
        return F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean()
    raise ValueError(f"unknown GAN loss {loss!r}; known: {LOSSES}")


def generator_loss(fake: torch.Tensor, loss: str) -> torch.Tensor:
    """The generator's loss from the critic's scores on its images (B,): non-saturating -log D(G(z)) for ``bce``,
    -E[f(G(z))] for ``wasserstein`` and ``hinge``."""
    if loss == "bce":
        return F.binary_cross_entropy_with_logits(fake, torch.ones_like(fake))
    if loss in ("wasserstein", "hinge"):
        return -fake.mean()
    raise ValueError(f"unknown GAN loss {loss!r}; known: {LOSSES}")


def gradient_penalty(
    critic: nn.Module, real: torch.Tensor, fake: torch.Tensor, labels: torch.Tensor | None = None
) -> torch.Tensor:
    """WGAN-GP's penalty E[(||grad_x f(x_hat)||_2 - 1)^2] at x_hat = eps x + (1 - eps) G(z), eps ~ U[0, 1] per
    sample (Gulrajani et al. 2017, arXiv 1704.00028); differentiable in the critic's weights."""
    eps = torch.rand(len(real), *([1] * (real.dim() - 1)), device=real.device, dtype=real.dtype)  # (B, 1, 1, 1)
    mixed = (eps * real + (1 - eps) * fake).requires_grad_(True)
    scores = critic(mixed) if labels is None else critic(mixed, labels)  # (B,)
    (grad,) = torch.autograd.grad(scores.sum(), mixed, create_graph=True)
    return ((grad.flatten(1).norm(dim=1) - 1.0) ** 2).mean()


@torch.no_grad()
def clip_weights(module: nn.Module, clip: float) -> None:
    """WGAN's Lipschitz constraint: every parameter clamped to [-clip, clip] in place (Arjovsky et al. 2017)."""
    for p in module.parameters():
        p.clamp_(-clip, clip)


@torch.no_grad()
def largest_singular_value(weight: torch.Tensor) -> float:
    """sigma_max of ``weight`` reshaped to (out, -1): the operator norm spectral normalisation divides by."""
    return float(torch.linalg.matrix_norm(weight.reshape(weight.shape[0], -1), ord=2))
