"""Loading frozen teachers: a Lightning checkpoint of any lecture, a state-dict file, or a Hugging Face model.

Safety: checkpoints and state dicts are read with ``torch.load(weights_only=True)``, which refuses pickled code.
Lightning checkpoints and state dicts are rebuilt by the shared loader (:mod:`lecture_modules.checkpoints`): the
class named inside a checkpoint is only imported when it is a registered lecture; Hugging Face models load with
``trust_remote_code=False``. A loaded teacher is frozen: eval mode and ``requires_grad=False`` everywhere.
"""

from __future__ import annotations

import pickle
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from datamodules.errors import CheckpointError, DataPathError, SettingError
from lecture_modules.checkpoints import (
    BUILTIN_CHECKPOINTS,
    CheckpointNotFoundError,
    export_checkpoint,  # re-exported: it lived here before the second shipped checkpoint
    lecture_from_checkpoint,
    read_checkpoint,
    resolve_checkpoint_path,
)

__all__ = [
    "BUILTIN_TEACHERS",
    "HFImageTeacher",
    "TeacherSpec",
    "export_checkpoint",
    "freeze",
    "load_teacher",
    "resolve_teacher_path",
]

BUILTIN_TEACHERS = BUILTIN_CHECKPOINTS  # the shipped checkpoints (lecture_modules.checkpoints), by name
STATE_DICT_SUFFIXES = (".pt", ".pth", ".bin")


@dataclass
class TeacherSpec:
    """Where one teacher comes from.

    Attributes:
        path: a Lightning checkpoint (``.ckpt``), a state-dict file (``.pt``/``.pth``/``.bin``), a Hugging Face
            model folder or hub name, or ``builtin:digits_cnn`` (the CNN shipped for the embedded default data).
        kind: ``auto`` picks from ``path``; or ``lightning``, ``state_dict``, ``huggingface``.
        lecture: lecture (entry name, class name or class path) that builds the network for a state dict;
            for a Lightning checkpoint it overrides the class recorded in the file.
        lecture_args: arguments of that lecture's ``__init__`` (merged over the checkpoint's own hyper-parameters).
    """

    path: str
    kind: Literal["auto", "lightning", "state_dict", "huggingface"] = "auto"
    lecture: str | None = None
    lecture_args: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def freeze(module: nn.Module) -> nn.Module:
    """Eval mode and no gradients for every parameter; returns the module."""
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module


def resolve_teacher_path(path: str) -> Path:
    """``builtin:<name>`` -> the shipped file; anything else -> the path as given (expanded)."""
    try:
        return resolve_checkpoint_path(path)
    except CheckpointNotFoundError as exc:
        raise SettingError(f"model.init_args.teachers: {exc}") from exc


def _kind(spec: TeacherSpec, path: Path) -> str:
    if spec.kind != "auto":
        return spec.kind
    if path.suffix == ".ckpt":
        return "lightning"
    if path.suffix in STATE_DICT_SUFFIXES:
        return "state_dict"
    if path.is_dir() or not path.suffix:
        return "huggingface"
    raise SettingError(
        f"model.init_args.teachers: cannot tell the kind of teacher '{spec.path}' from its file name; set its kind to "
        "lightning, state_dict or huggingface"
    )


def _safe_load(path: Path, what: str) -> Any:
    if not path.is_file():
        raise DataPathError(f"teacher {what} not found: {path} (model.init_args.teachers: path)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"teacher {what} {path} holds objects other than tensors and plain containers, so it is not loaded "
            "(weights_only=True refuses pickled code). Re-save it as a state dict of tensors."
        ) from exc


def _load_lightning(spec: TeacherSpec, path: Path) -> nn.Module:
    ckpt = read_checkpoint(path)
    model = lecture_from_checkpoint(ckpt, source=str(path), lecture=spec.lecture, overrides=spec.lecture_args)
    model.trained_on = dict(ckpt.get("datamodule_hyper_parameters") or {})  # the teacher's data settings, if saved
    return model


def _load_state_dict(spec: TeacherSpec, path: Path) -> nn.Module:
    if spec.lecture is None:
        raise SettingError(
            f"model.init_args.teachers: the state dict {path} needs the teacher's 'lecture' (and 'lecture_args') to "
            "build its network"
        )
    state = _safe_load(path, "state dict")
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    ckpt = {"state_dict": state}
    return lecture_from_checkpoint(ckpt, source=str(path), lecture=spec.lecture, overrides=spec.lecture_args)


class HFImageTeacher(nn.Module):
    """A ``transformers`` image classifier as a teacher: images are resized / channel-converted to what it expects."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        config = model.config
        self.channels = int(getattr(config, "num_channels", 3))
        size = getattr(config, "image_size", None)
        self.size = tuple(size) if isinstance(size, list | tuple) else (size, size) if size else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] != self.channels:
            x = x.mean(dim=1, keepdim=True) if self.channels == 1 else x[:, :1].expand(-1, self.channels, -1, -1)
        if self.size is not None and tuple(x.shape[-2:]) != self.size:
            x = F.interpolate(x, size=self.size, mode="bilinear", align_corners=False)
        return self.model(pixel_values=x).logits  # (B, num_labels)


def _load_huggingface(spec: TeacherSpec) -> nn.Module:
    from transformers import AutoModelForImageClassification

    try:
        model = AutoModelForImageClassification.from_pretrained(spec.path, trust_remote_code=False)
    except OSError as exc:
        raise DataPathError(
            f"model.init_args.teachers: '{spec.path}' is neither a local Hugging Face model folder nor in the local "
            f"cache ({type(exc).__name__}: {exc})"
        ) from exc
    return HFImageTeacher(model)


def load_teacher(spec: TeacherSpec | dict[str, Any]) -> nn.Module:
    """Build and freeze one teacher. Its ``forward(x)`` returns logits (B, num_classes)."""
    spec = spec if isinstance(spec, TeacherSpec) else TeacherSpec(**spec)
    path = resolve_teacher_path(spec.path)
    kind = _kind(spec, path)
    if kind == "lightning":
        model = _load_lightning(spec, path)
    elif kind == "state_dict":
        model = _load_state_dict(spec, path)
    else:
        model = _load_huggingface(spec)
    return freeze(model)
