"""Network pruning — lecture 13 (network compression) / HW13: prune a trained CNN a little at a time, fine-tune, repeat.

Iterative pruning (Han et al. 2015, arXiv 1506.02626): train dense, then every ``epochs_per_round`` epochs remove
``amount_per_round`` of the remaining weights (``unstructured``: smallest magnitude, layer-wise or global, as
``torch.nn.utils.prune`` masks) or of the remaining convolution channels (``structured``: L1/L2 filter norm, Li et
al. 2017, arXiv 1608.08710, or the first-order Taylor score, Molchanov et al. 2017, arXiv 1611.06440), until
``target_sparsity``, then fine-tune. Structured rounds physically rebuild a smaller dense network (conv filters,
batch-norm statistics, the next layer's inputs), which is what runs faster; masks alone do not. Optionally the
surviving weights are rewound to their initial values (lottery tickets, Frankle & Carbin 2019, arXiv 1803.03635)
or to an early epoch (Frankle et al. 2019, arXiv 1903.01611) after every round.

Each round logs ``prune/*`` (sparsity, parameters, MACs, CPU latency, validation accuracy); the checkpoint records
the pruned widths and masks, so ``Pruning.load_from_checkpoint`` rebuilds the pruned network;
:func:`export_pruned` writes a mask-free, smaller dense checkpoint.

Run: ``python cli.py fit --config configs/pruning.yaml`` (unstructured) or ``configs/pruning_structured.yaml``.
"""

from __future__ import annotations

import copy
import inspect
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from lecture_modules.base import LectureModule
from lecture_modules.nets import build_cnn
from lecture_modules.pruning.core import (
    TaylorAccumulator,
    channel_scores,
    conv_indices,
    count_params,
    keep_indices,
    make_permanent,
    prune_channels,
    reapply_masks,
    schedule,
    unstructured_round,
    widths_of,
)
from lecture_modules.pruning.report import COLUMNS, pruning_figure, round_stats

__all__ = ["Pruning", "export_pruned"]

Method = Literal["unstructured", "structured"]


class Pruning(LectureModule):
    """Iterative magnitude / channel pruning with fine-tuning and lottery-ticket rewinding (lecture 13)."""

    def __init__(
        self,
        num_classes: int = 10,
        input_shape: tuple[int, int, int] = (1, 8, 8),
        hidden: list[int] | None = None,
        batch_norm: bool = True,
        dropout: float = 0.1,
        method: Method = "unstructured",
        scope: Literal["global", "layer"] = "global",
        criterion: Literal["l1", "l2", "taylor"] = "l1",
        amount_per_round: float = 0.2,
        target_sparsity: float = 0.9,
        pretrain_epochs: int = 5,
        epochs_per_round: int = 1,
        rewind: Literal["none", "init", "early"] = "none",
        rewind_epoch: int = 1,
        latency_batch_sizes: list[int] | None = None,
        latency_repeats: int = 5,
    ) -> None:
        """
        Args:
            num_classes: number of classes (linked from the DataModule by the CLI).
            input_shape: (channels, height, width) of one image (linked from the DataModule by the CLI).
            hidden: channels per convolution of the dense CNN (``build_cnn``; default [32, 64, 128]).
            batch_norm: batch normalisation after each convolution.
            dropout: Dropout2d probability after each convolution (0 disables it).
            method: ``unstructured`` (mask single weights) or ``structured`` (remove whole conv channels).
            scope: unstructured only: rank weights over all layers together (``global``) or prune every layer to
                the same sparsity (``layer``). Structured pruning removes the same fraction of every layer.
            criterion: importance: ``l1`` (unstructured: |w|; structured: L1 norm of each filter), ``l2`` (filter
                L2 norm) or ``taylor`` (structured only: |activation x gradient| accumulated during training).
            amount_per_round: fraction of the REMAINING weights (or channels) removed per round.
            target_sparsity: final fraction of prunable weights (unstructured) or of each layer's channels
                (structured) removed; the last round is cut to reach it exactly.
            pretrain_epochs: dense training epochs before the first round.
            epochs_per_round: fine-tuning epochs after each round before the next; the epochs left after the
                last round (``trainer.max_epochs``) are the final fine-tuning.
            rewind: after each round reset the surviving weights to their initial values (``init``, lottery
                ticket) or to those at the start of epoch ``rewind_epoch`` (``early``); ``none`` keeps training.
            rewind_epoch: epoch whose starting weights ``rewind: early`` returns to (< pretrain_epochs).
            latency_batch_sizes: batch sizes whose CPU latency is measured per round (default [1, 64]).
            latency_repeats: timed forward passes per batch size (the median is reported); 0 skips timing.
        """
        super().__init__()
        hidden = list(hidden) if hidden is not None else [32, 64, 128]
        self._validate(num_classes, input_shape, hidden, dropout, method, scope, criterion, amount_per_round)
        if rewind == "early" and not 0 < rewind_epoch < max(1, pretrain_epochs):
            raise ValueError(
                f"Pruning.rewind_epoch must be in [1, pretrain_epochs) = [1, {pretrain_epochs}) for rewind: early, "
                f"got {rewind_epoch}"
            )
        if pretrain_epochs < 0 or epochs_per_round < 1:
            raise ValueError(
                f"Pruning needs pretrain_epochs >= 0 and epochs_per_round >= 1, got {pretrain_epochs}, "
                f"{epochs_per_round}"
            )
        self.levels = schedule(target_sparsity, amount_per_round)  # raises on a bad target / amount
        self.save_hyperparameters()
        self.dense_widths = hidden
        self.net = build_cnn(tuple(input_shape), num_classes, hidden, batch_norm, dropout)
        self.dense_params = count_params(self.net)
        self.example_input_array = torch.zeros(2, *input_shape)
        self.batch_sizes = latency_batch_sizes or [1, 64]
        # state that travels in checkpoints (see on_save_checkpoint)
        self.rounds_done = 0
        self.kept: list[torch.Tensor] = [torch.arange(w) for w in hidden]  # surviving original channels per conv
        self.history: list[dict[str, Any]] = []
        self.rewind_state: dict[str, torch.Tensor] | None = None
        self.taylor = TaylorAccumulator()
        if method == "structured" and criterion == "taylor":
            self.taylor.attach(self.net)
        self.last_val_acc: float | None = None
        self.train_acc, self.val_acc, self.test_acc = (MulticlassAccuracy(num_classes) for _ in range(3))
        self.val_loss, self.test_loss = MeanMetric(), MeanMetric()

    @staticmethod
    def _validate(num_classes, input_shape, hidden, dropout, method, scope, criterion, amount) -> None:
        if num_classes < 2 or len(input_shape) != 3:
            raise ValueError(
                f"Pruning needs num_classes >= 2 and input_shape (C, H, W); got {num_classes}, {input_shape}"
            )
        if not hidden or min(hidden) < 1:
            raise ValueError(f"Pruning.hidden must list positive channel counts, got {hidden}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"Pruning.dropout must be in [0, 1), got {dropout}")
        if method not in ("unstructured", "structured"):
            raise ValueError(f"Pruning.method must be 'unstructured' or 'structured', got {method!r}")
        if scope not in ("global", "layer") or criterion not in ("l1", "l2", "taylor"):
            raise ValueError(
                f"Pruning: scope must be global|layer and criterion l1|l2|taylor; got {scope}, {criterion}"
            )
        if method == "unstructured" and criterion != "l1":
            raise ValueError(
                f"Pruning.criterion '{criterion}' scores channels; unstructured pruning ranks weights by magnitude "
                "(criterion: l1). Use method: structured for l2 / taylor."
            )
        if not 0.0 < amount < 1.0:
            raise ValueError(f"Pruning.amount_per_round must be in (0, 1), got {amount}")

    # ------------------------------------------------------------------ schedule
    def round_epoch(self, r: int) -> int:
        """The epoch at whose start round ``r`` (0-based) prunes."""
        return self.hparams.pretrain_epochs + r * self.hparams.epochs_per_round

    def on_train_start(self) -> None:
        super().on_train_start()
        needed = self.round_epoch(len(self.levels) - 1) + 1 if self.levels else 0
        max_epochs = self.trainer.max_epochs
        if max_epochs is not None and 0 <= max_epochs < needed:
            rank_zero_warn(
                f"Pruning: {len(self.levels)} rounds to sparsity {self.hparams.target_sparsity} need "
                f"trainer.max_epochs >= {needed} (+ fine-tuning); with {max_epochs} the target is not reached."
            )
        if self.hparams.rewind == "init" and self.rewind_state is None:
            self.rewind_state = _clone(self.net.state_dict())

    def on_train_epoch_start(self) -> None:
        hp = self.hparams
        if hp.rewind == "early" and self.current_epoch == hp.rewind_epoch and self.rewind_state is None:
            self.rewind_state = _clone(self.net.state_dict())
        r = self.rounds_done
        if r < len(self.levels) and self.current_epoch >= self.round_epoch(r):
            self.prune_round(self.levels[r])

    def prune_round(self, level: float) -> None:
        """One pruning round to cumulative ``level``, the optimiser rebuilt where the parameters changed."""
        if not self.history:
            self._record(0, 0.0)  # the dense network, its accuracy from the last validation
        self._close_last_row()
        hp = self.hparams
        if hp.method == "unstructured":
            unstructured_round(self.net, level, hp.scope)
        else:
            self._structured_round(level)
        if self.rewind_state is not None and hp.rewind != "none":
            self._rewind()
        if hp.method == "structured" or hp.rewind != "none":
            self._rebuild_optimizers()
        self.rounds_done += 1
        self._record(self.rounds_done, level)
        row = self.history[-1]
        rank_zero_info(
            f"pruning round {self.rounds_done}/{len(self.levels)} at epoch {self.current_epoch}: sparsity "
            f"{row['sparsity']:.3f}, {int(row['params']):,} params ({int(row['nonzero_params']):,} non-zero), "
            f"{int(row['macs']):,} MACs, widths {row['widths']}"
        )

    def _structured_round(self, level: float) -> None:
        hp = self.hparams
        convs = conv_indices(self.net)
        if hp.criterion == "taylor" and len(self.taylor.scores) == len(convs):
            scores = {i: self.trainer.strategy.reduce(s, reduce_op="sum") for i, s in self.taylor.scores.items()}
        else:
            if hp.criterion == "taylor":
                rank_zero_warn("Pruning: no Taylor scores accumulated yet (no training step); using L1 norms")
            scores = channel_scores(self.net, "l2" if hp.criterion == "l2" else "l1")
        keep = {i: max(1, round(w * (1.0 - level))) for i, w in zip(convs, self.dense_widths)}
        idx = keep_indices(scores, keep)
        self.kept = [self.kept[n][idx[i].cpu()] for n, i in enumerate(convs)]
        self.net = prune_channels(self.net, idx)
        self.taylor.reset()
        if hp.criterion == "taylor":
            self.taylor.attach(self.net)

    def _rewind(self) -> None:
        """Surviving weights (and batch-norm state) back to the saved early values; masks stay."""
        hp = self.hparams
        source = build_cnn(tuple(hp.input_shape), hp.num_classes, self.dense_widths, hp.batch_norm, hp.dropout)
        source.load_state_dict(self.rewind_state)
        if hp.method == "structured":
            source = prune_channels(source.to(self.device), dict(zip(conv_indices(source), self.kept)))
        current = self.net.state_dict()
        with torch.no_grad():
            for key, value in source.state_dict().items():
                target = key if key in current else key[: -len("weight")] + "weight_orig"
                current[target].copy_(value)

    def _rebuild_optimizers(self) -> None:
        """New parameters need a new optimiser (its moments restart; the lr schedule goes on where it was); under
        DDP the module is wrapped again so the reducer knows the new parameters."""
        trainer = self._trainer
        if trainer is None or not trainer.optimizers:
            return
        strategy = trainer.strategy
        if strategy.model is not strategy.lightning_module and hasattr(strategy, "configure_ddp"):
            strategy.model = strategy.lightning_module
            strategy.configure_ddp()
        self._rebind_optimizers()

    def _rebind_optimizers(self) -> None:
        """Rebuild each optimiser (same class, settings and param groups) over the module's current parameters.

        LightningCLI builds the optimiser from YAML once, over the parameters the module had then, and
        ``configure_optimizers`` returns that same object ever after, so re-running it cannot pick up a rebuilt
        network. The optimiser's parameters map to ``self.parameters()`` by position (structured pruning keeps the
        layer order; only shapes change).
        """
        trainer = self.trainer
        now = list(self.parameters())
        rebuilt = []
        for opt in trainer.optimizers:
            flat = [p for g in opt.param_groups for p in g["params"]]
            if len(flat) != len(now):
                raise RuntimeError(
                    f"Pruning: the optimiser holds {len(flat)} parameter tensors but the network has {len(now)}; "
                    "pruning can only rebuild an optimiser over all of the module's parameters (the YAML optimizer)."
                )
            swap = {id(old): new for old, new in zip(flat, now)}
            groups = [{**g, "params": [swap[id(p)] for p in g["params"]]} for g in opt.param_groups]
            accepted = inspect.signature(type(opt).__init__).parameters
            new_opt = type(opt)(groups, **{k: v for k, v in opt.defaults.items() if k in accepted})
            for config in trainer.lr_scheduler_configs:
                if config.scheduler.optimizer is opt:
                    config.scheduler.optimizer = new_opt  # the schedule's state (step count, base lrs) carries on
            rebuilt.append(new_opt)
        trainer.strategy.optimizers = rebuilt

    def on_fit_start(self) -> None:
        """On resume the architecture is rebuilt from the checkpoint after the CLI built its optimiser over the
        dense network's parameters: rebind it before Lightning loads the optimiser state."""
        optimised = {id(p) for opt in self.trainer.optimizers for g in opt.param_groups for p in g["params"]}
        if optimised and optimised != {id(p) for p in self.parameters()}:
            self._rebind_optimizers()

    # ------------------------------------------------------------------ reporting
    def _record(self, round_index: int, level: float) -> None:
        hp = self.hparams
        measure = hp.latency_repeats > 0 and (self._trainer is None or self.trainer.is_global_zero)
        stats = round_stats(self.net, tuple(hp.input_shape), self.batch_sizes, hp.latency_repeats, measure)
        if hp.method == "structured":
            stats["sparsity"] = 1.0 - stats["params"] / self.dense_params  # parameters physically removed
        self.history.append({"round": round_index, "level": level, **stats, "val_acc": None})

    def _close_last_row(self) -> None:
        if not self.history or self.history[-1]["val_acc"] is not None:
            return
        row = self.history[-1]
        row["val_acc"] = self.last_val_acc
        metrics = {f"prune/{k}": float(v) for k, v in row.items() if isinstance(v, int | float) and v is not None}
        if self._trainer is not None and self.trainer.is_global_zero:
            for logger in self.trainer.loggers:
                logger.log_metrics(metrics, step=self.trainer.global_step)

    def on_fit_end(self) -> None:
        if not self.history:
            return
        self._close_last_row()
        if not self.trainer.is_global_zero:
            return
        lines = [" | ".join(COLUMNS)] + [" | ".join(_fmt(r.get(c)) for c in COLUMNS) for r in self.history]
        rank_zero_info("pruning rounds:\n" + "\n".join(lines))
        from lightning.pytorch.loggers import WandbLogger

        for logger in self.trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_table(
                    "prune/rounds", columns=COLUMNS, data=[[r.get(c) for c in COLUMNS] for r in self.history]
                )
        if any(r["val_acc"] is not None for r in self.history):
            self.log_figure("prune/accuracy", pruning_figure(self.history, self.hparams.method))

    # ------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["pruning"] = {
            "widths": widths_of(self.net),
            "kept": [k.clone() for k in self.kept],
            "masked": sorted(n for n, m in self.net.named_modules() if hasattr(m, "weight_mask")),
            "rounds_done": self.rounds_done,
            "history": copy.deepcopy(self.history),
            "last_val_acc": self.last_val_acc,
            "rewind_state": self.rewind_state,
            "taylor": dict(self.taylor.scores),
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Rebuild the pruned architecture (and mask parametrisation) before Lightning loads the state dict."""
        state = checkpoint.get("pruning")
        if state is None:
            super().on_load_checkpoint(checkpoint)
            return
        hp = self.hparams
        if state["widths"] != widths_of(self.net):
            self.net = build_cnn(tuple(hp.input_shape), hp.num_classes, state["widths"], hp.batch_norm, hp.dropout)
            self.net.to(self.device)
            if hp.criterion == "taylor" and hp.method == "structured":
                self.taylor.attach(self.net)
        reapply_masks(self.net, set(state["masked"]))
        self.kept = [k.clone() for k in state["kept"]]
        self.rounds_done = state["rounds_done"]
        self.history = copy.deepcopy(state["history"])
        self.last_val_acc = state["last_val_acc"]
        self.rewind_state = state["rewind_state"]
        self.taylor.scores = dict(state["taylor"])
        super().on_load_checkpoint(checkpoint)  # RNG states last: building layers above draws random numbers

    # ------------------------------------------------------------------ steps
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # (B, C, H, W) -> (B, num_classes)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        x, y = batch[0], batch[1]
        logits = self(x)
        loss = self.combine_losses({"ce": F.cross_entropy(logits, y)})
        self.train_acc.update(logits.detach(), y)
        self.log("train/acc", self.train_acc, on_step=False, on_epoch=True)
        return loss

    def _evaluate(self, batch, stage: str) -> None:
        x, y = batch[0], batch[1]
        logits = self(x)
        self.log_accuracy_and_loss(stage, logits, y)

    def validation_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def on_validation_epoch_end(self) -> None:
        if not self.trainer.sanity_checking:
            self.last_val_acc = float(self.val_acc.compute())

    def test_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def predict_step(self, batch, batch_idx: int) -> torch.Tensor:
        return self(batch[0]).argmax(dim=-1)


def _clone(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in state.items()}


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "-" if value is None else str(value)


def export_pruned(checkpoint_path: str | Path, out_path: str | Path) -> Path:
    """Write a mask-free checkpoint of a pruned run: ``Pruning.load_from_checkpoint(out_path)`` builds the smaller
    dense network directly (``hidden`` = the pruned widths, no further pruning scheduled). Never overwrites."""
    out = Path(out_path)
    if out.exists():
        raise FileExistsError(f"export_pruned: {out} exists; choose another path")
    model = Pruning.load_from_checkpoint(checkpoint_path, map_location="cpu", weights_only=True)
    make_permanent(model.net)
    hparams = dict(model.hparams)
    hparams.update(hidden=widths_of(model.net), target_sparsity=0.0, rewind="none")
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "state_dict": {f"net.{k}": v for k, v in model.net.state_dict().items()},
            "hyper_parameters": hparams,
            "pytorch-lightning_version": __import__("lightning").__version__,
            "pruning_history": model.history,
        },
        out,
    )
    return out
