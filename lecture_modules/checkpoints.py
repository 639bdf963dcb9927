"""Rebuild any registered lecture from its checkpoint: the one loader for "a checkpoint of another lecture".

A lecture that takes another lecture's checkpoint as an argument (a distillation teacher, a model to explain or
to attack) calls :func:`load_lecture` and then ``model.logits(x)`` (:meth:`LectureModule.logits`); it never
imports the other lecture. The rules, decided once:

1. The file is read with ``torch.load(weights_only=True)``: tensors and plain containers only, no pickled code.
   A file that needs more is refused with a ``ValueError`` naming it and saying why.
2. The class comes from the checkpoint's hyper-parameters (``_class_path``, written by LightningCLI), or from
   ``lecture=`` (entry name, class name or class path) — and only if it is a registered lecture
   (entry-point group ``ml_lectures.lectures``), so a checkpoint never names arbitrary code to import.
3. The hyper-parameters pass through ``cls.upgrade_hparams`` (older argument names mapped to today's), then
   ``overrides`` are set over them (and upgraded too), and the lecture is built the way LightningCLI builds it.
4. The state dict loads strictly (every key, every shape); the model is returned in eval mode on
   ``map_location``. Training state (optimisers, loops, the saved RNG states) is ignored. Building the module
   draws its initial weights from the global RNG before they are overwritten, as constructing it would.

Run-time example: ``teacher = load_lecture("runs/x/last.ckpt"); scores = teacher.logits(images)``.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from lecture_modules.base import LectureModule
from lecture_modules.registry import LectureEntry, LectureNotFoundError, discover, resolve

__all__ = ["lecture_from_checkpoint", "load_lecture", "read_checkpoint"]

INTERNAL_HPARAMS = ("_class_path", "_instantiator")  # written by LightningCLI next to the __init__ arguments


def read_checkpoint(path: str | Path, *, map_location: Any = "cpu") -> dict[str, Any]:
    """The checkpoint at ``path`` as plain data (``weights_only=True``).

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file is refused (pickled objects) or is not a readable PyTorch checkpoint.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ValueError(f"checkpoint {path} is refused: {_refusal(exc)}") from exc
    except (RuntimeError, EOFError, zipfile.BadZipFile) as exc:
        raise ValueError(f"checkpoint {path} is not a readable PyTorch file ({type(exc).__name__}: {exc})") from exc
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict"), dict):
        raise ValueError(f"checkpoint {path} has no 'state_dict'; is it a Lightning checkpoint?")
    return ckpt


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
            ``hyper_parameters``).
        lecture: the lecture to build instead of the one the checkpoint records (entry name, class name or class
            path); needed for a checkpoint without ``_class_path``.
        overrides: ``__init__`` arguments (today's names) set over the checkpoint's hyper-parameters.
        map_location: where the tensors go (``torch.load``'s ``map_location``).

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file is refused or unreadable, its lecture is not registered, or its weights do not fit.
        lecture_modules.registry.PluginLoadError: the recorded lecture is registered but broken or unavailable.
    """
    ckpt = read_checkpoint(path, map_location=map_location)
    return lecture_from_checkpoint(ckpt, source=str(path), lecture=lecture, overrides=overrides)


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
        raise ValueError(
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
        raise ValueError(f"checkpoint {source}: {exc} Only registered lectures are rebuilt from a checkpoint.") from exc


def _build(entry: LectureEntry, init_args: dict[str, Any], source: str) -> LectureModule:
    """Instantiate like LightningCLI does (nested dicts become the typed arguments: specs, tuples, class paths)."""
    from lightning.pytorch.cli import instantiate_module

    try:
        return instantiate_module(LectureModule, {"_class_path": entry.class_path, **init_args})
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"checkpoint {source}: cannot build lecture '{entry.name}' ({entry.class_path}) from its "
            f"hyper-parameters: {exc}"
        ) from exc


def _load_state_dict(model: LectureModule, state_dict: Mapping[str, torch.Tensor], source: str) -> None:
    """Every key and every shape must match (strict)."""
    try:
        result = model.load_state_dict(state_dict, strict=False)
    except RuntimeError as exc:  # size mismatches raise even when not strict
        raise ValueError(f"checkpoint {source}: weights do not fit {type(model).__name__}: {exc}") from exc
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(
            f"checkpoint {source}: weights do not fit {type(model).__name__}: missing {result.missing_keys[:5]}, "
            f"unexpected {result.unexpected_keys[:5]}. Check the lecture and its arguments."
        )
