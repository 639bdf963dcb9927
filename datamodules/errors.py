"""The mistakes a user can fix, as exception types every layer raises (this is the bottom layer, so all may import it).

``cli.main`` prints any :class:`UserInputError` as ``error: <message>`` (and ``hint: <hint>`` when there is one)
and exits with code 2; the traceback appears only with ``--debug`` or ``ML_LECTURES_DEBUG=1``. Everything else is
a bug in our code and keeps its traceback.

A message names what to change: the file (with line or record), or the setting by its config key
(``model.init_args.target_sparsity``), and the value given. Each type also derives from the built-in error it
refines, so ``except ValueError`` / ``except FileNotFoundError`` and ``pytest.raises`` keep working.
"""

from __future__ import annotations

__all__ = [
    "CheckpointError",
    "DataFileError",
    "DataPathError",
    "OutputFolderError",
    "SettingError",
    "UserInputError",
]


class UserInputError(Exception):
    """A mistake in the user's files or settings. ``hint`` says what to try (one line, optional)."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


class DataPathError(UserInputError, FileNotFoundError):
    """A data path that is missing, unreadable or of the wrong kind (a file where a folder is expected)."""


class DataFileError(UserInputError, ValueError):
    """A data file whose content is wrong: corrupt or truncated archive, image or IDX file, a bad label or row.
    The message names the file and, where there is one, the line or record."""


class SettingError(UserInputError, ValueError):
    """A setting out of range or inconsistent with another; the message names it by its config key."""


class CheckpointError(UserInputError, ValueError):
    """A checkpoint that is missing, refused (not loadable with ``weights_only``) or of another lecture or
    architecture than the config asks for."""


class OutputFolderError(UserInputError, PermissionError):
    """An output folder (run folder, checkpoint folder, W&B folder) that cannot be written."""
