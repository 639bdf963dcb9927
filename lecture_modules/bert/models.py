"""Backbones for the BERT lecture, offline first, and the fine-tuning knobs (freezing, no-decay groups).

``model_name_or_path`` accepts ``tiny-bert`` (a 2-layer, 64-wide BERT initialised at random from a ``BertConfig``,
sized to the tiny WordPiece vocabulary), ``minilm`` (the packaged MiniLM), a local directory or a hub name; the
names are resolved, and their tokenizers loaded, by the data side (:mod:`datamodules.tokenization`), so the
lecture and its DataModule read one name the same way. Loaded through the ``transformers`` Auto classes with
``trust_remote_code=False``.
"""

from __future__ import annotations

from typing import Literal

from torch import nn

from datamodules.tokenization import (
    TINY_BERT,
    check_model_source,
    from_pretrained_kwargs,
    model_load_error,
    resolve_model_path,
    tiny_vocab,
)

__all__ = ["TINY_CONFIG", "Task", "freeze_backbone", "load_backbone", "no_decay_param_groups"]

TINY_CONFIG = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 256}

Task = Literal["classification", "qa"]


def load_backbone(task: Task, name_or_path: str, num_labels: int = 2, vocab_size: int | None = None) -> nn.Module:
    """A sequence-classification or question-answering model (Auto classes, ``trust_remote_code=False``)."""
    from transformers import AutoModelForQuestionAnswering, AutoModelForSequenceClassification, BertConfig

    auto = AutoModelForSequenceClassification if task == "classification" else AutoModelForQuestionAnswering
    extra = {"num_labels": num_labels} if task == "classification" else {}
    if name_or_path == TINY_BERT:
        config = BertConfig(vocab_size=vocab_size or len(tiny_vocab()), **TINY_CONFIG, **extra)
        return auto.from_config(config, trust_remote_code=False)
    path = resolve_model_path(name_or_path)
    check_model_source(name_or_path, path)
    try:
        return auto.from_pretrained(path, **from_pretrained_kwargs(path), **extra)
    except (OSError, ValueError) as exc:
        raise model_load_error(name_or_path, exc)  # noqa: B904 (the cause stays as context: see model_load_error)


# ------------------------------------------------------------------ fine-tuning knobs
def freeze_backbone(model: nn.Module, freeze_embeddings: bool, num_layers: int) -> int:
    """Freeze the embeddings and/or the first ``num_layers`` encoder layers; returns the frozen tensor count."""
    base = model.base_model
    layers = base.encoder.layer
    if num_layers > len(layers):
        raise ValueError(f"freeze_layers={num_layers} but the model has only {len(layers)} encoder layers")
    modules = ([base.embeddings] if freeze_embeddings else []) + list(layers[:num_layers])
    frozen = 0
    for module in modules:
        for p in module.parameters():
            p.requires_grad_(False)
            frozen += 1
    return frozen


def no_decay_param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: weight decay on weight matrices only, none on biases and LayerNorm parameters."""
    decay, no_decay = [], []
    norm_params = {id(p) for m in model.modules() if isinstance(m, nn.LayerNorm) for p in m.parameters(recurse=False)}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if name.endswith("bias") or id(p) in norm_params else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
