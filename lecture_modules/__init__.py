"""ml-lectures: lecture plugins for NTU ML 2021 Spring, on PyTorch Lightning.

Only the base class, the registry API and the checkpoint loader are re-exported here; lectures are found through
entry points, never imported from this package eagerly. The re-exports that need torch or Lightning load on first
use (PEP 562), so ``import lecture_modules.registry`` (and ``python cli.py lectures``) stays light.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from lecture_modules.registry import (
    ENTRY_POINT_GROUP,
    LectureNotFoundError,
    PluginConflictError,
    PluginLoadError,
    discover,
    load_all,
    resolve,
)

if TYPE_CHECKING:
    from lecture_modules.base import LectureModule, NonFiniteLossError, log_figure
    from lecture_modules.checkpoints import load_lecture

_LAZY = {
    "LectureModule": "lecture_modules.base",
    "NonFiniteLossError": "lecture_modules.base",
    "log_figure": "lecture_modules.base",
    "load_lecture": "lecture_modules.checkpoints",
}

__all__ = [
    "ENTRY_POINT_GROUP",
    "LectureModule",
    "LectureNotFoundError",
    "NonFiniteLossError",
    "PluginConflictError",
    "PluginLoadError",
    "discover",
    "load_all",
    "load_lecture",
    "log_figure",
    "resolve",
]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'lecture_modules' has no attribute '{name}'")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value
