"""One output folder per ``predict`` for the hand-in writers, claimed by rank zero before any rank writes into it."""

from __future__ import annotations

from pathlib import Path

import lightning as L

from datamodules.errors import OutputFolderError
from lecture_modules.base import free_name

__all__ = ["claim_output_folder"]


def claim_output_folder(trainer: L.Trainer, stem: str, suffixes: tuple[str, ...] = ("", ".tgz")) -> Path:
    """Rank zero picks the first free ``stem``, ``stem-1``, ... under ``trainer.default_root_dir`` (free for every
    suffix: the folder and its archive) and creates it exclusively *before* the name is shared; the other ranks then
    create it only where it is missing (a node without the shared file system). Creating it on rank zero first matters:
    if another rank could create it first, rank zero's exclusive create would fail and it would leave the others
    waiting at the writer's barrier. A failure on rank zero is shared too, so every rank raises the same one line.

    Raises:
        OutputFolderError: naming the folder and the setting that chose it.
    """
    root = Path(trainer.default_root_dir)
    claimed: tuple[str, str | None] = ("", None)
    if trainer.is_global_zero:
        name = free_name(root, stem, suffixes)
        try:
            (root / name).mkdir(parents=True)
            claimed = (name, None)
        except OSError as exc:
            claimed = (name, str(exc))
    name, error = trainer.strategy.broadcast(claimed)
    folder = root / name
    if error is None and not trainer.is_global_zero:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            error = str(exc)
    if error is not None:
        raise OutputFolderError(f"cannot create {folder} (trainer.default_root_dir): {error}")
    return folder
