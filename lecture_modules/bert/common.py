"""What both BERT fine-tuning lectures share: the pre-trained backbone, freezing, and the optimiser recipe of
Devlin et al. (AdamW without weight decay on biases and LayerNorm, linear warm-up then linear decay per step).

Tokenisation is the DataModule's (:mod:`datamodules.tokenization`): the CLI links ``model_name_or_path`` to the
DataModule's ``tokenizer_name_or_path``, and :meth:`BertFineTuning.setup` checks the two agree.
"""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_warn

from datamodules.errors import SettingError
from datamodules.tokenization import MODEL_INPUTS
from lecture_modules.base import LectureModule, bad_setting
from lecture_modules.bert.models import Task, freeze_backbone, load_backbone, no_decay_param_groups
from lecture_modules.schedules import WarmupLinearLR

__all__ = ["BertFineTuning"]


class BertFineTuning(LectureModule):
    """Base of the BERT lectures: a ``transformers`` model for ``task`` (``self.model``), fine-tuned end to end."""

    task: Task
    lr_setting = "model.init_args.learning_rate"  # the lecture builds its own AdamW

    def __init__(
        self,
        model_name_or_path: str = "tiny-bert",
        learning_rate: float = 5e-5,
        weight_decay: float = 0.01,
        warmup_steps: int | float = 0.1,
        adam_epsilon: float = 1e-8,
        freeze_embeddings: bool = False,
        freeze_layers: int = 0,
    ) -> None:
        """
        Args:
            model_name_or_path: ``tiny-bert`` (random init, tests), ``minilm`` (packaged MiniLM, needs the
                ``minilm`` extra), a local model directory or a hub name (cache only when ``HF_HUB_OFFLINE``).
            learning_rate: AdamW peak learning rate.
            weight_decay: AdamW weight decay on weight matrices (never on biases and LayerNorm).
            warmup_steps: linear warm-up length in optimiser steps, or a fraction of all steps when below 1.
            adam_epsilon: AdamW epsilon.
            freeze_embeddings: keep the embedding layer fixed.
            freeze_layers: keep the first N encoder layers fixed.
        """
        super().__init__()
        if learning_rate <= 0:
            raise bad_setting("learning_rate", learning_rate, "> 0")
        if weight_decay < 0:
            raise bad_setting("weight_decay", weight_decay, ">= 0")
        if isinstance(warmup_steps, float) and not 0.0 <= warmup_steps < 1.0:
            raise bad_setting("warmup_steps", warmup_steps, "in [0, 1) as a fraction of all steps, or an int of steps")
        if not isinstance(warmup_steps, float) and warmup_steps < 0:
            raise bad_setting("warmup_steps", warmup_steps, ">= 0")
        if adam_epsilon <= 0:
            raise bad_setting("adam_epsilon", adam_epsilon, "> 0")
        if freeze_layers < 0:
            raise bad_setting("freeze_layers", freeze_layers, ">= 0")
        self.save_hyperparameters()  # with the lecture's own arguments (Lightning collects every __init__ frame)

    def build_backbone(self, num_labels: int = 2) -> None:
        """Load ``self.model`` (the ``task`` head on ``model_name_or_path``), in training mode, frozen as asked."""
        hp = self.hparams
        self.model = load_backbone(self.task, hp.model_name_or_path, num_labels=num_labels)
        self.model.train()  # from_pretrained returns eval mode, and Lightning keeps a module's mode: dropout on
        layers = self.model.config.num_hidden_layers
        if hp.freeze_layers > layers:
            raise bad_setting(
                "freeze_layers", hp.freeze_layers, f"<= {layers} (the encoder layers of {hp.model_name_or_path!r})"
            )
        self.frozen_tensors = freeze_backbone(self.model, hp.freeze_embeddings, hp.freeze_layers)

    def setup(self, stage: str) -> None:
        """Fail before training when the DataModule's tokenizer has ids the model cannot embed; warn when it
        names another model (outside the CLI, which links the two names)."""
        datamodule = self.trainer.datamodule if self._trainer is not None else None
        tokenizer = getattr(datamodule, "tokenizer", None)
        if tokenizer is None:
            return
        name = self.hparams.model_name_or_path
        data_name = getattr(datamodule, "tokenizer_name_or_path", name)
        embedded = self.model.get_input_embeddings().num_embeddings
        if len(tokenizer) > embedded:
            raise SettingError(
                f"{type(datamodule).__name__}.tokenizer_name_or_path {data_name!r} has {len(tokenizer)} tokens but "
                f"the model {name!r} embeds only {embedded}: tokenise with the model's own tokenizer, "
                f"tokenizer_name_or_path={name!r}"
            )
        if data_name != name:
            rank_zero_warn(f"the data is tokenised with {data_name!r} but the model is {name!r}")

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
