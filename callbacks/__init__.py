"""Callbacks of ml-lectures (one per file)."""

from callbacks.iterative_pruning import IterativePruning
from callbacks.reset_optimizer import ResetOptimizerPerTask
from callbacks.save_config import LectureSaveConfig

__all__ = ["IterativePruning", "LectureSaveConfig", "ResetOptimizerPerTask"]
