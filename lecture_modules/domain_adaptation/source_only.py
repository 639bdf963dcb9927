"""Domain adaptation baseline — lecture 11: the DANN/MCD network trained on labelled source data only.

No adaptation. Per batch of labelled source images (x_s, y_s):

1. features f_s = G(x_s);
2. source cross-entropy L_y = CE(F(f_s), y_s), minimised over G and F (the optimiser and schedule come from the
   YAML ``optimizer:`` / ``lr_scheduler:`` sections, the same as DANN's).

The target is only evaluated. The gap to ``target_oracle`` is the domain shift; what ``dann`` and ``mcd`` recover of
it is adaptation.

Run: ``python cli.py fit --config configs/source_only.yaml``
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lecture_modules.domain_adaptation.common import DomainAdaptationModule

__all__ = ["SourceOnly"]


class SourceOnly(DomainAdaptationModule):
    """Domain adaptation baseline: train on labelled source only, evaluate on the target (lecture 11)."""

    train_on = "source"

    def training_step(self, batch: dict[str, list[torch.Tensor]], batch_idx: int) -> torch.Tensor:
        x, y = batch[self.train_on]  # (B, C, H, W), (B,)
        logits = self(x)  # 1-2. F(G(x)): (B, K)
        loss = self.combine_losses({"ce": F.cross_entropy(logits, y)})
        self.log_train_acc(logits, y)
        return loss
