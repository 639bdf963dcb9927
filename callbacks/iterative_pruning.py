"""Iterative pruning as a callback: when to prune, rewinding, and the per-round report (Lightning's ``ModelPruning``
shape: validated keyword arguments, thin hooks, the schedule below, ``state_dict`` so a resumed run is exact).

Schedule (Han et al. 2015, arXiv 1506.02626), with a = ``amount_per_round`` and s* = ``target_sparsity``:

1. Epochs [0, ``pretrain_epochs``): train the dense network.
2. At the start of epoch ``pretrain_epochs + r * epochs_per_round`` (r = 0, 1, ...), round r prunes to the
   cumulative level s_r = 1 - (1 - a)^(r + 1), the last round cut to s* exactly (:func:`schedule`).
3. Rewinding, when asked: the surviving weights return to their initial values theta_0 (``rewind: init``, lottery
   tickets, Frankle & Carbin 2019, arXiv 1803.03635) or to those at the start of epoch ``rewind_epoch``
   (``rewind: early``, Frankle et al. 2019, arXiv 1903.01611). The optimiser is rebuilt (its moments restart)
   whenever the parameters were replaced (structured pruning) or rewound; the learning-rate schedule goes on.
4. ``epochs_per_round`` epochs of fine-tuning after each round; the epochs left after the last round (up to
   ``trainer.max_epochs``) are the final fine-tuning.

The lecture module says *how* to prune, this callback *when*. The module provides (checked at ``setup``):

* ``net``: the network being pruned; its ``state_dict`` is what rewinding returns to.
* ``prune(level)``: remove weights or channels until the cumulative ``level`` is reached.
* ``rewind(state)``: the surviving weights back to ``state``, a ``state_dict`` of the dense ``net``.
* ``pruning_stats(batch_sizes, repeats)``: sparsity, parameter counts, MACs and (``repeats`` > 0) CPU latency.
* ``build_optimizer()``: a new optimiser over the module's current parameters (the lecture's optimiser factory).

Each round logs ``prune/*`` (one row of :data:`COLUMNS`, closed with the validation accuracy reached just before
the next round); at the end of fit the rounds go out as a table (log, W&B) and a figure.
"""

from __future__ import annotations

import copy
import math
from typing import Any, Literal

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from datamodules.errors import SettingError
from lecture_modules.base import log_figure

__all__ = ["COLUMNS", "IterativePruning", "pruning_figure", "schedule"]

PROTOCOL = ("net", "prune", "rewind", "pruning_stats", "build_optimizer")
COLUMNS = [
    "round",
    "level",
    "sparsity",
    "params",
    "nonzero_params",
    "macs",
    "cpu_ms_b1",
    "cpu_ms_b64",
    "val_acc",
    "widths",
]


def _bad_setting(name: str, allowed: str, value: object) -> SettingError:
    """The error for a bad argument, named as a config writes it (the callback sits in ``trainer.callbacks``)."""
    return SettingError(f"trainer.callbacks: IterativePruning's init_args.{name} must be {allowed}, got {value!r}")


def schedule(target: float, amount_per_round: float) -> list[float]:
    """Cumulative sparsity after each round when every round removes ``amount_per_round`` of what remains.

    The last round is cut so the list ends exactly at ``target``: ``schedule(0.5, 0.2) == [0.2, 0.36, 0.488, 0.5]``.
    """
    if not 0.0 <= target < 1.0:
        raise _bad_setting("target_sparsity", "in [0, 1)", target)
    if not 0.0 < amount_per_round < 1.0:
        raise _bad_setting("amount_per_round", "in (0, 1)", amount_per_round)
    if target == 0.0:
        return []
    rounds = math.ceil(math.log(1.0 - target) / math.log(1.0 - amount_per_round) - 1e-9)
    levels = [1.0 - (1.0 - amount_per_round) ** (r + 1) for r in range(rounds)]
    levels[-1] = target
    return levels


class IterativePruning(Callback):
    """Prune a little at a time, fine-tune, repeat; optionally rewind the survivors (lottery tickets)."""

    def __init__(
        self,
        *,
        amount_per_round: float = 0.2,
        target_sparsity: float = 0.9,
        pretrain_epochs: int = 5,
        epochs_per_round: int = 1,
        rewind: Literal["none", "init", "early"] = "none",
        rewind_epoch: int = 1,
        monitor: str = "val/acc",
        latency_batch_sizes: list[int] | None = None,
        latency_repeats: int = 5,
    ) -> None:
        """
        Args:
            amount_per_round: fraction of the REMAINING weights (or channels) removed per round, in (0, 1).
            target_sparsity: final level, in [0, 1); the last round is cut to reach it exactly (0: no pruning).
            pretrain_epochs: dense training epochs before the first round.
            epochs_per_round: fine-tuning epochs after each round before the next.
            rewind: after each round reset the surviving weights to their initial values (``init``) or to those at
                the start of epoch ``rewind_epoch`` (``early``); ``none`` keeps training them.
            rewind_epoch: epoch whose starting weights ``rewind: early`` returns to, in [1, pretrain_epochs).
            monitor: the validation metric recorded for each round (the accuracy the round's row shows).
            latency_batch_sizes: batch sizes whose CPU latency is measured per round (default [1, 64]).
            latency_repeats: timed forward passes per batch size (the median is reported); 0 skips timing.
        """
        self.levels = schedule(target_sparsity, amount_per_round)  # raises on a bad target / amount
        if pretrain_epochs < 0:
            raise _bad_setting("pretrain_epochs", ">= 0", pretrain_epochs)
        if epochs_per_round < 1:
            raise _bad_setting("epochs_per_round", ">= 1", epochs_per_round)
        if rewind not in ("none", "init", "early"):
            raise _bad_setting("rewind", "'none', 'init' or 'early'", rewind)
        if rewind == "early" and not 0 < rewind_epoch < max(1, pretrain_epochs):
            raise _bad_setting("rewind_epoch", f"in [1, pretrain_epochs) = [1, {pretrain_epochs}) for rewind: early",
                               rewind_epoch)  # fmt: skip
        batch_sizes = list(latency_batch_sizes) if latency_batch_sizes is not None else [1, 64]
        if not batch_sizes or min(batch_sizes) < 1:
            raise _bad_setting("latency_batch_sizes", "a non-empty list of sizes >= 1", latency_batch_sizes)
        if latency_repeats < 0:
            raise _bad_setting("latency_repeats", ">= 0", latency_repeats)
        self.target_sparsity, self.pretrain_epochs, self.epochs_per_round = (
            target_sparsity,
            pretrain_epochs,
            epochs_per_round,
        )
        self.rewind, self.rewind_epoch, self.monitor = rewind, rewind_epoch, monitor
        self.latency_batch_sizes, self.latency_repeats = batch_sizes, latency_repeats
        # state that travels in checkpoints (state_dict)
        self.rounds_done = 0
        self.history: list[dict[str, Any]] = []
        self.last_val_acc: float | None = None
        self.rewind_state: dict[str, torch.Tensor] | None = None

    def round_epoch(self, r: int) -> int:
        """The epoch at whose start round ``r`` (0-based) prunes."""
        return self.pretrain_epochs + r * self.epochs_per_round

    # ------------------------------------------------------------------ hooks
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        missing = [name for name in PROTOCOL if not hasattr(pl_module, name)]
        if missing:
            raise TypeError(
                f"IterativePruning prunes a lecture that provides {', '.join(PROTOCOL)}; "
                f"{type(pl_module).__name__} lacks {missing} (use lecture_modules.pruning.pruning.Pruning)"
            )

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        needed = self.round_epoch(len(self.levels) - 1) + 1 if self.levels else 0
        if trainer.max_epochs is not None and 0 <= trainer.max_epochs < needed:
            rank_zero_warn(
                f"IterativePruning: {len(self.levels)} rounds to sparsity {self.target_sparsity} need "
                f"trainer.max_epochs >= {needed} (+ fine-tuning); with {trainer.max_epochs} the target is not reached."
            )
        if self.rewind == "init" and self.rewind_state is None:
            self.rewind_state = _clone(pl_module.net.state_dict())

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        epoch = trainer.current_epoch
        if self.rewind == "early" and epoch == self.rewind_epoch and self.rewind_state is None:
            self.rewind_state = _clone(pl_module.net.state_dict())
        r = self.rounds_done
        if r < len(self.levels) and epoch >= self.round_epoch(r):
            self.prune_round(trainer, pl_module, self.levels[r])

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        value = trainer.callback_metrics.get(self.monitor)
        if not trainer.sanity_checking and value is not None:
            self.last_val_acc = float(value)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.history:
            return
        self._close_last_row(trainer)
        if trainer.is_global_zero:
            self._report(trainer)

    # ------------------------------------------------------------------ one round
    def prune_round(self, trainer: L.Trainer, pl_module: L.LightningModule, level: float) -> None:
        """Prune to cumulative ``level``, rewind if asked, rebuild the optimiser where the parameters changed."""
        if not self.history:
            self._record(trainer, pl_module, 0, 0.0)  # the dense network, its accuracy from the last validation
        self._close_last_row(trainer)
        before = [id(p) for p in pl_module.parameters()]
        pl_module.prune(level)
        if self.rewind != "none" and self.rewind_state is not None:
            pl_module.rewind(self.rewind_state)
        if self.rewind != "none" or [id(p) for p in pl_module.parameters()] != before:
            rebuild_optimizers(trainer, pl_module)
        self.rounds_done += 1
        self._record(trainer, pl_module, self.rounds_done, level)
        row = self.history[-1]
        rank_zero_info(
            f"pruning round {self.rounds_done}/{len(self.levels)} at epoch {trainer.current_epoch}: sparsity "
            f"{row['sparsity']:.3f}, {int(row['params']):,} params ({int(row['nonzero_params']):,} non-zero), "
            f"{int(row['macs']):,} MACs, widths {row['widths']}"
        )

    # ------------------------------------------------------------------ reporting
    def _record(self, trainer: L.Trainer, pl_module: L.LightningModule, round_index: int, level: float) -> None:
        repeats = self.latency_repeats if trainer.is_global_zero else 0  # time on rank zero only
        stats = pl_module.pruning_stats(batch_sizes=self.latency_batch_sizes, repeats=repeats)
        self.history.append({"round": round_index, "level": level, **stats, "val_acc": None})

    def _close_last_row(self, trainer: L.Trainer) -> None:
        if not self.history or self.history[-1]["val_acc"] is not None:
            return
        row = self.history[-1]
        row["val_acc"] = self.last_val_acc
        metrics = {f"prune/{k}": float(v) for k, v in row.items() if isinstance(v, int | float) and v is not None}
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.log_metrics(metrics, step=trainer.global_step)

    def _report(self, trainer: L.Trainer) -> None:
        from lightning.pytorch.loggers import WandbLogger

        lines = [" | ".join(COLUMNS)] + [" | ".join(_fmt(r.get(c)) for c in COLUMNS) for r in self.history]
        rank_zero_info("pruning rounds:\n" + "\n".join(lines))
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_table(
                    "prune/rounds", columns=COLUMNS, data=[[r.get(c) for c in COLUMNS] for r in self.history]
                )
        if any(r["val_acc"] is not None for r in self.history):
            log_figure(trainer, "prune/accuracy", pruning_figure(self.history))

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        return {
            "rounds_done": self.rounds_done,
            "history": copy.deepcopy(self.history),
            "last_val_acc": self.last_val_acc,
            "rewind_state": self.rewind_state,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.rounds_done = state_dict["rounds_done"]
        self.history = copy.deepcopy(state_dict["history"])
        self.last_val_acc = state_dict["last_val_acc"]
        self.rewind_state = state_dict["rewind_state"]


def rebuild_optimizers(trainer: L.Trainer, pl_module: L.LightningModule) -> None:
    """A new optimiser from the module's factory over its current parameters (the moments restart); the running
    learning-rate schedule moves to it and its param groups keep the scheduled values (lr, initial_lr). Under DDP the
    module is wrapped again first, so the reducer knows the new parameters."""
    if not trainer.optimizers:
        return
    if len(trainer.optimizers) != 1:
        raise RuntimeError(f"IterativePruning rebuilds one optimiser; the trainer has {len(trainer.optimizers)}")
    strategy = trainer.strategy
    if strategy.model is not strategy.lightning_module and hasattr(strategy, "configure_ddp"):
        strategy.model = strategy.lightning_module
        strategy.configure_ddp()
    [old] = trainer.optimizers
    new = pl_module.build_optimizer()
    if len(new.param_groups) != len(old.param_groups):
        raise RuntimeError(
            f"IterativePruning: the rebuilt optimiser has {len(new.param_groups)} parameter groups, the running one "
            f"{len(old.param_groups)}"
        )
    for new_group, old_group in zip(new.param_groups, old.param_groups):
        new_group.update({k: v for k, v in old_group.items() if k != "params"})
    for config in trainer.lr_scheduler_configs:
        if config.scheduler.optimizer is old:
            config.scheduler.optimizer = new  # the schedule's state (step count, base lrs) carries on
    strategy.optimizers = [new]


def pruning_figure(history: list[dict]):
    """Left: validation accuracy against sparsity. Right: against batch-64 CPU latency (or the largest timed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in history if r.get("val_acc") is not None]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.6))
    ys = [100 * r["val_acc"] for r in rows]
    left.plot([100 * r["sparsity"] for r in rows], ys, "o-")
    left.set_xlabel("sparsity (%): weights zeroed, or parameters removed")
    left.set_ylabel("validation accuracy (%)")
    left.set_title("accuracy per pruning round")
    keys = sorted({k for r in rows for k in r if k.startswith("cpu_ms_b")}, key=lambda k: int(k[8:]))
    if keys:
        key = keys[-1]
        right.plot([r.get(key) for r in rows], ys, "o-")
        for r, y in zip(rows, ys):
            right.annotate(str(r["round"]), (r.get(key), y), fontsize=7)
        right.set_xlabel(f"CPU latency, batch {key[8:]} (ms)")
    right.set_title("accuracy vs latency (labels: round)")
    fig.tight_layout()
    return fig


def _clone(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in state.items()}


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "-" if value is None else str(value)
