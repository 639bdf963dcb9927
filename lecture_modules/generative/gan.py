"""GANs — lecture 6 and HW6: DCGAN, WGAN (weight clipping), WGAN-GP and SN-GAN, one training loop.

For each batch of real images x (and labels y when ``conditional``), :meth:`GAN.training_step` does:

1. Critic step: z ~ N(0, I); L_D = ``discriminator_loss``(D(x), D(G(z).detach())) [+ lambda * GP(D, x, G(z)), the
   gradient penalty of WGAN-GP, arXiv 1704.00028]; one optimiser step on D; then, for WGAN (arXiv 1701.07875),
   every weight of D is clipped to [-c, c]. SN-GAN (arXiv 1802.05957) keeps D 1-Lipschitz by spectral
   normalisation of every layer instead (``net.critic_norm: spectral``).
2. Every ``n_critic``-th batch, generator step: z ~ N(0, I); L_G = ``generator_loss``(D(G(z))) (non-saturating
   for DCGAN, -E[D(G(z))] for the Wasserstein and hinge losses); one optimiser step on G.

Variants (:class:`DCGAN`, :class:`WGAN`, :class:`WGANGP`, :class:`SNGAN`) change only defaults: the HW6 lines
(DCGAN: Radford et al. 2015, arXiv 1511.06434, z = 100, Adam 1e-4 / beta1 0.5; WGAN: RMSprop 5e-5, clip 0.01,
n_critic 5; WGAN-GP: Adam 1e-4, betas (0, 0.9), lambda 10, n_critic 5; SN-GAN: hinge loss, Adam 2e-4 / beta1 0.5).

Every validation epoch: a sample grid at fixed noise, a latent interpolation, and the quality metrics of
:mod:`.metrics` (``val/fid``, ``val/kid``, ``val/precision``, ``val/recall``, ``val/recognisable``) in the feature
space of ``metric_classifier``. ``predict`` generates ``data.init_args.num_generate`` images for the HW6 hand-in
(:class:`callbacks.generated_image_writer.GeneratedImageWriter`).

Run: ``python cli.py fit --config configs/dcgan.yaml`` (or wgan, wgan_gp, sngan)
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from lightning.pytorch.utilities import rank_zero_info

from lecture_modules.base import bad_setting
from lecture_modules.generative import core
from lecture_modules.generative.core import GANSpec
from lecture_modules.generative.shell import GenerativeModule

__all__ = ["DCGAN", "GAN", "SNGAN", "WGAN", "WGANGP"]

# Network defaults (frozen specs, shared safely): DCGAN's batch-normalised critic, WGAN-GP's plain one, SN-GAN's.
BATCH_NORM_NETS = GANSpec()
PLAIN_CRITIC_NETS = GANSpec(critic_norm="none")
SPECTRAL_NETS = GANSpec(critic_norm="spectral")


class GAN(GenerativeModule):
    """GANs (lecture 6, HW6): alternating critic and generator steps, n_critic configurable, optional labels."""

    lr_setting = "model.init_args.lr"

    def __init__(
        self,
        num_classes: int = 10,
        input_shape: tuple[int, int, int] = (1, 16, 16),
        net: GANSpec = BATCH_NORM_NETS,
        latent_dim: int = 100,
        loss: Literal["bce", "wasserstein", "hinge"] = "bce",
        n_critic: int = 1,
        clip: float | None = None,
        gp_weight: float = 0.0,
        conditional: bool = False,
        optimizer: Literal["adam", "rmsprop"] = "adam",
        lr: float = 1e-4,
        betas: tuple[float, float] = (0.5, 0.999),
        **kwargs: Any,
    ) -> None:
        """
        Args:
            num_classes: number of classes (linked from the DataModule by the CLI).
            input_shape: (channels, height, width) of one image (linked from the DataModule by the CLI).
            net: the generator and critic: width and the critic's normalisation (batch, none, spectral).
            latent_dim: dimension of the noise z (DCGAN / HW6: 100).
            loss: ``bce`` (non-saturating GAN), ``wasserstein`` (WGAN, WGAN-GP) or ``hinge`` (SN-GAN).
            n_critic: critic steps per generator step (WGAN: 5).
            clip: WGAN's weight clipping: every critic weight is kept in [-clip, clip] (null: no clipping).
            gp_weight: lambda of WGAN-GP's gradient penalty (0: none; the paper: 10).
            conditional: condition G and D on the class (label embedding in G, projection discriminator).
            optimizer: ``adam`` (DCGAN, WGAN-GP, SN-GAN) or ``rmsprop`` (WGAN), one for G and one for D.
            lr: learning rate of both optimisers.
            betas: Adam's (beta1, beta2) (DCGAN: (0.5, 0.999); WGAN-GP: (0.0, 0.9)); ignored by RMSprop.
            **kwargs: the sample-quality settings of :class:`~lecture_modules.generative.shell.GenerativeModule`.
        """
        super().__init__(**kwargs)
        net = GANSpec.of(net, owner="net")
        _check_gan_settings(loss, n_critic, clip, gp_weight, lr, betas, latent_dim)
        self.save_hyperparameters(ignore=["net"])
        self.hparams["net"] = net.as_dict()  # plain data: the checkpoint stays weights_only
        self.automatic_optimization = False
        classes = num_classes if conditional else 0
        self.generator = core.Generator(latent_dim, tuple(input_shape), net.width, num_classes=classes)
        self.critic = core.Critic(tuple(input_shape), net.width, net.critic_norm, num_classes=classes)
        self.init_sampling(latent_dim, num_classes)

    # ------------------------------------------------------------------ the algorithm
    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        hp = self.hparams
        x, y = batch  # (B, C, H, W) in [-1, 1], (B,)
        if len(x) < 2:  # an epoch's last batch of one (N % batch_size == 1): batch norm cannot normalise it
            return
        labels = y if hp.conditional else None
        opt_g, opt_d = self.optimizers()
        # 1. critic step
        fake = self.generator(self.noise(len(x)), labels).detach()  # (B, C, H, W)
        terms = {"d_" + hp.loss: core.discriminator_loss(self.critic(x, labels), self.critic(fake, labels), hp.loss)}
        if hp.gp_weight > 0:
            terms["gp"] = hp.gp_weight * core.gradient_penalty(self.critic, x, fake, labels)
        self._step(opt_d, self.combine_losses(terms))
        if hp.clip is not None:
            core.clip_weights(self.critic, hp.clip)
        # 2. generator step, every n_critic-th batch
        if self.trainer.fit_loop.total_batch_idx % hp.n_critic == 0:
            scores = self.critic(self.generator(self.noise(len(x)), labels), labels)  # (B,)
            g_loss = core.generator_loss(scores, hp.loss)
            self.check_finite({"g": g_loss})
            self._step(opt_g, g_loss)
            self.log("train/loss_g", g_loss.detach(), on_step=True, on_epoch=False)

    def setup(self, stage: str) -> None:
        super().setup(stage)
        ddp_kwargs = getattr(self.trainer.strategy, "_ddp_kwargs", None) if self._trainer is not None else None
        if ddp_kwargs is not None and not ddp_kwargs.get("find_unused_parameters"):
            # Before DDP wraps the module (strategy.setup runs after this hook): the critic step's backward leaves G
            # unused, so plain `strategy: ddp` would stop at the next step (as ddp_find_unused_parameters_true).
            ddp_kwargs["find_unused_parameters"] = True
            rank_zero_info("GAN under DDP: find_unused_parameters=True (the critic step does not use the generator)")

    def _step(self, optimizer, loss: torch.Tensor) -> None:
        optimizer.zero_grad()
        self.manual_backward(loss)
        optimizer.step()

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        hp = self.hparams
        if hp.optimizer == "rmsprop":
            make = lambda params: torch.optim.RMSprop(params, lr=hp.lr)  # noqa: E731
        else:
            make = lambda params: torch.optim.Adam(params, lr=hp.lr, betas=tuple(hp.betas))  # noqa: E731
        return [make(self.generator.parameters()), make(self.critic.parameters())]

    def sample(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Images (B, C, H, W) in [-1, 1] from noise z (B, latent_dim), in eval mode (batch-norm running stats)."""
        was_training = self.generator.training
        self.generator.eval()
        with torch.no_grad():
            images = self.generator(z, labels if self.hparams.conditional else None)
        self.generator.train(was_training)
        return images


def _check_gan_settings(loss, n_critic, clip, gp_weight, lr, betas, latent_dim) -> None:
    """SettingError naming ``model.init_args.<name>`` for a GAN setting out of range."""
    if loss not in core.LOSSES:
        raise bad_setting("loss", loss, f"one of {', '.join(core.LOSSES)}")
    if n_critic < 1:
        raise bad_setting("n_critic", n_critic, ">= 1 (critic steps per generator step)")
    if clip is not None and not clip > 0:
        raise bad_setting("clip", clip, "> 0 (WGAN's clipping range [-clip, clip]) or null (no clipping)")
    if not gp_weight >= 0:
        raise bad_setting("gp_weight", gp_weight, ">= 0")
    if not lr > 0:
        raise bad_setting("lr", lr, "> 0")
    if len(betas) != 2 or not all(0 <= b < 1 for b in betas):
        raise bad_setting("betas", betas, "two numbers in [0, 1)")
    if latent_dim < 1:
        raise bad_setting("latent_dim", latent_dim, ">= 1")


class DCGAN(GAN):
    """DCGAN (Radford et al. 2015, arXiv 1511.06434; HW6's sample): BCE loss, batch norm, Adam 1e-4 / beta1 0.5."""


class WGAN(GAN):
    """WGAN with weight clipping (Arjovsky et al. 2017, arXiv 1701.07875; HW6 medium): RMSprop, clip 0.01.

    The critic takes 5 steps per generator step (n_critic)."""

    def __init__(
        self,
        loss: Literal["bce", "wasserstein", "hinge"] = "wasserstein",
        n_critic: int = 5,
        clip: float | None = 0.01,
        optimizer: Literal["adam", "rmsprop"] = "rmsprop",
        lr: float = 5e-5,
        **kwargs: Any,
    ) -> None:
        """
        Args:
            loss: the Wasserstein critic loss.
            n_critic: critic steps per generator step (the paper: 5).
            clip: weight clipping range (the paper: 0.01).
            optimizer: RMSprop (the paper: momentum-based optimisers destabilise the clipped critic).
            lr: the paper's 5e-5.
            **kwargs: the other :class:`GAN` arguments.
        """
        super().__init__(loss=loss, n_critic=n_critic, clip=clip, optimizer=optimizer, lr=lr, **kwargs)


class WGANGP(GAN):
    """WGAN-GP (Gulrajani et al. 2017, arXiv 1704.00028): gradient penalty 10, no batch norm in the critic.

    Adam 1e-4 with betas (0, 0.9), n_critic 5."""

    def __init__(
        self,
        net: GANSpec = PLAIN_CRITIC_NETS,
        loss: Literal["bce", "wasserstein", "hinge"] = "wasserstein",
        n_critic: int = 5,
        gp_weight: float = 10.0,
        betas: tuple[float, float] = (0.0, 0.9),
        **kwargs: Any,
    ) -> None:
        """
        Args:
            net: the networks; the critic without batch norm (the penalty is per sample).
            loss: the Wasserstein critic loss.
            n_critic: critic steps per generator step (the paper: 5).
            gp_weight: the penalty's lambda (the paper: 10).
            betas: Adam's betas (the paper: (0, 0.9)).
            **kwargs: the other :class:`GAN` arguments.
        """
        super().__init__(net=net, loss=loss, n_critic=n_critic, gp_weight=gp_weight, betas=betas, **kwargs)


class SNGAN(GAN):
    """SN-GAN (Miyato et al. 2018, arXiv 1802.05957; HW6 strong): spectral norm on every critic layer, hinge loss.

    Adam 2e-4 / beta1 0.5."""

    def __init__(
        self,
        net: GANSpec = SPECTRAL_NETS,
        loss: Literal["bce", "wasserstein", "hinge"] = "hinge",
        lr: float = 2e-4,
        **kwargs: Any,
    ) -> None:
        """
        Args:
            net: the networks; every critic layer spectrally normalised.
            loss: the hinge loss of the paper's best runs.
            lr: the paper's 2e-4.
            **kwargs: the other :class:`GAN` arguments.
        """
        super().__init__(net=net, loss=loss, lr=lr, **kwargs)
