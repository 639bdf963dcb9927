"""Domain-adversarial training (DANN) — lecture 11: Ganin & Lempitsky 2015, arXiv 1409.7495 (JMLR version: Ganin
et al. 2016, arXiv 1505.07818).

Feature extractor G, label predictor F and domain classifier D (d = 0 source, 1 target). Per batch of labelled
source images (x_s, y_s) and unlabelled target images x_t:

1. features f_s = G(x_s), f_t = G(x_t) (each domain through G on its own, so batch norm sees one domain at a time);
2. label loss L_y = CE(F(f_s), y_s), on the source only;
3. domain loss L_d = BCE(D(R_lambda(f)), d) on f = [f_s; f_t], where the gradient reversal layer R_lambda is the
   identity forward and multiplies the gradient by -lambda_p backward;
4. one backward pass of L_y + domain_weight * L_d: F and D descend their losses, G descends L_y and *ascends* L_d
   (it learns features D cannot tell apart).

``lambda_p = 2 / (1 + exp(-gamma p)) - 1`` (gamma = 10) ramps the adversarial signal in over training progress p;
the config pairs it with the paper's SGD schedule ``lr_p = lr0 / (1 + 10 p)^0.75``
(``lecture_modules.schedules.InverseDecayLR``). Both are overridable.

Run: ``python cli.py fit --config configs/dann.yaml``
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from lecture_modules.base import bad_setting
from lecture_modules.domain_adaptation.common import DomainAdaptationModule
from lecture_modules.domain_adaptation.core import dann_lambda, grad_reverse

__all__ = ["DANN"]


class DANN(DomainAdaptationModule):
    """Domain-adversarial neural network: gradient reversal + domain classifier (arXiv 1409.7495, lecture 11)."""

    train_on = "source"

    def __init__(
        self,
        domain_weight: float = 1.0,
        grl_gamma: float = 10.0,
        grl_max: float = 1.0,
        grl_lambda: float | None = None,
        separate_domain_batches: bool = False,
        **kwargs: Any,
    ) -> None:
        """
        Args:
            domain_weight: weight of the domain-classification loss L_d in the total loss.
            grl_gamma: steepness gamma of the schedule ``lambda_p = 2 / (1 + exp(-gamma p)) - 1``.
            grl_max: the schedule is scaled to end at this value (1 in the paper).
            grl_lambda: a fixed reversal coefficient instead of the schedule (None: use the schedule).
            separate_domain_batches: pass f_s and f_t through D separately, so D's batch norm (if any) normalises
                each domain with its own batch statistics, as G's does (False: D sees ``[f_s; f_t]`` together).
            **kwargs: the shared arguments of :class:`DomainAdaptationModule` (shapes, ``net``, figure settings).
        """
        super().__init__(**kwargs)
        for name, value in (("domain_weight", domain_weight), ("grl_gamma", grl_gamma), ("grl_max", grl_max)):
            if value < 0:
                raise bad_setting(name, value, ">= 0")
        if grl_lambda is not None and grl_lambda < 0:
            raise bad_setting("grl_lambda", grl_lambda, ">= 0 or null (the schedule)")
        self.domain_classifier = self.net_spec.build_domain_classifier(self.hparams.input_shape)  # D: (B, D) -> (B, 1)

    def training_step(self, batch: dict[str, list[torch.Tensor]], batch_idx: int) -> torch.Tensor:
        (x_s, y_s), (x_t,) = batch["source"], batch["target"]  # target batch carries no labels
        f_s, f_t = self.features(x_s), self.features(x_t)  # 1. (Bs, D), (Bt, D); batch statistics per domain
        logits = self.classifier(f_s)  # 2. (Bs, K)
        coeff = self.grl_coefficient()
        d_logits = self.discriminate(f_s, f_t, coeff)  # 3. (Bs + Bt,)
        d_true = torch.cat([torch.zeros(len(x_s)), torch.ones(len(x_t))]).to(d_logits)  # 0 source, 1 target
        loss = self.combine_losses(  # 4. one backward: D descends L_d, G ascends it through the reversal
            {
                "ce": F.cross_entropy(logits, y_s),
                "domain": self.hparams.domain_weight * F.binary_cross_entropy_with_logits(d_logits, d_true),
            }
        )
        self.log_train_acc(logits, y_s)
        self.log("train/grl_lambda", coeff, on_step=True, on_epoch=False)
        self.log("train/domain_acc", ((d_logits > 0).float() == d_true).float().mean(), on_step=False, on_epoch=True)
        return loss

    def discriminate(self, f_s: torch.Tensor, f_t: torch.Tensor, coeff: float) -> torch.Tensor:
        """D's logits on the reversed features, source rows first: (Bs, D), (Bt, D) -> (Bs + Bt,)."""
        if self.hparams.separate_domain_batches:
            return torch.cat([self.domain_classifier(grad_reverse(f, coeff)) for f in (f_s, f_t)]).squeeze(1)
        return self.domain_classifier(grad_reverse(torch.cat([f_s, f_t]), coeff)).squeeze(1)

    def grl_coefficient(self) -> float:
        """lambda_p at the current step: the fixed ``grl_lambda``, else ``grl_max * dann_lambda(p, grl_gamma)``."""
        if self.hparams.grl_lambda is not None:
            return float(self.hparams.grl_lambda)
        total = self.trainer.estimated_stepping_batches  # the loaders exist once training runs
        progress = self.global_step / total if math.isfinite(total) and total > 0 else 0.0
        return self.hparams.grl_max * dann_lambda(progress, self.hparams.grl_gamma)

    def domain_logits(self, features: torch.Tensor) -> torch.Tensor:
        """D's logits (target = 1), used by the shared evaluation for ``val/domain_acc``. (B, D) -> (B, 1)."""
        return self.domain_classifier(features)
