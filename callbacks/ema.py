"""Exponential moving average of a model's weights, used for evaluation and sampling (DDPM: decay 0.9999; Polyak
averaging). The average lives in this callback's state, so it travels in checkpoints (plain tensors: still
``weights_only``) and an interrupted run resumes with it.

While validating, testing or predicting, the averaged weights are swapped into the module and the trained weights
swapped back afterwards; training always steps the raw weights.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info

from datamodules.errors import SettingError

__all__ = ["EMA"]


class EMA(L.Callback):
    """theta_ema <- d theta_ema + (1 - d) theta after every optimiser step, with the warm-up d_n = min(decay,
    (1 + n) / (10 + n)) so early averages are not dominated by the random initialisation."""

    def __init__(self, decay: float = 0.999, warmup: bool = True) -> None:
        """
        Args:
            decay: the averaging decay d in [0, 1) (DDPM: 0.9999 over 800k steps; short runs need less).
            warmup: ramp the decay up as (1 + n) / (10 + n) over the first updates.
        """
        if not 0.0 <= decay < 1.0:
            raise SettingError(f"EMA.decay (in trainer.callbacks) must be in [0, 1), got {decay}")
        self.decay, self.warmup = decay, warmup
        self.updates = 0
        self.shadow: dict[str, torch.Tensor] | None = None
        self._backup: dict[str, torch.Tensor] | None = None

    @staticmethod
    def _params(pl_module: L.LightningModule) -> dict[str, torch.Tensor]:
        return {name: p for name, p in pl_module.named_parameters() if p.requires_grad}

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.shadow is None:
            self.shadow = {k: p.detach().clone() for k, p in self._params(pl_module).items()}
        else:  # restored from a checkpoint: onto the module's device
            self.shadow = {k: v.to(pl_module.device) for k, v in self.shadow.items()}

    @torch.no_grad()
    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates)) if self.warmup else self.decay
        for name, p in self._params(pl_module).items():
            self.shadow[name].lerp_(p.detach(), 1.0 - decay)

    # ------------------------------------------------------------------ evaluation with the averaged weights
    @torch.no_grad()
    def _swap_in(self, pl_module: L.LightningModule) -> None:
        if self.shadow is None:
            rank_zero_info("EMA: no averaged weights yet (none in the checkpoint); evaluating the trained weights")
            return
        params = self._params(pl_module)
        self._backup = {k: p.detach().clone() for k, p in params.items()}
        for name, p in params.items():
            p.copy_(self.shadow[name])

    @torch.no_grad()
    def _swap_out(self, pl_module: L.LightningModule) -> None:
        if self._backup is None:
            return
        for name, p in self._params(pl_module).items():
            p.copy_(self._backup[name])
        self._backup = None

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._swap_in(pl_module)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._swap_out(pl_module)

    on_test_start = on_predict_start = on_validation_start
    on_test_end = on_predict_end = on_validation_end

    # ------------------------------------------------------------------ checkpoint state: plain tensors
    def state_dict(self) -> dict[str, Any]:
        shadow = {k: v.detach().cpu().clone() for k, v in (self.shadow or {}).items()}
        return {"decay": self.decay, "updates": self.updates, "shadow": shadow}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.updates = int(state_dict["updates"])
        self.shadow = dict(state_dict["shadow"]) or None
