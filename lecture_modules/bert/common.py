"""What both BERT fine-tuning lectures share: the backbone and tokenizer, freezing, and the optimiser recipe of
Devlin et al. (AdamW without weight decay on biases and LayerNorm, linear warm-up then linear decay per step)."""

from __future__ import annotations

from typing import Any

import torch

from lecture_modules.base import LectureModule
from lecture_modules.bert.models import Task, freeze_backbone, load_backbone, load_tokenizer, no_decay_param_groups
from lecture_modules.schedules import WarmupLinearLR

__all__ = ["BertFineTuning"]

MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


class BertFineTuning(LectureModule):
    """Base of the BERT lectures: a ``transformers`` model for ``task`` plus its tokenizer (``self.tokenizer``)."""

    task: Task

    def _build(
        self,
        model_name_or_path: str,
        num_labels: int,
        learning_rate: float,
        weight_decay: float,
        warmup_steps: int | float,
        adam_epsilon: float,
        freeze_embeddings: bool,
        freeze_layers: int,
    ) -> None:
        name = type(self).__name__
        if learning_rate <= 0:
            raise ValueError(f"{name}.learning_rate must be > 0, got {learning_rate}")
        if weight_decay < 0:
            raise ValueError(f"{name}.weight_decay must be >= 0, got {weight_decay}")
        if freeze_layers < 0:
            raise ValueError(f"{name}.freeze_layers must be >= 0, got {freeze_layers}")
        self.tokenizer = load_tokenizer(model_name_or_path)
        self.model = load_backbone(self.task, model_name_or_path, num_labels, vocab_size=len(self.tokenizer))
        self.model.train()  # from_pretrained returns eval mode, and Lightning keeps a module's mode: dropout on
        self.frozen_tensors = freeze_backbone(self.model, freeze_embeddings, freeze_layers)

    def model_inputs(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        return {k: batch[k] for k in MODEL_INPUTS if k in batch}

    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        groups = no_decay_param_groups(self.model, hp.weight_decay)
        # One fused kernel for all tensors (CPU, CUDA), as transformers.Trainer does, in full precision only:
        # Lightning cannot clip the gradients of a fused optimiser under mixed precision.
        precision = str(self._trainer.precision) if self._trainer is not None else "32-true"
        fused = precision.startswith(("32", "64")) and all(
            p.device.type in ("cpu", "cuda") for g in groups for p in g["params"]
        )
        optimizer = torch.optim.AdamW(groups, lr=hp.learning_rate, eps=hp.adam_epsilon, fused=fused)
        scheduler = WarmupLinearLR(optimizer, warmup_steps=hp.warmup_steps)  # length fixed at fit start
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
