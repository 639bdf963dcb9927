"""Class-structured image sources for few-shot learning: many classes, few images each.

* :class:`GlyphSource` — the embedded default (no download): letters of many scripts (Latin, Greek, Cyrillic,
  Armenian, Georgian, Hebrew, Canadian syllabics, Tifinagh, Lisu, N'Ko, Ogham, ...) rendered from the DejaVu fonts
  that ship with matplotlib. One class per letter; each image is the letter in one of the installed DejaVu
  styles, with a small seeded affine distortion and stroke-width change, like Omniglot's different drawers.
  Letters whose glyphs render identically (Latin A, Greek Alpha, Cyrillic A) are kept once.
* :class:`OmniglotSource` — Omniglot (Lake et al. 2015) in its original layout,
  ``images_background/<Alphabet>/<characterNN>/*.png`` and ``images_evaluation/...``, as folders or as the
  original ``images_background.zip`` / ``images_evaluation.zip``. Background classes form the ``train`` split,
  evaluation classes the ``test`` split (the standard protocol). Strokes become bright on a dark background.

Both return :class:`datamodules.sources.ImageSplits` (uint8 images, labels indexing one class list).
"""

from __future__ import annotations

import io
import unicodedata
import zipfile
import zlib
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from datamodules.errors import DataFileError, DataPathError
from datamodules.paths import require_folder
from datamodules.sources import IMAGE_EXTENSIONS, ImageSource, ImageSplits

__all__ = ["GLYPH_SCRIPTS", "GlyphSource", "OmniglotSource"]

GLYPH_SCRIPTS = (
    "LATIN",
    "GREEK",
    "CYRILLIC",
    "ARMENIAN",
    "GEORGIAN",
    "HEBREW",
    "CANADIAN",
    "TIFINAGH",
    "LISU",
    "NKO",
    "OGHAM",
    "ARABIC",
)
_STYLES = ("DejaVuSans", "DejaVuSans-Bold", "DejaVuSans-Oblique", "DejaVuSans-BoldOblique", "DejaVuSerif",
           "DejaVuSerif-Bold", "DejaVuSerif-Italic", "DejaVuSansMono", "DejaVuSansMono-Bold")  # fmt: skip
_RENDER = 56  # glyphs are drawn at twice the output size, then downsampled (anti-aliasing)


def _font_dir() -> Path:
    import matplotlib

    return Path(matplotlib.get_data_path()) / "fonts" / "ttf"


@lru_cache(maxsize=1)
def _font_charmaps() -> dict[str, frozenset[int]]:
    from matplotlib import ft2font

    return {s: frozenset(ft2font.FT2Font(str(_font_dir() / f"{s}.ttf")).get_charmap()) for s in _STYLES}


def _draw(char: str, style: str, size: int, rng: np.random.Generator | None) -> np.ndarray:
    """One glyph as a (size, size) uint8 image, white on black, centred by its ink; ``rng`` distorts it."""
    from PIL import Image, ImageDraw, ImageFilter, ImageFont

    font = ImageFont.truetype(str(_font_dir() / f"{style}.ttf"), int(_RENDER * 0.6))
    canvas = Image.new("L", (_RENDER, _RENDER), 0)
    ImageDraw.Draw(canvas).text((_RENDER / 2, _RENDER / 2), char, fill=255, font=font, anchor="mm")
    box = canvas.getbbox()
    if box is not None:  # centre the ink
        dx, dy = _RENDER / 2 - (box[0] + box[2]) / 2, _RENDER / 2 - (box[1] + box[3]) / 2
        canvas = canvas.transform(canvas.size, Image.AFFINE, (1, 0, -dx, 0, 1, -dy), Image.BILINEAR)
    if rng is not None:
        angle, shear = rng.uniform(-12, 12), rng.uniform(-0.2, 0.2)
        scale, tx, ty = rng.uniform(0.85, 1.1), rng.uniform(-3, 3), rng.uniform(-3, 3)
        a = np.deg2rad(angle)
        # inverse map about the centre: rotation, shear and scale, then a shift
        m = np.array([[np.cos(a), -np.sin(a) + shear], [np.sin(a), np.cos(a)]]) / scale
        c = np.array([_RENDER / 2, _RENDER / 2])
        offset = c - m @ c - np.array([tx, ty])
        canvas = canvas.transform(canvas.size, Image.AFFINE, (*m[0], offset[0], *m[1], offset[1]), Image.BILINEAR)
        stroke = rng.integers(0, 3)  # thinner, unchanged or thicker strokes
        if stroke == 0:
            canvas = canvas.filter(ImageFilter.MinFilter(3))
        elif stroke == 2:
            canvas = canvas.filter(ImageFilter.MaxFilter(3))
    return np.asarray(canvas.resize((size, size), Image.BILINEAR), dtype=np.uint8)


@lru_cache(maxsize=1)
def _glyph_classes(scripts: tuple[str, ...]) -> tuple[str, ...]:
    """The distinct letters of ``scripts`` that DejaVu Sans draws, in code-point order."""
    charmap = _font_charmaps()["DejaVuSans"]
    seen, chars = set(), []
    for cp in sorted(charmap):
        ch = chr(cp)
        name = unicodedata.name(ch, "")
        if unicodedata.category(ch) not in ("Lu", "Ll", "Lo") or name.split(" ")[0] not in scripts:
            continue
        if unicodedata.decomposition(ch):  # accented and presentation forms: near-copies of a base letter
            continue
        canonical = _draw(ch, "DejaVuSans", 28, None)
        key = (canonical > 127).tobytes()
        if (canonical > 127).sum() < 12 or key in seen:  # blank, tiny, or drawn like a letter already kept
            continue
        seen.add(key)
        chars.append(ch)
    return tuple(chars)


@lru_cache(maxsize=4)
def _render_glyphs(
    scripts: tuple[str, ...], num_classes: int | None, samples_per_class: int, image_size: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor, tuple[str, ...]]:
    chars = list(_glyph_classes(scripts))
    if num_classes is not None:
        if num_classes > len(chars):
            raise ValueError(
                f"GlyphSource.num_classes={num_classes} but the scripts {list(scripts)} give only {len(chars)} "
                "distinct letters; lower num_classes or add scripts"
            )
        keep = np.sort(np.random.default_rng(seed).permutation(len(chars))[:num_classes])
        chars = [chars[i] for i in keep]
    charmaps = _font_charmaps()
    images = np.empty((len(chars) * samples_per_class, 1, image_size, image_size), dtype=np.uint8)
    for label, ch in enumerate(chars):
        styles = [s for s in _STYLES if ord(ch) in charmaps[s]]
        rng = np.random.default_rng([seed, ord(ch)])
        for j in range(samples_per_class):
            images[label * samples_per_class + j, 0] = _draw(ch, styles[j % len(styles)], image_size, rng)
    labels = torch.arange(len(chars)).repeat_interleave(samples_per_class)
    names = tuple(f"{unicodedata.name(ch)} ({ch})" for ch in chars)
    return torch.from_numpy(images), labels, names


class GlyphSource(ImageSource):
    """Letters of many scripts rendered from matplotlib's DejaVu fonts: an Omniglot-like set with no download."""

    def __init__(
        self,
        num_classes: int | None = 600,
        samples_per_class: int = 20,
        image_size: int = 28,
        scripts: list[str] | None = None,
        seed: int = 0,
    ) -> None:
        """
        Args:
            num_classes: letters to keep (a seeded choice across scripts); null keeps all (about 1,450).
            samples_per_class: images per letter (20, as Omniglot has drawings per character).
            image_size: side of the square images.
            scripts: Unicode script names to draw letters from (default: :data:`GLYPH_SCRIPTS`).
            seed: seed of the letter choice and of the per-image distortions.
        """
        if num_classes is not None and num_classes < 2:
            raise ValueError(f"GlyphSource.num_classes must be >= 2 or null, got {num_classes}")
        if samples_per_class < 1:
            raise ValueError(f"GlyphSource.samples_per_class must be >= 1, got {samples_per_class}")
        if image_size < 8:
            raise ValueError(f"GlyphSource.image_size must be >= 8, got {image_size}")
        scripts = [s.upper() for s in (scripts or GLYPH_SCRIPTS)]
        unknown = sorted(set(scripts) - set(GLYPH_SCRIPTS))
        if unknown:
            raise ValueError(f"GlyphSource.scripts: unknown {unknown}; choose from {list(GLYPH_SCRIPTS)}")
        self.scripts = tuple(scripts)
        self.num_classes, self.samples_per_class = num_classes, samples_per_class
        self.image_size, self.seed = image_size, seed

    def load(self) -> ImageSplits:
        x, y, names = _render_glyphs(self.scripts, self.num_classes, self.samples_per_class, self.image_size, self.seed)
        return ImageSplits({"train": (x, y)}, list(names))

    def describe(self) -> str:
        return f"DejaVu glyphs ({', '.join(self.scripts)})"


def _hidden(parts: tuple[str, ...] | list[str]) -> bool:
    """A file the operating system added (``__MACOSX/``, ``._name``, ``.hidden``), not a drawing."""
    return any(p.startswith((".", "__MACOSX")) for p in parts)


class OmniglotSource(ImageSource):
    """Omniglot: ``images_background`` (meta-train/val) and ``images_evaluation`` (meta-test), folders or zips."""

    PARTS = (("train", "images_background"), ("test", "images_evaluation"))

    def __init__(self, root: str, image_size: int = 28, invert: bool = True) -> None:
        """
        Args:
            root: folder holding ``images_background/`` and ``images_evaluation/`` (folders or ``.zip`` files).
            image_size: resize the 105x105 drawings to this square size (28 in the MAML paper).
            invert: make strokes bright on a dark background (the files are black strokes on white).
        """
        self.root = Path(root)
        self.image_size, self.invert = image_size, invert

    def _files(self, part: str) -> dict[str, list[tuple[str, callable]]]:
        """class name ``Alphabet/characterNN`` -> sorted (file path, reader) pairs."""
        folder, archive = self.root / part, self.root / f"{part}.zip"
        if folder.is_dir():
            classes = self._folder_files(folder)
        elif archive.is_file():
            classes = self._archive_files(archive, part)
        else:
            raise DataPathError(
                f"{self.setting('root')} = {self.root} holds neither {part}/ nor {part}.zip",
                hint="give the folder holding Omniglot's images_background and images_evaluation (folders or zips)",
            )
        if not classes:
            where = folder if folder.is_dir() else archive
            raise DataFileError(f"{where}: no images (expected {part}/<Alphabet>/<character>/*.png)")
        return classes

    @staticmethod
    def _folder_files(folder: Path) -> dict[str, list]:
        classes: dict[str, list] = {}
        for path in sorted(folder.rglob("*")):
            if path.suffix.lower() not in IMAGE_EXTENSIONS or _hidden(path.relative_to(folder).parts):
                continue
            if len(path.relative_to(folder).parts) != 3:  # the class comes from the layout: no loose images
                raise DataFileError(f"{path} is not at {folder.name}/<Alphabet>/<character>/<image>")
            classes.setdefault(f"{path.parent.parent.name}/{path.parent.name}", []).append((str(path), path.read_bytes))
        return classes

    @staticmethod
    def _archive_files(archive: Path, part: str) -> dict[str, list]:
        try:
            zf = zipfile.ZipFile(archive)
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            raise DataFileError(f"cannot read the zip archive {archive}: {exc} (a download cut short?)") from exc

        def reader(name: str) -> bytes:
            try:
                return zf.read(name)
            except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as exc:
                raise DataFileError(f"cannot read {name} from the zip archive {archive}: {exc}") from exc

        classes: dict[str, list] = {}
        for name in sorted(zf.namelist()):
            parts = name.rstrip("/").split("/")
            if Path(name).suffix.lower() not in IMAGE_EXTENSIONS or _hidden(parts):
                continue
            if len(parts) != 4 or parts[0] != part:  # the class comes from the layout: no loose images
                raise DataFileError(f"{archive}: member {name} is not at {part}/<Alphabet>/<character>/<image>")
            classes.setdefault(f"{parts[1]}/{parts[2]}", []).append((f"{archive}:{name}", lambda n=name: reader(n)))
        return classes

    def _read(self, data: bytes, where: str) -> np.ndarray:
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(io.BytesIO(data)) as img:
                img = img.convert("L").resize((self.image_size, self.image_size), Image.BILINEAR)
                arr = np.asarray(img, dtype=np.uint8)
        except (UnidentifiedImageError, OSError, SyntaxError) as exc:  # PIL reports some broken headers as such
            raise DataFileError(f"cannot read image file {where}: {exc}") from exc
        return 255 - arr if self.invert else arr

    def load(self) -> ImageSplits:
        hint = "give the folder holding Omniglot's images_background and images_evaluation (folders or zips)"
        require_folder(self.root, self.setting("root"), hint=hint)
        splits, names = {}, []
        for split, part in self.PARTS:
            images, labels = [], []
            for cls, files in self._files(part).items():
                for where, read in files:
                    images.append(self._read(read(), where))
                    labels.append(len(names))
                names.append(cls)
            x = torch.from_numpy(np.stack(images)).unsqueeze(1)  # (N, 1, S, S)
            splits[split] = (x, torch.tensor(labels, dtype=torch.int64))
        return ImageSplits(splits, names)

    def describe(self) -> str:
        return f"Omniglot in {self.root}"
