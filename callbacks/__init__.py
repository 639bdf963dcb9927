"""Callbacks of ml-lectures (one per file)."""

from callbacks.reset_optimizer import ResetOptimizerPerTask
from callbacks.save_config import LectureSaveConfig

__all__ = ["LectureSaveConfig", "ResetOptimizerPerTask"]
