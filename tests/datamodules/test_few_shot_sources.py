"""Omniglot in its original layout (folders or zips): a broken archive, a misplaced drawing or a missing root is one
error naming the archive, the file or the setting. (Reading the layout itself: tests/lectures/test_meta_learning.py.)"""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest

from datamodules.episodes import EpisodicDataModule
from datamodules.errors import DataFileError, DataPathError
from datamodules.few_shot_sources import OmniglotSource


def _png(value: int) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.full((105, 105), value, dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def _zip(path, names: list[str]) -> None:
    with zipfile.ZipFile(path, "w") as zf:
        for i, name in enumerate(names):
            zf.writestr(name, _png(10 * i))


def _layout(part: str) -> list[str]:
    return [f"{part}/Latin/character0{c}/0{c}_0{d}.png" for c in range(1, 3) for d in range(1, 3)]


def test_a_truncated_or_corrupt_zip_names_the_archive(tmp_path):
    archive = tmp_path / "images_background.zip"
    _zip(archive, _layout("images_background"))
    data = archive.read_bytes()
    archive.write_bytes(data[:200])  # a download cut short
    with pytest.raises(DataFileError, match=r"cannot read the zip archive .*images_background.zip: File is not a zip"):
        OmniglotSource(str(tmp_path)).load()
    start = data.index(b"IHDR")  # corrupt the first member's bytes: its CRC no longer matches
    archive.write_bytes(data[:start] + b"XXXX" + data[start + 4 :])
    with pytest.raises(DataFileError, match=r"cannot read images_background/Latin/character01/01_01.png from the zip"):
        OmniglotSource(str(tmp_path)).load()


def test_drawings_outside_the_alphabet_character_layout_are_named(tmp_path):
    _zip(tmp_path / "images_background.zip", [*_layout("images_background"), "images_background/Latin/stray.png"])
    with pytest.raises(DataFileError, match=r"member images_background/Latin/stray.png is not at images_background/<"):
        OmniglotSource(str(tmp_path)).load()
    folder = tmp_path / "folders"
    (folder / "images_background" / "Latin").mkdir(parents=True)
    (folder / "images_background" / "Latin" / "stray.png").write_bytes(_png(0))
    with pytest.raises(DataFileError, match=r"Latin/stray.png is not at images_background/<Alphabet>/<character>/"):
        OmniglotSource(str(folder)).load()


def test_operating_system_files_in_the_archive_are_ignored(tmp_path):
    for part in ("images_background", "images_evaluation"):
        _zip(tmp_path / f"{part}.zip", [*_layout(part), f"__MACOSX/{part}/Latin/character01/._01_01.png"])
    loaded = OmniglotSource(str(tmp_path)).load()
    assert len(loaded.classes) == 4 and len(loaded.splits["train"][1]) == 4


def test_a_missing_root_names_the_setting_and_a_corrupt_drawing_the_file(tmp_path):
    dm = EpisodicDataModule(OmniglotSource(str(tmp_path / "nowhere")))
    with pytest.raises(DataPathError, match=r"^data.init_args.source.init_args.root does not exist: .*nowhere") as e:
        dm.setup()
    assert "images_background" in e.value.hint
    with pytest.raises(DataPathError, match=r"OmniglotSource.root = .* holds neither images_background/ nor images_"):
        OmniglotSource(str(tmp_path)).load()
    _zip(tmp_path / "images_background.zip", _layout("images_background"))
    drawing = tmp_path / "images_evaluation" / "Greek" / "character01" / "broken.png"
    drawing.parent.mkdir(parents=True)
    drawing.write_bytes(b"not a png")
    with pytest.raises(DataFileError, match=r"cannot read image file .*images_evaluation/Greek/character01/broken.png"):
        OmniglotSource(str(tmp_path)).load()
