"""Callbacks of ml-lectures (one per file)."""

from callbacks.save_config import LectureSaveConfig

__all__ = ["LectureSaveConfig"]
