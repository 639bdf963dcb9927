"""Errors that name a lecture's settings the way a config writes them (shared by every lecture).

A lecture's ``__init__`` argument ``inner_lr`` is ``model.init_args.inner_lr`` in a config and on the command line,
and a field of its network spec is ``model.init_args.net.dropout``: that is the name a user can search for and
change, so it is the name every message uses (not ``MAML.inner_lr`` or ``inner_lr``). ``cli.main`` prints the
:class:`~datamodules.errors.SettingError` these helpers build in one line.
"""

from __future__ import annotations

from typing import Any

from datamodules.errors import SettingError

__all__ = ["MODEL_ARGS", "bad_setting", "check_shapes", "model_setting"]

MODEL_ARGS = "model.init_args"
_SECTIONS = ("model.", "data.", "trainer.", "optimizer.", "lr_scheduler.")  # keys that already name their section


def model_setting(name: str) -> str:
    """The config key of the lecture argument ``name``: ``inner_lr`` -> ``model.init_args.inner_lr``,
    ``net.dropout`` -> ``model.init_args.net.dropout``; a key that names its section already is returned as is."""
    return name if name.startswith(_SECTIONS) else f"{MODEL_ARGS}.{name}"


def bad_setting(name: str, value: Any, allowed: str, *, hint: str | None = None) -> SettingError:
    """The error for a setting out of range: ``model.init_args.<name> must be <allowed>, got <value>``.

    Args:
        name: the lecture argument (``inner_lr``, ``net.dropout``) or a full config key (``data.init_args.ways``).
        value: the value given.
        allowed: what is allowed, phrased to follow "must be" (``> 0``, ``in [0, 1)``, ``'all' or 'head'``).
        hint: one line on what to try, when the allowed range alone does not say it.
    """
    return SettingError(f"{model_setting(name)} must be {allowed}, got {value!r}", hint=hint)


def check_shapes(num_classes: int, input_shape: tuple[int, ...], *, classes_from: str = "the data's classes") -> None:
    """Refuse ``num_classes < 2`` or an ``input_shape`` that is not (C, H, W).

    Both are linked from the DataModule by the CLI, so the message says where the value comes from: a wrong value
    there is usually the data's (a folder with one class), not a setting the user wrote.

    Args:
        num_classes: the lecture's ``num_classes``.
        input_shape: the lecture's ``input_shape``.
        classes_from: where the CLI takes ``num_classes`` from (meta-learning: ``data.init_args.ways``).
    """
    if num_classes < 2:
        raise bad_setting("num_classes", num_classes, f">= 2 (the CLI links it from {classes_from})")
    if len(input_shape) != 3:
        raise bad_setting("input_shape", input_shape, "(C, H, W) (the CLI links it from the data's image shape)")
