"""Variational autoencoder — lecture 6: reparameterisation, the ELBO with beta, and the IWAE bound in nats.

Kingma & Welling 2014 (arXiv 1312.6114); beta-VAE (Higgins et al. 2017); IWAE bound (Burda et al. 2016, arXiv
1509.00519). For a batch x (pixels in [0, 1]; binarised with ``likelihood: bernoulli``), :meth:`VAE.training_step`:

1. Encoder: (mu, log sigma^2) = q_phi(x); z = mu + sigma * eps, eps ~ N(0, I) (the reparameterisation trick).
2. Decoder: p_theta(x | z), Bernoulli logits (binarised data) or a Gaussian with one learned scale.
3. ELBO = E_q[log p(x | z)] - beta KL(q(z | x) || N(0, I)) (KL in closed form); loss = -ELBO per image, in nats.

Validation and test report ``<stage>/elbo`` and ``<stage>/iwae`` (log (1/k) sum_i p(x, z_i) / q(z_i | x),
z_i ~ q, k = ``iwae_samples``): both lower bounds on log p(x), the IWAE one tighter for k > 1 (in expectation).
Figures: reconstructions, the shell's prior samples, and the 2-D latent space coloured by class when the code is 2-D.

Run: ``python cli.py fit --config configs/vae.yaml``
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanMetric

from lecture_modules.base import bad_setting
from lecture_modules.generative.figures import grid_figure, latent_figure
from lecture_modules.generative.shell import GenerativeModule

__all__ = ["VAE", "gaussian_kl", "importance_bounds", "iwae_bound", "log_likelihood"]

LOG_2PI = math.log(2 * math.pi)


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, diag exp(logvar)) || N(0, I)) per sample (B,): 0.5 sum(mu^2 + sigma^2 - log sigma^2 - 1)."""
    return 0.5 * (mu.pow(2) + logvar.exp() - logvar - 1).sum(dim=1)


def log_likelihood(x: torch.Tensor, out: torch.Tensor, likelihood: str, log_scale: torch.Tensor) -> torch.Tensor:
    """log p(x | z) per sample (B,), summed over pixels: Bernoulli with logits ``out``, or Gaussian with mean
    ``out`` and standard deviation exp(log_scale)."""
    if likelihood == "bernoulli":
        return -F.binary_cross_entropy_with_logits(out, x, reduction="none").flatten(1).sum(1)
    var_term = 2 * log_scale + LOG_2PI
    return -0.5 * (((x - out) / log_scale.exp()) ** 2 + var_term).flatten(1).sum(1)


def _log_normal(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log N(z; mu, diag exp(logvar)) summed over the last dimension."""
    return -0.5 * ((z - mu) ** 2 / logvar.exp() + logvar + LOG_2PI).sum(-1)


def iwae_bound(
    x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, decode, likelihood: str, log_scale: torch.Tensor, k: int
) -> torch.Tensor:
    """The importance-weighted bound log (1/k) sum_i p(x | z_i) p(z_i) / q(z_i | x), z_i ~ q(z | x), per sample (B,)
    (k = 1 is one-sample ELBO)."""
    z = mu + (0.5 * logvar).exp() * torch.randn(k, *mu.shape, device=mu.device)  # (k, B, D)
    return torch.logsumexp(_log_weights(x, z, mu, logvar, decode, likelihood, log_scale), dim=0) - math.log(k)


def _log_weights(x, z, mu, logvar, decode, likelihood: str, log_scale: torch.Tensor) -> torch.Tensor:
    """log w_i = log p(x | z_i) + log p(z_i) - log q(z_i | x) for draws z (k, B, D): (k, B)."""
    k = len(z)
    out = decode(z.flatten(0, 1)).unflatten(0, (k, len(x)))  # (k, B, C, H, W)
    log_px = torch.stack([log_likelihood(x, out[i], likelihood, log_scale) for i in range(k)])  # (k, B)
    return log_px + _log_normal(z, torch.zeros_like(mu), torch.zeros_like(logvar)) - _log_normal(z, mu, logvar)


@torch.no_grad()
def importance_bounds(
    x: torch.Tensor,
    mu: torch.Tensor,
    logvar: torch.Tensor,
    decode,
    likelihood: str,
    log_scale: torch.Tensor,
    k: int,
    chunk: int = 500,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Both test bounds on log p(x) from the same k importance samples z_i ~ q(z | x), per image (B,), in nats,
    drawn ``chunk`` at a time so k = 5000 (the IWAE paper's evaluation) fits in memory:

    * ELBO ~ (1/k) sum_i log w_i (a k-sample Monte Carlo estimate of the ELBO),
    * IWAE_k = log (1/k) sum_i w_i, with w_i = p(x | z_i) p(z_i) / q(z_i | x) (a running log-sum-exp).

    With ``chunk >= k`` the draws are :func:`iwae_bound`'s (one ``randn`` of (k, B, D)).
    """
    total_lse = torch.full((len(x),), -math.inf, device=x.device)
    total_mean = torch.zeros(len(x), device=x.device)
    std = (0.5 * logvar).exp()
    for start in range(0, k, chunk):
        c = min(chunk, k - start)
        eps = torch.randn(c, *mu.shape, generator=generator).to(mu)  # (c, B, D)
        log_w = _log_weights(x, mu + std * eps, mu, logvar, decode, likelihood, log_scale)  # (c, B)
        total_lse = torch.logaddexp(total_lse, torch.logsumexp(log_w, dim=0))
        total_mean += log_w.sum(dim=0)
    return total_mean / k, total_lse - math.log(k)


class _Encoder(nn.Module):
    def __init__(self, image_shape: tuple[int, int, int], width: int, latent_dim: int) -> None:
        super().__init__()
        c, h, w = image_shape
        self.body = nn.Sequential(
            nn.Conv2d(c, width, 4, 2, 1), nn.ReLU(True), nn.Conv2d(width, 2 * width, 4, 2, 1), nn.ReLU(True),
            nn.Flatten(), nn.Linear(2 * width * (h // 4) * (w // 4), 256), nn.ReLU(True),
            nn.Linear(256, 2 * latent_dim),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.body(x).chunk(2, dim=1)  # (B, D) each
        return mu, logvar


class _Decoder(nn.Module):
    def __init__(self, image_shape: tuple[int, int, int], width: int, latent_dim: int) -> None:
        super().__init__()
        c, h, w = image_shape
        self.shape = (2 * width, h // 4, w // 4)
        self.project = nn.Sequential(nn.Linear(latent_dim, 256), nn.ReLU(True), nn.Linear(256, math.prod(self.shape)))
        self.body = nn.Sequential(
            nn.ReLU(True), nn.ConvTranspose2d(2 * width, width, 4, 2, 1), nn.ReLU(True),
            nn.ConvTranspose2d(width, c, 4, 2, 1),
        )  # fmt: skip

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.body(self.project(z).view(len(z), *self.shape))  # (B, C, H, W): logits or means


class VAE(GenerativeModule):
    """Variational autoencoder with beta, the IWAE bound in nats, reconstructions and 2-D latents (lecture 6)."""

    lr_setting = "model.init_args.lr"

    def __init__(
        self,
        num_classes: int = 10,
        input_shape: tuple[int, int, int] = (1, 16, 16),
        latent_dim: int = 16,
        width: int = 32,
        beta: float = 1.0,
        likelihood: Literal["bernoulli", "gaussian"] = "bernoulli",
        iwae_samples: int = 50,
        lr: float = 1e-3,
        **kwargs: Any,
    ) -> None:
        """
        Args:
            num_classes: number of classes (linked from the DataModule by the CLI; colours the latent plot).
            input_shape: (channels, height, width) of one image (linked from the DataModule by the CLI); H and W
                divisible by 4.
            latent_dim: dimension of the code z (2 draws the latent space).
            width: channels of the first convolution (the second has twice as many).
            beta: weight of the KL term (1: the ELBO; beta-VAE: > 1).
            likelihood: ``bernoulli`` on pixels binarised stochastically (the published MNIST setting; nats
                comparable) or ``gaussian`` with one learned scale on [0, 1] pixels.
            iwae_samples: k of the IWAE bound reported in validation and test (Burda et al.: 5000 for the final
                numbers; 50 here).
            lr: Adam's learning rate.
            **kwargs: the sample-quality settings of :class:`~lecture_modules.generative.shell.GenerativeModule`.
        """
        super().__init__(**kwargs)
        if latent_dim < 1:
            raise bad_setting("latent_dim", latent_dim, ">= 1")
        if input_shape[1] % 4 or input_shape[2] % 4:
            raise bad_setting("input_shape", input_shape, "(C, H, W) with H and W divisible by 4 (data.image_size)")
        for name, value, allowed in (("beta", beta, ">= 0"), ("lr", lr, "> 0"), ("width", width, ">= 1")):
            if not (value >= 0 if name == "beta" else value > 0):
                raise bad_setting(name, value, allowed)
        if likelihood not in ("bernoulli", "gaussian"):
            raise bad_setting("likelihood", likelihood, "'bernoulli' or 'gaussian'")
        if iwae_samples < 1:
            raise bad_setting("iwae_samples", iwae_samples, ">= 1")
        self.save_hyperparameters()
        self.encoder = _Encoder(tuple(input_shape), width, latent_dim)
        self.decoder = _Decoder(tuple(input_shape), width, latent_dim)
        self.log_scale = nn.Parameter(torch.zeros(()), requires_grad=likelihood == "gaussian")
        self.init_sampling(latent_dim, num_classes)
        for stage in ("val", "test"):
            setattr(self, f"{stage}_elbo", MeanMetric())
            setattr(self, f"{stage}_iwae", MeanMetric())
        self._latents: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._recon: torch.Tensor | None = None

    def pixels(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Batches in [-1, 1] -> the modelled pixels: [0, 1], binarised by a Bernoulli draw for the Bernoulli
        likelihood (the IWAE paper's stochastic binarisation)."""
        x01 = ((x + 1) / 2).clamp(0, 1)
        if self.hparams.likelihood != "bernoulli":
            return x01
        if generator is None:
            return torch.bernoulli(x01)
        return (torch.rand(x01.shape, generator=generator) < x01.cpu()).to(x01)

    # ------------------------------------------------------------------ the algorithm
    def elbo_terms(self, x01: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Steps 1-3 per sample: (log p(x | z) (B,), KL (B,), mu, logvar)."""
        mu, logvar = self.encoder(x01 * 2 - 1)  # 1. (B, D) each
        z = mu + (0.5 * logvar).exp() * torch.randn_like(mu)  # reparameterisation
        out = self.decoder(z)  # 2. (B, C, H, W)
        return log_likelihood(x01, out, self.hparams.likelihood, self.log_scale), gaussian_kl(mu, logvar), mu, logvar

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x01 = self.pixels(batch[0])
        log_px, kl, _, _ = self.elbo_terms(x01)
        terms = {"reconstruction": -log_px.mean(), "kl": self.hparams.beta * kl.mean()}  # 3. -ELBO, nats per image
        return self.combine_losses(terms)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam([p for p in self.parameters() if p.requires_grad], lr=self.hparams.lr)

    # ------------------------------------------------------------------ evaluation: bounds in nats
    def _evaluate(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int, stage: str) -> None:
        x, y = batch
        x01 = self.pixels(x, torch.Generator().manual_seed(batch_idx))  # the same binarisation every epoch
        with torch.random.fork_rng(devices=[]):  # the bounds' own noise: the training's RNG stays untouched
            torch.manual_seed(batch_idx)
            log_px, kl, mu, logvar = self.elbo_terms(x01)
            iwae = iwae_bound(x01, mu, logvar, self.decoder, self.hparams.likelihood, self.log_scale,
                              self.hparams.iwae_samples)  # fmt: skip
        getattr(self, f"{stage}_elbo").update(log_px - kl)
        getattr(self, f"{stage}_iwae").update(iwae)
        self.log(f"{stage}/elbo", getattr(self, f"{stage}_elbo"), prog_bar=True)
        self.log(f"{stage}/iwae", getattr(self, f"{stage}_iwae"))
        if stage == "val" and batch_idx == 0:
            self._recon = torch.cat([x01[:8], torch.sigmoid(self.decoder(mu[:8])) if self.hparams.likelihood ==
                                     "bernoulli" else self.decoder(mu[:8])])  # fmt: skip
        if stage == "val" and self.hparams.latent_dim == 2:
            self._latents.append((mu.cpu(), y.cpu()))

    @torch.no_grad()
    def test_bounds(
        self, x01: torch.Tensor, k: int, batch_size: int = 100, chunk: int = 500, seed: int = 0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """ELBO and IWAE_k (:func:`importance_bounds`) of each image of ``x01`` (N, C, H, W), already in the
        modelled pixels (binarised for the Bernoulli likelihood: :meth:`pixels`), in nats per image, (N,) each;
        the importance samples come from their own generator seeded with ``seed``."""
        was_training = self.training
        self.eval()
        gen = torch.Generator().manual_seed(seed)
        elbos, iwaes = [], []
        for xb in x01.split(batch_size):
            xb = xb.to(self.device)
            mu, logvar = self.encoder(xb * 2 - 1)
            elbo, iwae = importance_bounds(xb, mu, logvar, self.decoder, self.hparams.likelihood, self.log_scale, k,
                                           chunk=chunk, generator=gen)  # fmt: skip
            elbos.append(elbo.cpu())
            iwaes.append(iwae.cpu())
        self.train(was_training)
        return torch.cat(elbos), torch.cat(iwaes)

    def validation_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, batch_idx, "val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, batch_idx, "test")

    def on_validation_epoch_end(self) -> None:
        super().on_validation_epoch_end()
        latents, self._latents = self._latents, []
        if self.trainer.sanity_checking or not self.trainer.is_global_zero:
            return
        if self._recon is not None:
            title = "top: data, bottom: reconstruction (decoder mean at mu)"
            self.log_figure("val/reconstructions", grid_figure(self._recon * 2 - 1, title))
        if latents:
            mu, y = (torch.cat(t) for t in zip(*latents, strict=True))
            self.log_figure("val/latent_2d", latent_figure(mu, y, "2-D code mu(x) of the validation images"))

    def sample(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Decoder means for codes z (B, latent_dim), as images in [-1, 1]."""
        with torch.no_grad():
            out = self.decoder(z)
        mean = torch.sigmoid(out) if self.hparams.likelihood == "bernoulli" else out.clamp(0, 1)
        return mean * 2 - 1
