"""The diffusion process and its samplers, readable in a page (Ho et al. 2020, arXiv 2006.11239; Song et al. 2021,
arXiv 2010.02502), tested for parity with diffusers' ``DDPMScheduler`` and ``DDIMScheduler``
(tests/lectures/test_generative.py): our own short code because the forward-noising identity and the sampler
update are what the lecture shows, and diffusers stays a test-only (``dev``) dependency.

Notation (t = 0 .. T-1 indexes the paper's steps 1 .. T): beta_t linear in [beta_1, beta_T]; alpha_t = 1 - beta_t;
abar_t = prod_{s <= t} alpha_s.

* Forward noising, closed form: q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I), so
  x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps (:meth:`NoiseSchedule.q_sample`).
* DDPM reverse step: x0_hat = (x_t - sqrt(1 - abar_t) eps_hat) / sqrt(abar_t) (clipped to [-1, 1]), then
  x_{t-1} ~ q(x_{t-1} | x_t, x0_hat) = N(mu~_t, beta~_t I) with mu~_t = sqrt(abar_{t-1}) beta_t / (1 - abar_t) x0_hat
  + sqrt(alpha_t) (1 - abar_{t-1}) / (1 - abar_t) x_t and beta~_t = (1 - abar_{t-1}) / (1 - abar_t) beta_t
  (:meth:`NoiseSchedule.ddpm_step`).
* DDIM step from t to s < t: x_s = sqrt(abar_s) x0_hat + sqrt(1 - abar_s - sigma^2) eps_hat + sigma z with
  sigma = eta sqrt((1 - abar_s) / (1 - abar_t)) sqrt(1 - abar_t / abar_s); eta = 0 is deterministic, eta = 1 with
  s = t - 1 is DDPM's posterior (:meth:`NoiseSchedule.ddim_step`). abar before the first step is 1.
"""

from __future__ import annotations

import torch

__all__ = ["NoiseSchedule", "ddim_timesteps"]


def ddim_timesteps(num_train_steps: int, steps: int) -> list[int]:
    """The ``steps`` timesteps a DDIM sampler visits, descending: 0, T/steps, 2 T/steps, ... reversed (diffusers'
    "leading" spacing, so the two samplers visit the same steps)."""
    ratio = num_train_steps // steps
    return [i * ratio for i in reversed(range(steps))]


class NoiseSchedule:
    """Linear beta schedule with the closed-form forward process and the DDPM / DDIM reverse steps."""

    def __init__(
        self,
        num_steps: int = 1000,
        beta_start: float = 1e-4,
        beta_end: float = 0.02,
        clip_sample: bool = True,
        clipped_eps: bool = True,
    ) -> None:
        """
        Args:
            num_steps: T, the number of diffusion steps (DDPM: 1000).
            beta_start: beta_1 (DDPM: 1e-4).
            beta_end: beta_T (DDPM: 0.02).
            clip_sample: clip the predicted x0 to [-1, 1] in the reverse steps (DDPM's released code, diffusers).
            clipped_eps: DDIM's direction term uses the eps implied by the clipped x0 (diffusers'
                ``use_clipped_model_output=True``, GLIDE): the step stays on one deterministic trajectory;
                false keeps the network's eps (diffusers' default).
        """
        self.num_steps, self.clip_sample, self.clipped_eps = num_steps, clip_sample, clipped_eps
        self.betas = torch.linspace(beta_start, beta_end, num_steps, dtype=torch.float64)
        self.alphas = 1.0 - self.betas
        self.alpha_bars = torch.cumprod(self.alphas, dim=0)

    def _abar(self, t: torch.Tensor | int, like: torch.Tensor) -> torch.Tensor:
        """abar_t as a (B, 1, 1, 1) tensor in ``like``'s dtype and device; t = -1 gives 1 (nothing noised)."""
        t = torch.as_tensor(t).reshape(-1).cpu()
        abar = torch.where(t >= 0, self.alpha_bars[t.clamp_min(0)], torch.ones(()))
        return abar.to(like).reshape(-1, *([1] * (like.dim() - 1)))

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps: one draw from q(x_t | x_0), for a timestep per sample."""
        abar = self._abar(t, x0)
        return abar.sqrt() * x0 + (1 - abar).sqrt() * eps

    def predict_x0(self, x_t: torch.Tensor, t: torch.Tensor | int, eps: torch.Tensor) -> torch.Tensor:
        """x0_hat = (x_t - sqrt(1 - abar_t) eps_hat) / sqrt(abar_t), clipped to [-1, 1] with ``clip_sample``."""
        abar = self._abar(t, x_t)
        x0 = (x_t - (1 - abar).sqrt() * eps) / abar.sqrt()
        return x0.clamp(-1, 1) if self.clip_sample else x0

    def posterior(self, x0: torch.Tensor, x_t: torch.Tensor, t: int) -> tuple[torch.Tensor, float]:
        """Mean mu~_t(x_t, x_0) and variance beta~_t of q(x_{t-1} | x_t, x_0)."""
        abar, abar_prev = float(self.alpha_bars[t]), float(self.alpha_bars[t - 1]) if t > 0 else 1.0
        beta, alpha = float(self.betas[t]), float(self.alphas[t])
        mean = (abar_prev**0.5 * beta / (1 - abar)) * x0 + (alpha**0.5 * (1 - abar_prev) / (1 - abar)) * x_t
        return mean, (1 - abar_prev) / (1 - abar) * beta

    def ddpm_step(self, x_t: torch.Tensor, t: int, eps: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x_{t-1} = mu~_t(x_t, x0_hat) + sqrt(beta~_t) z (no noise at t = 0)."""
        mean, variance = self.posterior(self.predict_x0(x_t, t, eps), x_t, t)
        return mean + (variance**0.5 * noise if t > 0 else 0.0)

    def ddim_step(
        self, x_t: torch.Tensor, t: int, t_prev: int, eps: torch.Tensor, eta: float, noise: torch.Tensor | None
    ) -> torch.Tensor:
        """x_{t_prev} = sqrt(abar_prev) x0_hat + sqrt(1 - abar_prev - sigma^2) eps_hat + sigma z (t_prev = -1: the
        last step, to x_0)."""
        abar, abar_prev = float(self.alpha_bars[t]), float(self.alpha_bars[t_prev]) if t_prev >= 0 else 1.0
        x0 = self.predict_x0(x_t, t, eps)  # the direction takes the eps consistent with the clipped x0 ...
        if self.clipped_eps:  # (x_t = sqrt(abar) x0 + sqrt(1 - abar) eps), or the network's eps (diffusers' default)
            eps = (x_t - abar**0.5 * x0) / (1 - abar) ** 0.5
        sigma = eta * ((1 - abar_prev) / (1 - abar)) ** 0.5 * (1 - abar / abar_prev) ** 0.5
        x_prev = abar_prev**0.5 * x0 + max(1 - abar_prev - sigma**2, 0.0) ** 0.5 * eps
        return x_prev + sigma * noise if sigma > 0 and noise is not None else x_prev
