"""Maximum Classifier Discrepancy (MCD) — lecture 11: Saito et al. 2018, arXiv 1712.02560.

A feature generator G and two classifiers F1, F2 with class probabilities p1, p2. The discrepancy on the target is
``d(p1, p2) = 1/K sum_k |p1_k - p2_k|`` (averaged over the batch). Per batch of labelled source images (x_s, y_s)
and unlabelled target images x_t, with manual optimisation:

1. step A: ``min over G, F1, F2`` of the source cross-entropy ``L(x_s, y_s)`` of both classifiers;
2. step B: G fixed, ``min over F1, F2`` of ``L(x_s, y_s) - d(p1(x_t), p2(x_t))``: classify the source and
   disagree on the target as much as possible (this finds target samples outside the source support);
3. step C: F1, F2 fixed, ``min over G`` of ``d(p1(x_t), p2(x_t))``, ``num_k`` times: move target features to
   where the classifiers agree.

Predictions use the ensemble of F1 and F2. Two optimisers, built from the one factory ``model.init_args.optimizer``
(default: the paper's Adam, lr 2e-4, weight decay 5e-4), in this order: [0] over G, [1] over F1 and F2. A
top-level ``optimizer:`` section is refused: LightningCLI would replace both with one optimiser over everything.
Every ``optimizer.step()`` counts as a global step: one batch is ``2 + 1 + num_k`` steps. A batch passes ``3 + num_k``
batches through G forward and ``1 + num_k`` backward (step B holds G fixed, so it needs no backward through it).

Run: ``python cli.py fit --config configs/mcd.yaml``
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import OptimizerCallable
from torch.nn.parallel import DistributedDataParallel

from datamodules.errors import SettingError
from lecture_modules.base import bad_setting
from lecture_modules.domain_adaptation.common import DomainAdaptationModule
from lecture_modules.domain_adaptation.core import classifier_discrepancy, describe_optimizer, optimizer_factory

__all__ = ["MCD", "PAPER_OPTIMIZER"]

# The paper's optimiser for G and for F1 + F2 (digit experiments), as plain data so it is a serialisable default.
PAPER_OPTIMIZER = {"class_path": "torch.optim.Adam", "init_args": {"lr": 2e-4, "weight_decay": 5e-4}}


class MCD(DomainAdaptationModule):
    """Maximum classifier discrepancy: two classifiers, maximise/minimise their disagreement (arXiv 1712.02560)."""

    train_on = "source"
    lr_setting = "model.init_args.optimizer.init_args.lr"  # both optimisers come from this factory

    def __init__(self, num_k: int = 4, optimizer: OptimizerCallable = PAPER_OPTIMIZER, **kwargs: Any) -> None:
        """
        Args:
            num_k: generator updates (step C) per batch; 4 in the paper's digit experiments.
            optimizer: the optimiser factory, called once for G and once for F1 + F2 (the paper's Adam, lr 2e-4,
                weight decay 5e-4); in a config ``{class_path: torch.optim.Adam, init_args: {lr: ...}}``.
            **kwargs: the shared arguments of :class:`DomainAdaptationModule` (shapes, ``net``, figure settings).
        """
        super().__init__(**kwargs)
        if num_k < 1:
            raise bad_setting("num_k", num_k, ">= 1")
        self.make_optimizer = optimizer_factory(optimizer, owner="model.init_args.optimizer")
        given = self.hparams.get("optimizer")  # the CLI's plain config, or (a direct call) the argument itself
        given = given if isinstance(given, Mapping) else optimizer
        self.hparams["optimizer"] = describe_optimizer(given, owner="model.init_args.optimizer")  # plain: weights_only
        self.classifier2 = self.net_spec.build_classifier(
            self.hparams.num_classes, self.hparams.input_shape
        )  # F2; F1 = self.classifier
        self.automatic_optimization = False

    @classmethod
    def upgrade_hparams(cls, hparams: Mapping[str, Any]) -> dict[str, Any]:
        """Checkpoints written before ``optimizer`` existed stored ``lr`` and ``weight_decay`` of two Adams (and
        the network's arguments before ``net``)."""
        out = super().upgrade_hparams(hparams)
        if "optimizer" not in out and ("lr" in out or "weight_decay" in out):
            init_args = {**PAPER_OPTIMIZER["init_args"]}
            init_args.update({key: out.pop(key) for key in ("lr", "weight_decay") if key in out})
            out["optimizer"] = {"class_path": PAPER_OPTIMIZER["class_path"], "init_args": init_args}
        return out

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        """The factory called once per parameter group, in this order: [0] G, [1] F1 and F2."""
        heads = [*self.classifier.parameters(), *self.classifier2.parameters()]
        return [self.make_optimizer(self.features.parameters()), self.make_optimizer(heads)]

    def training_step(self, batch: dict[str, list[torch.Tensor]], batch_idx: int) -> None:
        (x_s, y_s), (x_t,) = batch["source"], batch["target"]  # (B, C, H, W), (B,); target carries no labels
        self.step_a(x_s, y_s)
        self.log("train/discrepancy_max", self.step_b(x_s, y_s, x_t), on_step=True, on_epoch=False)
        self.log("train/discrepancy", self.step_c(x_t), on_step=True, on_epoch=True)

    def step_a(self, x_s: torch.Tensor, y_s: torch.Tensor) -> torch.Tensor:
        """Step A: G, F1, F2 minimise the source cross-entropy of both classifiers."""
        opt_g, opt_f = self.optimizers()
        ce, logits1 = self._source_ce(self.features(x_s), y_s)  # (), (Bs, K)
        loss = self.combine_losses({"ce": ce})
        opt_g.zero_grad()
        opt_f.zero_grad()
        self.manual_backward(loss)
        opt_g.step()
        opt_f.step()
        self.log_train_acc(logits1, y_s)
        return loss

    def step_b(self, x_s: torch.Tensor, y_s: torch.Tensor, x_t: torch.Tensor) -> torch.Tensor:
        """Step B: with G fixed, F1 and F2 minimise source cross-entropy minus their discrepancy on the target."""
        opt_f = self.optimizers()[1]
        with self._generator_fixed():
            f_s, f_t = self.features(x_s), self.features(x_t)  # (Bs, D), (Bt, D)
        ce, _ = self._source_ce(f_s, y_s)
        discrepancy = classifier_discrepancy(self.classifier(f_t), self.classifier2(f_t))  # ()
        loss = ce - discrepancy
        self._check("step_b", loss)
        self._update(opt_f, loss)
        return discrepancy.detach()

    def step_c(self, x_t: torch.Tensor) -> torch.Tensor:
        """Step C: with F1 and F2 fixed, G minimises their discrepancy on the target (``num_k`` updates)."""
        opt_g = self.optimizers()[0]
        with self._classifiers_fixed():
            for _ in range(self.hparams.num_k):
                f_t = self.features(x_t)  # (Bt, D)
                discrepancy = classifier_discrepancy(self.classifier(f_t), self.classifier2(f_t))  # ()
                self._check("step_c", discrepancy)
                self._update(opt_g, discrepancy)
        return discrepancy.detach()

    # ------------------------------------------------------------------ below the algorithm
    def classify(self, features: torch.Tensor) -> torch.Tensor:
        """Log of the mean of F1's and F2's class probabilities (the ensemble prediction). (B, D) -> (B, K)."""
        probs = (F.softmax(self.classifier(features), dim=1) + F.softmax(self.classifier2(features), dim=1)) / 2
        return probs.clamp_min(1e-12).log()

    def on_fit_start(self) -> None:
        if len(self.trainer.optimizers) != 2:
            raise SettingError(
                "MCD builds its two optimisers (G; F1 + F2) from model.init_args.optimizer; remove the top-level "
                "`optimizer:` / `lr_scheduler:` sections from the config and set model.init_args.optimizer instead "
                "(the top-level section replaces both with one optimiser over every parameter)"
            )

    def _source_ce(self, features: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits1, logits2 = self.classifier(features), self.classifier2(features)  # (B, K) each
        return F.cross_entropy(logits1, y) + F.cross_entropy(logits2, y), logits1

    def _check(self, name: str, value: torch.Tensor) -> None:
        """Stop on a non-finite step-B or step-C loss; the hint names ``model.init_args.optimizer.init_args.lr``."""
        self.check_finite({name: value})

    def _update(self, optimizer, loss: torch.Tensor) -> None:
        optimizer.zero_grad()
        self.manual_backward(loss)
        optimizer.step()

    @contextlib.contextmanager
    def _generator_fixed(self) -> Iterator[None]:
        """Step B holds G fixed: its forward runs without autograd, which skips a backward pass through G whose
        gradients would never be applied (opt_g zeroes them before its next step). Results are unchanged (tested).
        Under DDP, whose reducer expects every parameter in every backward pass, G still gets its unused gradients.
        """
        with contextlib.nullcontext() if self._reducer_wants_every_parameter() else torch.no_grad():
            yield

    @contextlib.contextmanager
    def _classifiers_fixed(self) -> Iterator[None]:
        """Step C holds F1 and F2 fixed: their parameters are frozen (no weight gradients), except under DDP."""
        heads = [*self.classifier.parameters(), *self.classifier2.parameters()]
        frozen = [] if self._reducer_wants_every_parameter() else [p for p in heads if p.requires_grad]
        for p in frozen:
            p.requires_grad_(False)
        try:
            yield
        finally:
            for p in frozen:
                p.requires_grad_(True)

    def _reducer_wants_every_parameter(self) -> bool:
        model = self.trainer.model if self._trainer is not None else None
        return isinstance(model, DistributedDataParallel) and not model.find_unused_parameters
