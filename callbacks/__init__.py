"""Callbacks of ml-lectures (one per file)."""

from callbacks.checkpoint_averaging import CheckpointAveraging
from callbacks.ema import EMA
from callbacks.iterative_pruning import IterativePruning
from callbacks.reset_optimizer import ResetOptimizerPerTask
from callbacks.save_config import LectureSaveConfig

__all__ = ["EMA", "CheckpointAveraging", "IterativePruning", "LectureSaveConfig", "ResetOptimizerPerTask"]
