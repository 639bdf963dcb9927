"""Checks of the data paths a user gives: each failure is a :class:`~datamodules.errors.DataPathError` that names
the setting (its config key, such as ``data.init_args.source.init_args.root``, where the caller knows it) and the
path. Used by every source and text DataModule before it reads anything."""

from __future__ import annotations

import os
from pathlib import Path

from datamodules.errors import DataPathError

__all__ = ["require_file", "require_folder"]


def require_folder(path: str | Path, setting: str, *, hint: str | None = None) -> Path:
    """``path`` as a readable folder, else a :class:`DataPathError` naming ``setting`` and the path."""
    path = Path(path)
    if not path.exists():
        raise DataPathError(f"{setting} does not exist: {path}", hint=hint)
    if not path.is_dir():
        raise DataPathError(f"{setting} is a file, not a folder: {path}", hint=hint)
    if not os.access(path, os.R_OK | os.X_OK):
        raise DataPathError(f"{setting} cannot be read: {path} (permission denied)", hint=hint)
    return path


def require_file(path: str | Path, setting: str, *, hint: str | None = None) -> Path:
    """``path`` as a readable file, else a :class:`DataPathError` naming ``setting`` and the path."""
    path = Path(path)
    if not path.exists():
        raise DataPathError(f"{setting} does not exist: {path}", hint=hint)
    if not path.is_file():
        raise DataPathError(f"{setting} is a folder, not a file: {path}", hint=hint)
    if not os.access(path, os.R_OK):
        raise DataPathError(f"{setting} cannot be read: {path} (permission denied)", hint=hint)
    return path
