"""A bare LightningCLI with the same base classes as ``cli.py``: the reference for ``benchmarks/cli_startup.py``.

No plugin discovery, no argument links, no W&B defaults, no custom save-config callback: only Lightning, the
``LectureModule`` base class and subclass mode for model and data.

Run: ``.venv/bin/python benchmarks/bare_cli.py --help``
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, so it runs from anywhere

import lightning as L
from lightning.pytorch.cli import LightningCLI

from lecture_modules.base import LectureModule


def main() -> None:
    LightningCLI(LectureModule, L.LightningDataModule, subclass_mode_model=True, subclass_mode_data=True)


if __name__ == "__main__":
    main()
