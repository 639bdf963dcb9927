"""Maximum Classifier Discrepancy (MCD) — lecture 11: Saito et al. 2018, arXiv 1712.02560.

A feature generator G and two classifiers F1, F2. Per batch, with manual optimisation:

* step A: train G, F1, F2 to classify the labelled source;
* step B: fix G; train F1, F2 to classify the source *and* disagree as much as possible on the target;
* step C: fix F1, F2; train G ``num_k`` times to make them agree on the target (minimise the discrepancy).

The discrepancy is ``mean |softmax(F1) - softmax(F2)|``; predictions use the ensemble of F1 and F2. MCD builds its
own two Adam optimisers (``lr``, ``weight_decay``), as in the paper, so its config has no ``optimizer:`` section.
Every ``optimizer.step()`` counts as a global step: one batch is ``2 + 1 + num_k`` steps.

Run: ``python cli.py fit --config configs/mcd.yaml``
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from lecture_modules.base import NonFiniteLossError
from lecture_modules.domain_adaptation.common import DomainAdaptationModule
from lecture_modules.domain_adaptation.core import build_head, classifier_discrepancy

__all__ = ["MCD"]


class MCD(DomainAdaptationModule):
    """Maximum classifier discrepancy: two classifiers, maximise/minimise their disagreement (arXiv 1712.02560)."""

    train_on = "source"

    def __init__(
        self,
        num_classes: int = 10,
        input_shape: tuple[int, int, int] = (3, 16, 16),
        conv_channels: list[int] | None = None,
        feature_dim: int = 128,
        hidden: int = 128,
        batch_norm: bool = True,
        dropout: float = 0.1,
        embedding: Literal["tsne", "pca", "none"] = "tsne",
        embedding_samples: int = 500,
        num_k: int = 4,
        lr: float = 2e-4,
        weight_decay: float = 5e-4,
    ) -> None:
        """
        Args:
            num_classes: number of classes (linked from the DataModule by the CLI).
            input_shape: (channels, height, width) of one image (linked from the DataModule by the CLI).
            conv_channels: convolution widths of the generator G (default [32, 64, 128]).
            feature_dim: size of the feature vector the classifiers read.
            hidden: hidden width of the classifiers F1 and F2.
            batch_norm: batch normalisation in the generator and the classifiers.
            dropout: dropout probability in the generator and the classifiers.
            embedding: 2-D embedding of the end-of-fit feature figure (``none`` skips the figure).
            embedding_samples: validation samples (half per domain) for the figure and the proxy A-distance.
            num_k: generator updates (step C) per batch; 4 in the paper's digit experiments.
            lr: learning rate of both Adam optimisers (2e-4 in the paper).
            weight_decay: weight decay of both optimisers (5e-4 in the paper).
        """
        super().__init__(
            num_classes,
            input_shape,
            conv_channels,
            feature_dim,
            hidden,
            batch_norm,
            dropout,
            embedding,
            embedding_samples,
        )
        if num_k < 1:
            raise ValueError(f"MCD.num_k must be >= 1, got {num_k}")
        if lr <= 0 or weight_decay < 0:
            raise ValueError(f"MCD.lr must be > 0 and MCD.weight_decay >= 0, got {lr}, {weight_decay}")
        self.classifier2 = build_head(feature_dim, hidden, num_classes, batch_norm, dropout)  # F2; F1 = classifier
        self.automatic_optimization = False

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        """Log of the mean of F1's and F2's class probabilities (the ensemble prediction). (B, D) -> (B, K)."""
        probs = (F.softmax(self.classifier(features), dim=1) + F.softmax(self.classifier2(features), dim=1)) / 2
        return probs.clamp_min(1e-12).log()

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        hp = self.hparams
        heads = [*self.classifier.parameters(), *self.classifier2.parameters()]
        return [
            torch.optim.Adam(self.features.parameters(), lr=hp.lr, weight_decay=hp.weight_decay),  # G
            torch.optim.Adam(heads, lr=hp.lr, weight_decay=hp.weight_decay),  # F1, F2
        ]

    def on_fit_start(self) -> None:
        if len(self.trainer.optimizers) != 2:
            raise ValueError(
                "MCD builds its own two optimisers (model.init_args.lr, model.init_args.weight_decay); remove the "
                "top-level `optimizer:` / `lr_scheduler:` sections from the config, which replace them with one"
            )

    def _source_ce(self, features: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits1, logits2 = self.classifier(features), self.classifier2(features)
        return F.cross_entropy(logits1, y) + F.cross_entropy(logits2, y), logits1

    def _check(self, name: str, value: torch.Tensor) -> None:
        if not torch.isfinite(value.detach()).all():
            raise NonFiniteLossError(
                f"MCD: loss term '{name}' is {value.item()} at global step {self.global_step} (epoch "
                f"{self.current_epoch}). Training stopped. Try a lower model.init_args.lr."
            )

    def _update(self, optimizer, loss: torch.Tensor) -> None:
        """Backward through every part, step ``optimizer`` only.

        The other part's gradients are computed but never applied (its optimiser zeroes them before its own next
        step). Freezing it instead would leave parameters out of a backward pass, which DDP's gradient reducer
        rejects.
        """
        optimizer.zero_grad()
        self.manual_backward(loss)
        optimizer.step()

    def step_a(self, x_s: torch.Tensor, y_s: torch.Tensor) -> torch.Tensor:
        """Step A: G, F1, F2 minimise the source cross-entropy of both classifiers."""
        opt_g, opt_f = self.optimizers()
        ce, logits1 = self._source_ce(self.features(x_s), y_s)
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
        f_s, f_t = self.features(x_s), self.features(x_t)  # (Bs, D), (Bt, D); G gets gradients but no step
        ce, _ = self._source_ce(f_s, y_s)
        discrepancy = classifier_discrepancy(self.classifier(f_t), self.classifier2(f_t))
        loss = ce - discrepancy
        self._check("step_b", loss)
        self._update(opt_f, loss)
        return discrepancy.detach()

    def step_c(self, x_t: torch.Tensor) -> torch.Tensor:
        """Step C: with F1 and F2 fixed, G minimises their discrepancy on the target (``num_k`` updates)."""
        opt_g = self.optimizers()[0]
        for _ in range(self.hparams.num_k):
            f_t = self.features(x_t)
            discrepancy = classifier_discrepancy(self.classifier(f_t), self.classifier2(f_t))
            self._check("step_c", discrepancy)
            self._update(opt_g, discrepancy)
        return discrepancy.detach()

    def training_step(self, batch: dict[str, list[torch.Tensor]], batch_idx: int) -> None:
        (x_s, y_s), (x_t,) = batch["source"], batch["target"]  # target batch carries no labels
        self.step_a(x_s, y_s)
        self.log("train/discrepancy_max", self.step_b(x_s, y_s, x_t), on_step=True, on_epoch=False)
        self.log("train/discrepancy", self.step_c(x_t), on_step=True, on_epoch=True)
