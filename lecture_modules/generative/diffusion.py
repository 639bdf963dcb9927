"""DDPM with DDIM sampling and classifier-free guidance — lecture 6 (diffusion models).

Training (Ho et al. 2020, arXiv 2006.11239, Algorithm 1), :meth:`DDPM.training_step` for a batch x_0 (and labels y):

1. t ~ Uniform{1..T}, eps ~ N(0, I).
2. x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps: one step from the closed-form q(x_t | x_0)
   (:meth:`~lecture_modules.generative.noising.NoiseSchedule.q_sample`).
3. With ``conditional``, each label is replaced by "no label" with probability ``p_uncond`` (one network learns
   eps(x_t, t, y) and eps(x_t, t); Ho & Salimans 2022, arXiv 2207.12598).
4. L_simple = || eps - eps_theta(x_t, t, y) ||^2.

Sampling (:meth:`DDPM.sample`) from x_T ~ N(0, I): ``sampler: ddpm`` takes all T ancestral steps (Algorithm 2 with
the posterior variance); ``sampler: ddim`` (Song et al. 2021, arXiv 2010.02502) takes ``sample_steps`` steps with
noise scale ``eta`` (0: deterministic). With guidance, eps_hat = eps(x_t, t) + w (eps(x_t, t, y) - eps(x_t, t)),
w = ``guidance_scale`` (1: the plain conditional model). The EMA of the weights (callbacks.ema.EMA, in the config)
is what validation and ``predict`` sample with.

Run: ``python cli.py fit --config configs/ddpm.yaml``
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F

from lecture_modules.base import bad_setting
from lecture_modules.generative.figures import grid_figure
from lecture_modules.generative.noising import NoiseSchedule, ddim_timesteps
from lecture_modules.generative.shell import GenerativeModule
from lecture_modules.generative.unet import UNet, UNetSpec

__all__ = ["DDPM", "check_sampler"]

UNET = UNetSpec()


def check_sampler(sampler: str, sample_steps: int, eta: float, num_steps: int) -> None:
    """SettingError naming ``model.init_args.<name>`` for a sampler setting out of range."""
    if sampler not in ("ddpm", "ddim"):
        raise bad_setting("sampler", sampler, "'ddpm' or 'ddim'")
    if not 1 <= sample_steps <= num_steps:
        raise bad_setting("sample_steps", sample_steps, f"in 1..num_steps ({num_steps}): DDIM skips steps, never adds")
    if not 0.0 <= eta <= 1.0:
        raise bad_setting("eta", eta, "in [0, 1] (0: deterministic DDIM, 1: DDPM's posterior variance)")


class DDPM(GenerativeModule):
    """DDPM (Ho et al. 2020) with a small UNet, DDIM sampling and classifier-free guidance (lecture 6)."""

    lr_setting = "model.init_args.lr"

    def __init__(
        self,
        num_classes: int = 10,
        input_shape: tuple[int, int, int] = (1, 16, 16),
        net: UNetSpec = UNET,
        num_steps: int = 1000,
        beta_start: float = 1e-4,
        beta_end: float = 0.02,
        conditional: bool = False,
        p_uncond: float = 0.1,
        guidance_scale: float = 1.0,
        sampler: Literal["ddpm", "ddim"] = "ddim",
        sample_steps: int = 50,
        eta: float = 0.0,
        clipped_eps: bool = True,
        lr: float = 2e-4,
        **kwargs: Any,
    ) -> None:
        """
        Args:
            num_classes: number of classes (linked from the DataModule by the CLI).
            input_shape: (channels, height, width) of one image (linked from the DataModule by the CLI).
            net: the UNet noise predictor: channels, multipliers per resolution, dropout.
            num_steps: T, diffusion steps (DDPM: 1000).
            beta_start: beta_1 of the linear schedule (DDPM: 1e-4).
            beta_end: beta_T of the linear schedule (DDPM: 0.02).
            conditional: learn eps(x_t, t, y) too, for classifier-free guidance.
            p_uncond: probability of dropping a label in training (Ho & Salimans: 0.1 or 0.2).
            guidance_scale: w in eps_u + w (eps_c - eps_u) when sampling a conditional model (1: no extra guidance).
            sampler: ``ddim`` (``sample_steps`` steps, noise ``eta``) or ``ddpm`` (all T ancestral steps).
            sample_steps: DDIM steps, 1..num_steps (validation and predict).
            eta: DDIM's noise scale in [0, 1] (0: deterministic).
            clipped_eps: DDIM steps with the eps implied by the clipped x0_hat (diffusers'
                ``use_clipped_model_output=True``); false keeps the network's eps (diffusers' default), with which
                FID got worse beyond ~20 DDIM steps on the digits (3 seeds; docs/lectures/generative.md).
            lr: Adam's learning rate (DDPM: 2e-4 on CIFAR-10).
            **kwargs: the sample-quality settings of :class:`~lecture_modules.generative.shell.GenerativeModule`.
        """
        super().__init__(**kwargs)
        net = UNetSpec.of(net, owner="net")
        if num_steps < 2:
            raise bad_setting("num_steps", num_steps, ">= 2")
        if not 0.0 < beta_start <= beta_end < 1.0:
            raise bad_setting("beta_end", (beta_start, beta_end), "0 < beta_start <= beta_end < 1")
        if not 0.0 <= p_uncond < 1.0:
            raise bad_setting("p_uncond", p_uncond, "in [0, 1)")
        if not lr > 0:
            raise bad_setting("lr", lr, "> 0")
        check_sampler(sampler, sample_steps, eta, num_steps)
        self.save_hyperparameters(ignore=["net"])
        self.hparams["net"] = net.as_dict()  # plain data: the checkpoint stays weights_only
        self.schedule = NoiseSchedule(num_steps, beta_start, beta_end, clipped_eps=clipped_eps)
        self.model = UNet(tuple(input_shape), net, num_classes=num_classes if conditional else 0)
        self.init_sampling(tuple(input_shape), num_classes)

    # ------------------------------------------------------------------ the algorithm
    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        hp = self.hparams
        x0, y = batch  # (B, C, H, W) in [-1, 1], (B,)
        t = torch.randint(0, hp.num_steps, (len(x0),), device=self.device)  # 1. (B,)
        eps = torch.randn_like(x0)
        x_t = self.schedule.q_sample(x0, t, eps)  # 2. (B, C, H, W)
        labels = None
        if hp.conditional:  # 3. drop labels for the unconditional model
            drop = torch.rand(len(y), device=self.device) < hp.p_uncond
            labels = torch.where(drop, torch.full_like(y, hp.num_classes), y)
        return self.combine_losses({"simple": F.mse_loss(self.model(x_t, t, labels), eps)})  # 4.

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.model.parameters(), lr=self.hparams.lr)

    # ------------------------------------------------------------------ sampling
    def predict_eps(self, x_t: torch.Tensor, t: int, labels: torch.Tensor | None) -> torch.Tensor:
        """eps_hat(x_t, t), guided: eps_u + w (eps_c - eps_u) for a conditional model with labels."""
        steps = torch.full((len(x_t),), t, device=x_t.device, dtype=torch.long)
        if not self.hparams.conditional or labels is None:
            return self.model(x_t, steps)
        w = self.hparams.guidance_scale
        if w == 1.0:
            return self.model(x_t, steps, labels)
        no_label = torch.full_like(labels, self.hparams.num_classes)
        both = self.model(torch.cat([x_t, x_t]), torch.cat([steps, steps]), torch.cat([labels, no_label]))
        cond, uncond = both.chunk(2)
        return uncond + w * (cond - uncond)

    def timesteps(self, sampler: str | None = None, steps: int | None = None) -> list[int]:
        """The timesteps the sampler visits, descending (DDPM: all T)."""
        hp = self.hparams
        if (sampler or hp.sampler) == "ddpm":
            return list(reversed(range(hp.num_steps)))
        return ddim_timesteps(hp.num_steps, steps or hp.sample_steps)

    @torch.no_grad()
    def sample(
        self,
        z: torch.Tensor,
        labels: torch.Tensor | None = None,
        *,
        sampler: str | None = None,
        steps: int | None = None,
        keep: int = 0,
    ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        """x_0 from x_T = z (B, C, H, W) by the configured sampler (or ``sampler`` / ``steps`` given here), in eval
        mode; the sampler's own noise comes from a generator seeded with 0, so the global RNG is untouched. With
        ``keep`` > 0, also ``keep`` intermediate x_t along the trajectory."""
        hp, was_training = self.hparams, self.training
        self.eval()
        sampler = sampler or hp.sampler
        labels = labels if hp.conditional else None
        gen, x = torch.Generator().manual_seed(0), z
        times = self.timesteps(sampler, steps)
        marks = {times[round(i * (len(times) - 1) / max(keep - 1, 1))] for i in range(keep)} if keep else set()
        trajectory = []
        for i, t in enumerate(times):
            if t in marks:
                trajectory.append(x)
            eps = self.predict_eps(x, t, labels)
            noise = torch.randn(x.shape, generator=gen).to(x) if sampler == "ddpm" or hp.eta > 0 else None
            if sampler == "ddpm":
                x = self.schedule.ddpm_step(x, t, eps, noise)
            else:
                t_prev = times[i + 1] if i + 1 < len(times) else -1
                x = self.schedule.ddim_step(x, t, t_prev, eps, hp.eta, noise)
        self.train(was_training)
        return (x, [*trajectory, x]) if keep else x

    def on_validation_epoch_end(self) -> None:
        super().on_validation_epoch_end()
        if self.trainer.sanity_checking or not self.trainer.is_global_zero:
            return
        _, trajectory = self.sample(self.fixed_noise[:8], self.fixed_labels[:8], keep=8)
        frames = torch.stack(trajectory, dim=1).flatten(0, 1)  # (8 samples * 9 frames, C, H, W): rows are samples
        self.log_figure("val/trajectory", grid_figure(frames, "denoising x_T -> x_0 (rows: samples)", ncols=9))
