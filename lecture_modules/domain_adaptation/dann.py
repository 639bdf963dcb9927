"""Domain-adversarial training (DANN) — lecture 11: Ganin & Lempitsky 2015, arXiv 1409.7495.

Feature extractor G, label predictor F and domain classifier D. D learns to tell source features from target
features; a gradient reversal layer between G and D multiplies D's gradient by ``-lambda_p`` on its way into G, so
one backward pass trains G to help F and to fool D. ``lambda_p = 2 / (1 + exp(-gamma p)) - 1`` (gamma = 10) ramps
the adversarial signal in over training progress p; the config pairs it with the paper's SGD schedule
``lr_p = lr0 / (1 + 10 p)^0.75`` (``lecture_modules.schedules.InverseDecayLR``). Both are overridable.

Run: ``python cli.py fit --config configs/dann.yaml``
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F

from lecture_modules.domain_adaptation.common import DomainAdaptationModule
from lecture_modules.domain_adaptation.core import build_head, dann_lambda, grad_reverse

__all__ = ["DANN"]


class DANN(DomainAdaptationModule):
    """Domain-adversarial neural network: gradient reversal + domain classifier (arXiv 1409.7495, lecture 11)."""

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
        domain_weight: float = 1.0,
        grl_gamma: float = 10.0,
        grl_max: float = 1.0,
        grl_lambda: float | None = None,
    ) -> None:
        """
        Args:
            num_classes: number of classes (linked from the DataModule by the CLI).
            input_shape: (channels, height, width) of one image (linked from the DataModule by the CLI).
            conv_channels: convolution widths of the feature extractor (default [32, 64, 128]).
            feature_dim: size of the feature vector the heads read.
            hidden: hidden width of the label and domain classifier heads.
            batch_norm: batch normalisation in the extractor and heads.
            dropout: dropout probability in the extractor and the label classifier.
            embedding: 2-D embedding of the end-of-fit feature figure (``none`` skips the figure).
            embedding_samples: validation samples (half per domain) for the figure and the proxy A-distance.
            domain_weight: weight of the domain-classification loss in the total loss.
            grl_gamma: steepness gamma of the schedule ``lambda_p = 2 / (1 + exp(-gamma p)) - 1``.
            grl_max: the schedule is scaled to end at this value (1 in the paper).
            grl_lambda: a fixed reversal coefficient instead of the schedule (None: use the schedule).
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
        for name, value in (("domain_weight", domain_weight), ("grl_gamma", grl_gamma), ("grl_max", grl_max)):
            if value < 0:
                raise ValueError(f"DANN.{name} must be >= 0, got {value}")
        if grl_lambda is not None and grl_lambda < 0:
            raise ValueError(f"DANN.grl_lambda must be >= 0 or null, got {grl_lambda}")
        self.domain_classifier = build_head(feature_dim, hidden, 1, batch_norm, dropout=0.0)  # (B, D) -> (B, 1)

    def domain_logits(self, features: torch.Tensor) -> torch.Tensor:
        return self.domain_classifier(features)

    def grl_coefficient(self) -> float:
        """lambda_p at the current step: the fixed ``grl_lambda``, else ``grl_max * dann_lambda(p, grl_gamma)``."""
        if self.hparams.grl_lambda is not None:
            return float(self.hparams.grl_lambda)
        total = self.trainer.estimated_stepping_batches  # the loaders exist once training runs
        progress = self.global_step / total if math.isfinite(total) and total > 0 else 0.0
        return self.hparams.grl_max * dann_lambda(progress, self.hparams.grl_gamma)

    def training_step(self, batch: dict[str, list[torch.Tensor]], batch_idx: int) -> torch.Tensor:
        (x_s, y_s), (x_t,) = batch["source"], batch["target"]  # target batch carries no labels
        f_s, f_t = self.features(x_s), self.features(x_t)  # (Bs, D), (Bt, D); batch statistics per domain
        features = torch.cat([f_s, f_t])  # (Bs + Bt, D)
        logits = self.classifier(f_s)  # (Bs, K)
        coeff = self.grl_coefficient()
        d_logits = self.domain_classifier(grad_reverse(features, coeff)).squeeze(1)  # (Bs + Bt,)
        d_true = torch.cat([torch.zeros(len(x_s)), torch.ones(len(x_t))]).to(d_logits)
        loss = self.combine_losses(
            {
                "ce": F.cross_entropy(logits, y_s),
                "domain": self.hparams.domain_weight * F.binary_cross_entropy_with_logits(d_logits, d_true),
            }
        )
        self.log_train_acc(logits, y_s)
        self.log("train/grl_lambda", coeff, on_step=True, on_epoch=False)
        self.log("train/domain_acc", ((d_logits > 0).float() == d_true).float().mean(), on_step=False, on_epoch=True)
        return loss
