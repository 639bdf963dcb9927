"""Rebuild any registered lecture from its checkpoint: the one loader for "a checkpoint of another lecture".

A lecture that takes another lecture's checkpoint as an argument (a distillation teacher, a model to explain or
to attack) calls :func:`load_lecture` and then ``model.logits(x)`` (:meth:`LectureModule.logits`); it never
imports the other lecture. The rules, decided once:

1. The file is read with ``torch.load(weights_only=True)``: tensors and plain containers only, no pickled code.
   A file that needs more is refused with a :class:`~datamodules.errors.CheckpointError` naming it and saying why
   (every mistake in a checkpoint is a ``CheckpointError``, a ``ValueError``; a missing file is also a
   ``FileNotFoundError``).
2. The class comes from the checkpoint's hyper-parameters (``_class_path``, written by LightningCLI), or from
   ``lecture=`` (entry name, class name or class path) — and only if it is a registered lecture
   (entry-point group ``ml_lectures.lectures``), so a checkpoint never names arbitrary code to import.
3. The hyper-parameters pass through ``cls.upgrade_hparams`` (older argument names mapped to today's), then
   ``overrides`` are set over them (and upgraded too), and the lecture is built the way LightningCLI builds it.
4. The state dict loads strictly (every key, every shape); the model is returned in eval mode on
   ``map_location``. Training state (optimisers, loops, the saved RNG states) is ignored. Building the module
   draws its initial weights from the global RNG before they are overwritten, as constructing it would.

Run-time example: ``teacher = load_lecture("runs/x/last.ckpt"); scores = teacher.logits(images)``.

Checkpoints shipped with the package are named ``builtin:<name>`` (``builtin:digits_cnn``) wherever a checkpoint
path is taken; :func:`resolve_checkpoint_path` maps the name to the file (:data:`BUILTIN_CHECKPOINTS`), so no
lecture needs to know where another topic keeps its assets.

``cli.py``'s ``--ckpt_path`` (resume, test, predict) uses :func:`read_checkpoint` and
:func:`require_config_lecture`: a checkpoint of another lecture, or saved with other hyper-parameters than the
config's, stops the run before Lightning restores it, unless ``--model_from_ckpt true`` asks for the checkpoint's.
"""

from __future__ import annotations

import pickle
import re
import struct
import zipfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from datamodules.errors import CheckpointError
from lecture_modules.base import LectureModule
from lecture_modules.registry import LectureEntry, LectureNotFoundError, discover, resolve

__all__ = [
    "BUILTIN_CHECKPOINTS",
    "BUILTIN_PREFIX",
    "CheckpointNotFoundError",
    "export_checkpoint",
    "hparam_differences",
    "lecture_from_checkpoint",
    "load_classifier",
    "load_lecture",
    "read_checkpoint",
    "require_config_lecture",
    "resolve_checkpoint_path",
]

INTERNAL_HPARAMS = ("_class_path", "_instantiator")  # written by LightningCLI next to the __init__ arguments
OPT_IN = "--model_from_ckpt true"  # cli.py's flag: build the model from the checkpoint, not from the config

BUILTIN_PREFIX = "builtin:"
_PACKAGE = Path(__file__).resolve().parent
BUILTIN_CHECKPOINTS: dict[str, Path] = {
    # configs/classification.yaml's CNN trained on the digits (16x16, split seed 0); shipped for distillation
    "digits_cnn": _PACKAGE / "distillation" / "assets" / "digits_cnn_teacher.ckpt",
    # configs/bert_classification.yaml's tiny BERT fine-tuned on the embedded sentiment corpus (`make tiny-bert`);
    # shipped for configs/xai_text.yaml
    "tiny_bert_sentiment": _PACKAGE / "bert" / "assets" / "tiny_bert_sentiment.ckpt",
}
"""``builtin:<name>`` -> the checkpoint file shipped in the package (found by path: nothing is imported)."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """No checkpoint file at the path given."""


def resolve_checkpoint_path(path: str | Path) -> Path:
    """``builtin:<name>`` -> the shipped file of :data:`BUILTIN_CHECKPOINTS`; any other path as given (``~``
    expanded). Whether the file exists is :func:`read_checkpoint`'s to check. :func:`load_lecture` resolves its
    ``path`` with it; a lecture that reads checkpoints another way calls it first.

    Raises:
        CheckpointNotFoundError: an unknown ``builtin:`` name (the message lists the known ones).
    """
    text = str(path)
    if not text.startswith(BUILTIN_PREFIX):
        return Path(text).expanduser()
    name = text[len(BUILTIN_PREFIX) :]
    if name not in BUILTIN_CHECKPOINTS:
        known = ", ".join(BUILTIN_PREFIX + n for n in BUILTIN_CHECKPOINTS)
        raise CheckpointNotFoundError(f"unknown built-in checkpoint {text!r}; available: {known}")
    return BUILTIN_CHECKPOINTS[name]


def read_checkpoint(path: str | Path, *, map_location: Any = "cpu") -> dict[str, Any]:
    """The checkpoint at ``path`` as plain data (``weights_only=True``).

    Raises:
        CheckpointNotFoundError: no file at ``path`` (a ``FileNotFoundError``).
        CheckpointError: the file is refused (pickled objects) or is not a readable PyTorch checkpoint.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else "not found"
        raise CheckpointNotFoundError(
            f"checkpoint {what}: {path}", hint="give the path of a .ckpt file that cli.py fit wrote"
        )
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(f"checkpoint {path} is refused: {_refusal(exc)}") from exc
    except (RuntimeError, EOFError, OSError, struct.error, zipfile.BadZipFile) as exc:
        raise CheckpointError(
            f"checkpoint {path} is not a readable PyTorch file ({type(exc).__name__}: {exc})"
        ) from exc
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict"), dict):
        raise CheckpointError(f"checkpoint {path} has no 'state_dict'; is it a Lightning checkpoint?")
    return ckpt


def export_checkpoint(src: str | Path, dst: str | Path) -> Path:
    """Write a weights-only file to ship from a Lightning checkpoint: the weights, the lecture class and its
    hyper-parameters, and the DataModule's hyper-parameters (so the data it was trained on is on record).
    Optimiser and loop state are dropped. Refuses to overwrite ``dst`` (``make teacher``, ``make tiny-bert``)."""
    src, dst = Path(src), Path(dst)
    if dst.exists():
        raise FileExistsError(f"{dst} exists; remove it first to replace it")
    ckpt = read_checkpoint(src)
    keep = ("state_dict", "hyper_parameters", "datamodule_hyper_parameters", "pytorch-lightning_version")
    dst.parent.mkdir(parents=True, exist_ok=True)
    torch.save({k: ckpt[k] for k in keep if k in ckpt}, dst)
    return dst


def _refusal(exc: pickle.UnpicklingError) -> str:
    """Why ``torch.load(weights_only=True)`` refused a file, in one sentence."""
    message = str(exc)
    named = re.search(r"Unsupported global: GLOBAL (\S+)", message)
    if named is not None:
        return (
            f"it holds a pickled Python object ({named.group(1)}), and checkpoints load with weights_only=True, "
            "which never imports or runs pickled code. Re-save it as plain data (tensors, numbers, strings, lists "
            "and dicts)."
        )
    reason = re.search(r"WeightsUnpickler error: \s*(.+)", message)
    detail = f" ({reason.group(1).strip()})" if reason else ""
    return (
        f"torch.load(weights_only=True) cannot read it{detail}: it is not a checkpoint of plain data (tensors, "
        "numbers, strings, lists and dicts), and pickled code is never run."
    )


def load_lecture(
    path: str | Path,
    *,
    lecture: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    map_location: Any = "cpu",
) -> LectureModule:
    """Rebuild the lecture saved in the checkpoint at ``path``, with its weights, in eval mode.

    Args:
        path: a Lightning checkpoint written by ``cli.py`` (or any file with ``state_dict`` and
            ``hyper_parameters``), or a shipped one by name, ``builtin:<name>`` (:data:`BUILTIN_CHECKPOINTS`).
        lecture: the lecture to build instead of the one the checkpoint records (entry name, class name or class
            path); needed for a checkpoint without ``_class_path``.
        overrides: ``__init__`` arguments (today's names) set over the checkpoint's hyper-parameters.
        map_location: where the tensors go (``torch.load``'s ``map_location``).

    Raises:
        CheckpointNotFoundError: no file at ``path``, or an unknown ``builtin:`` name.
        CheckpointError: the file is refused or unreadable, its lecture is not registered, or its weights do not
            fit.
        lecture_modules.registry.PluginLoadError: the recorded lecture is registered but broken or unavailable.
    """
    ckpt = read_checkpoint(resolve_checkpoint_path(path), map_location=map_location)
    return lecture_from_checkpoint(ckpt, source=str(path), lecture=lecture, overrides=overrides)


def load_classifier(path: str | Path, *, input_shape: Sequence[int], num_classes: int, label: str) -> LectureModule:
    """A classifier lecture from its checkpoint (:func:`load_lecture`), frozen in eval mode, checked to take the
    data's images and to give one logit per class: what a lecture that evaluates other lectures' models loads.

    Args:
        path: the checkpoint, or ``builtin:<name>``.
        input_shape: the data's (C, H, W); the model's ``logits`` must take a batch of them.
        num_classes: the data's number of classes; the model must give as many logits.
        label: how messages name the model and its setting, e.g. ``model.init_args.checkpoint (a.ckpt)``.

    Raises:
        CheckpointError: the file cannot be loaded, or the model does not fit the data (the message names
            ``label``).
    """
    try:
        lecture = load_lecture(path)
    except (FileNotFoundError, ValueError) as exc:
        raise CheckpointError(f"{label}: {exc}") from exc
    lecture.eval().requires_grad_(False)
    try:
        with torch.no_grad():
            out = lecture.logits(torch.zeros(2, *input_shape))
    except RuntimeError as exc:
        raise CheckpointError(
            f"{label} does not take the data's images of shape {tuple(input_shape)}: {str(exc).splitlines()[0]}"
        ) from exc
    if out.shape[-1] != num_classes:
        raise CheckpointError(f"{label} has {out.shape[-1]} classes; the data has {num_classes}")
    return lecture


def lecture_from_checkpoint(
    ckpt: Mapping[str, Any],
    *,
    source: str,
    lecture: str | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> LectureModule:
    """:func:`load_lecture` for a checkpoint already read (``source`` names it in messages). A bare state dict is
    ``{"state_dict": state}`` with ``lecture`` (and ``overrides``) saying what to build."""
    hparams = dict(ckpt.get("hyper_parameters") or {})
    recorded = hparams.get("_class_path")
    for key in INTERNAL_HPARAMS:
        hparams.pop(key, None)
    entry = _registered(lecture or recorded, source)
    # Upgraded before and after the overrides: either may use older argument names.
    init_args = entry.cls.upgrade_hparams({**entry.cls.upgrade_hparams(hparams), **(overrides or {})})
    model = _build(entry, init_args, source)
    _load_state_dict(model, ckpt["state_dict"], source)
    return model.eval()


def _registered(query: str | None, source: str) -> LectureEntry:
    """The registered (and loaded) lecture for ``query``; a class path that moved is found by its class name."""
    if query is None:
        raise CheckpointError(
            f"checkpoint {source} does not record its lecture class (it was not written by cli.py); "
            "say which lecture it is (lecture=<name>)"
        )
    entries = discover()
    try:
        return resolve(query, entries)
    except LectureNotFoundError as exc:
        class_name = query.rsplit(".", 1)[-1]
        if class_name != query and any(e.class_name == class_name for e in entries.values()):
            return resolve(class_name, entries)
        raise CheckpointError(
            f"checkpoint {source}: {exc} Only registered lectures are rebuilt from a checkpoint."
        ) from exc


def _build(entry: LectureEntry, init_args: dict[str, Any], source: str) -> LectureModule:
    """Instantiate like LightningCLI does (nested dicts become the typed arguments: specs, tuples, class paths)."""
    from lightning.pytorch.cli import instantiate_module

    try:
        return instantiate_module(LectureModule, {"_class_path": entry.class_path, **init_args})
    except (TypeError, ValueError) as exc:
        raise CheckpointError(
            f"checkpoint {source}: cannot build lecture '{entry.name}' ({entry.class_path}) from its "
            f"hyper-parameters: {exc}"
        ) from exc


def _load_state_dict(model: LectureModule, state_dict: Mapping[str, torch.Tensor], source: str) -> None:
    """Every key and every shape must match (strict)."""
    try:
        result = model.load_state_dict(state_dict, strict=False)
    except RuntimeError as exc:  # size mismatches raise even when not strict
        raise CheckpointError(f"checkpoint {source}: weights do not fit {type(model).__name__}: {exc}") from exc
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointError(
            f"checkpoint {source}: weights do not fit {type(model).__name__}: missing {result.missing_keys[:5]}, "
            f"unexpected {result.unexpected_keys[:5]}. Check the lecture and its arguments."
        )


# ---------------------------------------------------------------------- --ckpt_path against the config
def require_config_lecture(
    ckpt: Mapping[str, Any],
    *,
    source: str,
    class_path: str,
    init_args: Mapping[str, Any],
    upgrade: Callable[[Mapping[str, Any]], dict[str, Any]] | None = None,
    given_by: str = "the config sets",
    hint: str = f"set the checkpoint's values in the config or on the command line, or add {OPT_IN} to take the "
    "checkpoint's lecture and settings",
) -> None:
    """Stop when the checkpoint is of another lecture than the config's model, or was saved with other
    hyper-parameters: Lightning would otherwise replace the config's model with the checkpoint's, or train the
    config's architecture from weights that do not belong to it.

    Args:
        ckpt: the checkpoint, as :func:`read_checkpoint` returns it.
        source: the checkpoint's path, for messages.
        class_path: the config's ``model.class_path``.
        init_args: the config's ``model.init_args`` as LightningCLI dumps them (without the linked arguments such
            as ``num_classes``, which the data sets and the weights' shapes check). Only the settings both the
            checkpoint and the config give are compared; nested dicts (network specs) key by key.
        upgrade: the config's lecture's ``upgrade_hparams`` (older argument names in the checkpoint mapped to
            today's), applied to the checkpoint's hyper-parameters before comparing.
        given_by: who gives ``init_args``, for the message.
        hint: what to do about a differing setting.

    Raises:
        CheckpointError: naming the file, the lecture or setting that differs and both values.
    """
    hparams = dict(ckpt.get("hyper_parameters") or {})
    recorded = hparams.get("_class_path")
    for key in INTERNAL_HPARAMS:
        hparams.pop(key, None)
    name = class_path.rsplit(".", 1)[-1]
    if recorded is not None and recorded.rsplit(".", 1)[-1] != name:
        raise CheckpointError(
            f"checkpoint {source} is of lecture {recorded.rsplit('.', 1)[-1]} ({recorded}), but the config's model "
            f"is {name} ({class_path})",
            hint=f"give a checkpoint of {name}, or add {OPT_IN} to run the checkpoint's lecture with its settings",
        )
    saved = upgrade(hparams) if upgrade is not None else hparams
    differences = hparam_differences(saved, init_args, prefix="model.init_args.")
    if not differences:
        return
    key, was, now = differences[0]
    more = f" (and {len(differences) - 1} more: {', '.join(d[0] for d in differences[1:4])})" if differences[1:] else ""
    raise CheckpointError(f"checkpoint {source} was saved with {key}={was!r}, but {given_by} {now!r}{more}", hint=hint)


def hparam_differences(saved: Mapping[str, Any], wanted: Mapping[str, Any], prefix: str = "") -> list[tuple]:
    """``(dotted key, saved value, wanted value)`` of each setting that both mappings give and give differently;
    nested dicts are compared key by key (tuples count as lists: YAML has no tuples)."""
    found: list[tuple] = []
    for key, value in wanted.items():
        if key not in saved:
            continue
        was, now = _plain(saved[key]), _plain(value)
        if isinstance(was, dict) and isinstance(now, dict):
            found += hparam_differences(was, now, prefix=f"{prefix}{key}.")
        elif was != now:
            found.append((f"{prefix}{key}", was, now))
    return found


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def checkpoint_model_config(ckpt: Mapping[str, Any], *, source: str) -> dict[str, Any]:
    """The checkpoint's model as a config's ``model`` section, ``{"class_path": ..., "init_args": ...}``: its
    registered lecture, with its hyper-parameters in today's argument names (``upgrade_hparams``).

    Raises:
        CheckpointError: the checkpoint does not record its lecture, or records one that is not registered.
    """
    hparams = dict(ckpt.get("hyper_parameters") or {})
    recorded = hparams.get("_class_path")
    for key in INTERNAL_HPARAMS:
        hparams.pop(key, None)
    if recorded is None:
        raise CheckpointError(
            f"checkpoint {source} does not record its lecture (it was not written by cli.py), so the model cannot "
            f"be built from it ({OPT_IN})",
            hint=f"leave out {OPT_IN} to load its weights into the config's model",
        )
    entry = _registered(recorded, source)
    return {"class_path": entry.class_path, "init_args": entry.cls.upgrade_hparams(hparams)}
