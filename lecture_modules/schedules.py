"""Learning-rate schedules the lectures teach, usable from YAML as ``lr_scheduler.class_path``.

A scheduler with ``interval = "step"`` is stepped every optimiser step by ``LectureCLI``; the others per epoch.
"""

from __future__ import annotations

import math
from typing import Any

from torch.optim import Optimizer
from torch.optim.lr_scheduler import CyclicLR, LRScheduler, OneCycleLR

from datamodules.errors import SettingError

__all__ = [
    "InverseDecayLR",
    "WarmupCosineLR",
    "WarmupLinearLR",
    "dann_lr_factor",
    "steps_every_optimizer_step",
    "warmup_cosine_factor",
    "warmup_linear_factor",
]


def warmup_cosine_factor(step: int, warmup_steps: int, total_steps: int, min_lr_ratio: float) -> float:
    """Multiplier of the base lr: linear from 1/(warmup+1) to 1 over ``warmup_steps``, then cosine to the floor."""
    if step < warmup_steps:
        return (step + 1) / (warmup_steps + 1)
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def _bad_schedule(scheduler: LRScheduler, name: str, value: Any, allowed: str) -> SettingError:
    """A schedule's setting out of range. A schedule does not know where its config put it (the top-level
    ``lr_scheduler:`` section or a lecture's ``model.init_args.lr_scheduler``), so the message names both."""
    return SettingError(
        f"{type(scheduler).__name__}.{name} must be {allowed}, got {value!r} (set under init_args of the "
        "lr_scheduler: section, or of model.init_args.lr_scheduler for a lecture that takes its schedule as an "
        "argument)"
    )


class WarmupCosineLR(LRScheduler):
    """Linear warm-up then cosine decay, stepped per optimiser step."""

    interval = "step"

    def __init__(
        self,
        optimizer: Optimizer,
        warmup_steps: int | float = 0.05,
        total_steps: int | None = None,
        min_lr_ratio: float = 0.0,
        last_epoch: int = -1,
    ) -> None:
        """
        Args:
            optimizer: wrapped optimiser (filled in by LightningCLI).
            warmup_steps: warm-up length in steps, or as a fraction of ``total_steps`` when a float below 1.
            total_steps: schedule length; None takes ``trainer.estimated_stepping_batches`` at fit start.
            min_lr_ratio: final lr as a fraction of the base lr.
            last_epoch: index of the last step (-1 starts fresh).
        """
        if isinstance(warmup_steps, float) and not 0.0 <= warmup_steps < 1.0:
            raise _bad_schedule(self, "warmup_steps", warmup_steps, "in [0, 1) as a fraction (or an int of steps)")
        if not isinstance(warmup_steps, float) and warmup_steps < 0:
            raise _bad_schedule(self, "warmup_steps", warmup_steps, ">= 0")
        if not 0.0 <= min_lr_ratio <= 1.0:
            raise _bad_schedule(self, "min_lr_ratio", min_lr_ratio, "in [0, 1]")
        self.warmup_steps, self.total_steps, self.min_lr_ratio = warmup_steps, total_steps, min_lr_ratio
        super().__init__(optimizer, last_epoch)

    def _warmup(self) -> int:
        if isinstance(self.warmup_steps, float):
            return int(self.warmup_steps * (self.total_steps or 0))
        return self.warmup_steps

    def get_lr(self) -> list[float]:
        total = self.total_steps if self.total_steps is not None else self.last_epoch + 1
        factor = warmup_cosine_factor(self.last_epoch, self._warmup(), total, self.min_lr_ratio)
        return [base * factor for base in self.base_lrs]

    def set_total_steps(self, total_steps: int) -> None:
        """Fix the schedule length (called by the CLI when ``total_steps`` is None) and recompute the lr."""
        self.total_steps = int(total_steps)
        for group, lr in zip(self.optimizer.param_groups, self.get_lr(), strict=True):
            group["lr"] = lr
        self._last_lr = [g["lr"] for g in self.optimizer.param_groups]


def warmup_linear_factor(step: int, warmup_steps: int, total_steps: int, min_lr_ratio: float) -> float:
    """Multiplier of the base lr: linear from 1/(warmup+1) to 1 over ``warmup_steps``, then linear to the floor
    at ``total_steps`` (BERT's fine-tuning schedule)."""
    if step < warmup_steps:
        return (step + 1) / (warmup_steps + 1)
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_lr_ratio + (1.0 - min_lr_ratio) * (1.0 - progress)


class WarmupLinearLR(WarmupCosineLR):
    """Linear warm-up then linear decay, stepped per optimiser step (same arguments as :class:`WarmupCosineLR`)."""

    def get_lr(self) -> list[float]:
        total = self.total_steps if self.total_steps is not None else self.last_epoch + 1
        factor = warmup_linear_factor(self.last_epoch, self._warmup(), total, self.min_lr_ratio)
        return [base * factor for base in self.base_lrs]


def dann_lr_factor(progress: float, alpha: float = 10.0, beta: float = 0.75) -> float:
    """DANN's annealing (Ganin & Lempitsky 2015, arXiv 1409.7495): ``lr_p = lr0 / (1 + alpha p)^beta``, p in [0, 1]."""
    return (1.0 + alpha * min(max(progress, 0.0), 1.0)) ** (-beta)


class InverseDecayLR(LRScheduler):
    """``lr0 / (1 + alpha p)^beta`` with p = step / total steps (DANN's schedule), stepped per optimiser step."""

    interval = "step"

    def __init__(
        self,
        optimizer: Optimizer,
        alpha: float = 10.0,
        beta: float = 0.75,
        total_steps: int | None = None,
        last_epoch: int = -1,
    ) -> None:
        """
        Args:
            optimizer: wrapped optimiser (filled in by LightningCLI).
            alpha: decay speed (10 in the DANN paper).
            beta: decay exponent (0.75 in the DANN paper).
            total_steps: steps for p to reach 1; None takes ``trainer.estimated_stepping_batches`` at fit start.
            last_epoch: index of the last step (-1 starts fresh).
        """
        for name, value in (("alpha", alpha), ("beta", beta)):
            if value < 0:
                raise _bad_schedule(self, name, value, ">= 0")
        if total_steps is not None and total_steps < 1:
            raise _bad_schedule(self, "total_steps", total_steps, ">= 1 or null")
        self.alpha, self.beta, self.total_steps = alpha, beta, total_steps
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        progress = self.last_epoch / self.total_steps if self.total_steps else 0.0
        return [base * dann_lr_factor(progress, self.alpha, self.beta) for base in self.base_lrs]

    def set_total_steps(self, total_steps: int) -> None:
        """Fix the schedule length (called at fit start when ``total_steps`` is None) and recompute the lr."""
        self.total_steps = int(total_steps)
        for group, lr in zip(self.optimizer.param_groups, self.get_lr(), strict=True):
            group["lr"] = lr
        self._last_lr = [g["lr"] for g in self.optimizer.param_groups]


def steps_every_optimizer_step(scheduler: object) -> bool:
    """Whether a scheduler is stepped every optimiser step (``interval = "step"``, OneCycleLR, CyclicLR) rather than
    every epoch: the one rule for the YAML ``lr_scheduler:`` and for lectures that build their own schedule."""
    return getattr(scheduler, "interval", "epoch") == "step" or isinstance(scheduler, OneCycleLR | CyclicLR)
