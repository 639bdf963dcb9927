"""ml-lectures: lecture plugins for NTU ML 2021 Spring, on PyTorch Lightning.

Only the base class and the registry API live here; lectures are found through entry points, never imported
from this package eagerly.
"""

from lecture_modules.base import LectureModule, NonFiniteLossError, log_figure
from lecture_modules.registry import (
    ENTRY_POINT_GROUP,
    LectureNotFoundError,
    PluginConflictError,
    PluginLoadError,
    discover,
    load_all,
    resolve,
)

__all__ = [
    "ENTRY_POINT_GROUP",
    "LectureModule",
    "LectureNotFoundError",
    "NonFiniteLossError",
    "PluginConflictError",
    "PluginLoadError",
    "discover",
    "load_all",
    "log_figure",
    "resolve",
]
