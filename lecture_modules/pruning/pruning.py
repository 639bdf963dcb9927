"""Network pruning — lecture 13 (network compression) / HW13: prune a trained CNN a little at a time, fine-tune, repeat.

Iterative pruning (Han et al. 2015, arXiv 1506.02626). The ``IterativePruning`` callback
(``callbacks/iterative_pruning.py``) decides when; this lecture how. Per round, to the cumulative level s_r:

1. Train: cross-entropy on the current (masked or smaller) network — :meth:`Pruning.training_step`, the only loss.
2. Prune to s_r — :meth:`Pruning.prune`:
   ``unstructured``: mask the smallest |w| until s_r of the prunable weights are zero, ranked over all layers
   (``scope: global``) or within each (``layer``), as ``torch.nn.utils.prune`` masks;
   ``structured``: score each convolution's output channels by the L1/L2 norm of its filter (Li et al. 2017,
   arXiv 1608.08710) or by the first-order Taylor term |a * dL/da| accumulated in training (Molchanov et al. 2017,
   arXiv 1611.06440), keep the top (1 - s_r) of each layer's original channels and rebuild a smaller dense network
   (filters, batch-norm statistics, the next layer's inputs): what runs faster; masks alone do not.
3. Rewind (optional) — :meth:`Pruning.rewind`: the surviving weights return to theta_0 (lottery tickets, Frankle &
   Carbin 2019, arXiv 1803.03635) or to theta_k of an early epoch (Frankle et al. 2019, arXiv 1903.01611).
4. Fine-tune, then the next round; a new optimiser comes from the ``optimizer`` factory whenever the parameters
   were replaced or rewound (the learning-rate schedule carries on).

The checkpoint records the pruned widths and masks, so ``Pruning.load_from_checkpoint`` rebuilds the pruned
network; :func:`export_pruned` writes a mask-free, smaller dense checkpoint.

Run: ``python cli.py fit --config configs/pruning.yaml`` (unstructured) or ``configs/pruning_structured.yaml``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.utilities import rank_zero_warn
from torch.optim.lr_scheduler import ReduceLROnPlateau
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from datamodules.errors import SettingError
from lecture_modules.base import LectureModule, bad_setting, check_shapes
from lecture_modules.nets import NetSpec, fold_legacy_net_args
from lecture_modules.pruning.core import (
    TaylorAccumulator,
    channel_scores,
    conv_indices,
    count_params,
    keep_indices,
    make_permanent,
    prune_channels,
    reapply_masks,
    unstructured_round,
    widths_of,
)
from lecture_modules.pruning.report import round_stats
from lecture_modules.schedules import steps_every_optimizer_step

__all__ = ["Pruning", "export_pruned"]

Method = Literal["unstructured", "structured"]
# Arguments of older checkpoints that are the IterativePruning callback's now (the schedule and its reporting).
_SCHEDULE_KEYS = (
    "amount_per_round",
    "target_sparsity",
    "pretrain_epochs",
    "epochs_per_round",
    "rewind",
    "rewind_epoch",
    "latency_batch_sizes",
    "latency_repeats",
)


class Pruning(LectureModule):
    """Iterative magnitude / channel pruning with fine-tuning and lottery-ticket rewinding (lecture 13)."""

    lr_setting = "model.init_args.optimizer.init_args.lr"  # its optimiser factory (a top-level one is refused)

    def __init__(
        self,
        num_classes: int = 10,
        input_shape: tuple[int, int, int] = (1, 8, 8),
        net: NetSpec = NetSpec(kind="cnn", batch_norm=True, dropout=0.1),
        method: Method = "unstructured",
        scope: Literal["global", "layer"] = "global",
        criterion: Literal["l1", "l2", "taylor"] = "l1",
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        """
        Args:
            num_classes: number of classes (linked from the DataModule by the CLI).
            input_shape: (channels, height, width) of one image (linked from the DataModule by the CLI).
            net: the dense network: a CNN (``structured`` removes its channels) or, for ``unstructured``, an MLP.
            method: ``unstructured`` (mask single weights) or ``structured`` (remove whole conv channels).
            scope: unstructured only: rank weights over all layers together (``global``) or prune every layer to
                the same sparsity (``layer``). Structured pruning removes the same fraction of every layer.
            criterion: importance: ``l1`` (unstructured: |w|; structured: L1 norm of each filter), ``l2`` (filter
                L2 norm) or ``taylor`` (structured only: |activation x gradient| accumulated during training).
            optimizer: optimiser factory (``class_path`` + ``init_args``), called again after a round that replaced
                or rewound the parameters.
            lr_scheduler: learning-rate schedule factory over that optimiser; one schedule runs across all rounds.
        """
        super().__init__()
        net = NetSpec.of(net, owner="net")
        self._validate(num_classes, input_shape, net, method, scope, criterion)
        self.save_hyperparameters(ignore=["net", "optimizer", "lr_scheduler"])
        self.hparams["net"] = net.as_dict()  # plain data: the checkpoint stays weights_only
        self.optimizer_factory, self.lr_scheduler_factory = optimizer, lr_scheduler
        self.dense_spec = net
        self.net = net.build(input_shape, num_classes)
        self.dense_params = count_params(self.net)
        self.example_input_array = torch.zeros(2, *input_shape)
        # pruning state that travels in checkpoints (see on_save_checkpoint)
        self.kept: list[torch.Tensor] = [torch.arange(w) for w in widths_of(self.net)]  # surviving channels per conv
        self.taylor = TaylorAccumulator()
        if method == "structured" and criterion == "taylor":
            self.taylor.attach(self.net)
        self.train_acc, self.val_acc, self.test_acc = (MulticlassAccuracy(num_classes) for _ in range(3))
        self.val_loss, self.test_loss = MeanMetric(), MeanMetric()

    @staticmethod
    def _validate(num_classes, input_shape, net, method, scope, criterion) -> None:
        check_shapes(num_classes, input_shape)
        if method not in ("unstructured", "structured"):
            raise bad_setting("method", method, "'unstructured' or 'structured'")
        if method == "structured" and net.kind != "cnn":
            raise bad_setting(
                "net.kind", net.kind, "'cnn' with model.init_args.method 'structured' (it removes convolution channels)"
            )
        if scope not in ("global", "layer"):
            raise bad_setting("scope", scope, "'global' or 'layer'")
        if criterion not in ("l1", "l2", "taylor"):
            raise bad_setting("criterion", criterion, "'l1', 'l2' or 'taylor'")
        if method == "unstructured" and criterion != "l1":
            raise bad_setting(
                "criterion",
                criterion,
                "'l1' with model.init_args.method 'unstructured' (it ranks single weights by magnitude; l2 and "
                "taylor score channels: use method 'structured')",
            )

    @classmethod
    def upgrade_hparams(cls, hparams: dict[str, Any]) -> dict[str, Any]:
        """Checkpoints written before ``net`` existed stored ``hidden``, ``batch_norm`` and ``dropout`` (always a
        CNN) and the schedule, which the ``IterativePruning`` callback holds now."""
        out = {k: v for k, v in hparams.items() if k not in _SCHEDULE_KEYS}
        if "net" not in out and "hidden" in out:
            out = fold_legacy_net_args({**out, "backbone": "cnn"})
        return out

    # ------------------------------------------------------------------ step 1: train (the loss)
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # (B, C, H, W) -> (B, num_classes)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        x, y = batch[0], batch[1]
        logits = self(x)  # (B, K); Taylor hooks keep |a * dL/da| per channel on the backward pass
        loss = self.combine_losses({"ce": F.cross_entropy(logits, y)})
        self.train_acc.update(logits.detach(), y)
        self.log("train/acc", self.train_acc, on_step=False, on_epoch=True)
        return loss

    # ------------------------------------------------------------------ step 2: prune
    def prune(self, level: float) -> None:
        """Remove weights (masks) or channels (a smaller network) until the cumulative ``level`` is reached."""
        hp = self.hparams
        if hp.method == "unstructured":
            unstructured_round(self.net, level, hp.scope)
            return
        convs = conv_indices(self.net)
        if hp.criterion == "taylor" and len(self.taylor.scores) == len(convs):
            reduce = self.trainer.strategy.reduce if self._trainer is not None else lambda s, reduce_op: s
            scores = {i: reduce(s, reduce_op="sum") for i, s in self.taylor.scores.items()}  # (C_out,) each
        else:
            if hp.criterion == "taylor":
                rank_zero_warn("Pruning: no Taylor scores accumulated yet (no training step); using L1 norms")
            scores = channel_scores(self.net, "l2" if hp.criterion == "l2" else "l1")
        keep = {i: max(1, round(w * (1.0 - level))) for i, w in zip(convs, self.dense_spec.layer_widths)}
        idx = keep_indices(scores, keep)
        self.kept = [self.kept[n][idx[i].cpu()] for n, i in enumerate(convs)]
        self.net = prune_channels(self.net, idx)
        self.taylor.reset()
        if hp.criterion == "taylor":
            self.taylor.attach(self.net)

    # ------------------------------------------------------------------ step 3: rewind
    def rewind(self, state: dict[str, torch.Tensor]) -> None:
        """Surviving weights (and batch-norm state) back to ``state``, a ``state_dict`` of the dense network; the
        masks stay, and structured pruning keeps the same surviving channels."""
        hp = self.hparams
        source = self.dense_spec.build(hp.input_shape, hp.num_classes)
        source.load_state_dict(state)
        if hp.method == "structured":
            source = prune_channels(source.to(self.device), dict(zip(conv_indices(source), self.kept)))
        current = self.net.state_dict()
        with torch.no_grad():
            for key, value in source.state_dict().items():
                target = key if key in current else key[: -len("weight")] + "weight_orig"
                current[target].copy_(value)

    # ------------------------------------------------------------------ step 4: the optimiser, rebuilt by the factory
    def build_optimizer(self) -> torch.optim.Optimizer:
        """A new optimiser over the current parameters, from the ``optimizer`` factory."""
        return self.optimizer_factory(self.parameters())

    def configure_optimizers(self) -> Any:
        optimizer = self.build_optimizer()
        if self.lr_scheduler_factory is None:
            return optimizer
        scheduler = self.lr_scheduler_factory(optimizer)
        config: dict[str, Any] = {"scheduler": scheduler}
        if steps_every_optimizer_step(scheduler):  # the rule LectureCLI applies to the YAML lr_scheduler
            config["interval"] = "step"
        if isinstance(scheduler, ReduceLROnPlateau):
            config["monitor"] = getattr(scheduler, "monitor", "val/loss")
        return {"optimizer": optimizer, "lr_scheduler": config}

    def setup(self, stage: str) -> None:
        if "configure_optimizers" in vars(self):  # LightningCLI replaced it: a top-level optimizer/lr_scheduler
            raise SettingError(
                "Pruning takes its optimiser as model.init_args.optimizer (and model.init_args.lr_scheduler): a "
                "factory it calls again when pruning replaces the parameters. Move the top-level optimizer: / "
                "lr_scheduler: sections (or --optimizer / --lr_scheduler) under model.init_args."
            )

    # ------------------------------------------------------------------ reporting (for the callback)
    def pruning_stats(self, batch_sizes: list[int], repeats: int) -> dict[str, float | str]:
        """Sparsity, parameter counts, MACs, widths and (``repeats`` > 0) CPU latency per batch size of ``net``.
        For structured pruning the sparsity is the fraction of the dense network's parameters physically removed."""
        hp = self.hparams
        stats = round_stats(self.net, tuple(hp.input_shape), batch_sizes, repeats, measure=repeats > 0)
        if hp.method == "structured":
            stats["sparsity"] = 1.0 - stats["params"] / self.dense_params
        return stats

    # ------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["pruning"] = {
            "widths": widths_of(self.net),
            "kept": [k.clone() for k in self.kept],
            "masked": sorted(n for n, m in self.net.named_modules() if hasattr(m, "weight_mask")),
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
            pruned = NetSpec.of({**self.dense_spec.as_dict(), "widths": state["widths"]}, owner="net")
            self.net = pruned.build(hp.input_shape, hp.num_classes).to(self.device)
            if hp.criterion == "taylor" and hp.method == "structured":
                self.taylor.attach(self.net)
        reapply_masks(self.net, set(state["masked"]))
        self.kept = [k.clone() for k in state["kept"]]
        self.taylor.scores = dict(state["taylor"])
        super().on_load_checkpoint(checkpoint)  # RNG states last: building layers above draws random numbers

    # ------------------------------------------------------------------ evaluation
    def _evaluate(self, batch, stage: str) -> None:
        x, y = batch[0], batch[1]
        logits = self(x)
        self.log_accuracy_and_loss(stage, logits, y)

    def validation_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def predict_step(self, batch, batch_idx: int) -> torch.Tensor:
        return self(batch[0]).argmax(dim=-1)


def export_pruned(checkpoint_path: str | Path, out_path: str | Path) -> Path:
    """Write a mask-free checkpoint of a pruned run: ``Pruning.load_from_checkpoint(out_path)`` builds the smaller
    dense network directly (``net.widths`` = the pruned widths). Never overwrites."""
    out = Path(out_path)
    if out.exists():
        raise FileExistsError(f"export_pruned: {out} exists; choose another path")
    model = Pruning.load_from_checkpoint(checkpoint_path, map_location="cpu", weights_only=True)
    make_permanent(model.net)
    hparams = dict(model.hparams)
    if model.dense_spec.kind == "cnn":
        hparams["net"] = {**model.dense_spec.as_dict(), "widths": widths_of(model.net)}
    callbacks = torch.load(checkpoint_path, map_location="cpu", weights_only=True).get("callbacks") or {}
    history = next((s["history"] for k, s in callbacks.items() if str(k).startswith("IterativePruning")), [])
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "state_dict": {f"net.{k}": v for k, v in model.net.state_dict().items()},
            "hyper_parameters": hparams,
            "pytorch-lightning_version": __import__("lightning").__version__,
            "pruning_history": history,
        },
        out,
    )
    return out
