"""Image sources for domain adaptation (lecture 11): MNIST-M, the HW11 layout, and an MNIST-M-style re-rendering.

* :class:`MNISTMSource` — MNIST-M's standard layout (Ganin et al. 2016, arXiv 1505.07818): ``mnist_m_train/*.png``
  with ``mnist_m_train_labels.txt`` (lines ``<file name> <label>``), and ``mnist_m_test/`` likewise.
* :class:`HW11Source` — the course's HW11 layout: ``train_data/<class>/*.png`` (labelled source images) and
  ``test_data/0/*.png`` (unlabelled target images; their labels are ``-1``).
* :class:`MNISTMStyleSource` — any source re-rendered MNIST-M style: each image is blended with a colour texture
  patch as ``|texture - digit|``. The textures are generated procedurally from the seed (smoothed colour noise,
  colour gradients and stripes), so the embedded default target needs no download and is the same on every run.

Unlabelled images carry the label ``-1`` (:data:`UNLABELLED`); metrics that need labels skip them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from datamodules.errors import DataFileError, DataPathError, SettingError
from datamodules.paths import require_folder
from datamodules.sources import (
    IMAGE_EXTENSIONS,
    DigitsSource,
    ImageFolderSource,
    ImageSource,
    ImageSplits,
    read_image,
    stack_images,
)

__all__ = ["UNLABELLED", "HW11Source", "MNISTMSource", "MNISTMStyleSource", "colour_textures", "mnistm_blend"]

UNLABELLED = -1


class MNISTMSource(ImageSource):
    """MNIST-M: ``mnist_m_{train,test}/*.png`` with ``mnist_m_{train,test}_labels.txt`` (``name label`` lines), read
    from the distributed ``mnist_m.tar.gz`` directly or from its extracted folder."""

    NUM_CLASSES = 10

    def __init__(self, root: str | None = None, image_size: int | None = None) -> None:
        """
        Args:
            root: the ``mnist_m.tar.gz`` archive as distributed (read without extracting), or a folder holding
                ``mnist_m_train/`` and ``mnist_m_train_labels.txt`` (and optionally the test pair), or a folder
                holding the extracted ``mnist_m/`` folder or the archive. Required (null only so that a config
                left without it fails in one line naming this setting).
            image_size: resize every image to this square size while reading (MNIST-M images are 32x32).
        """
        if root is None:
            raise SettingError(
                "MNISTMSource.root is required: the mnist_m.tar.gz archive or its extracted folder (for example "
                "--data.init_args.target.init_args.root ../shared/data/mnist_m/mnist_m.tar.gz)"
            )
        self.root = Path(root)
        self.image_size = image_size

    def _locate(self) -> Path:
        """The archive or the folder that holds the splits."""
        root = self.root
        if root.is_file():
            return root
        require_folder(root, self.setting("root"), hint="give mnist_m.tar.gz as distributed, or its extracted folder")
        for candidate in (root, root / "mnist_m"):
            if (candidate / "mnist_m_train_labels.txt").exists() or (candidate / "mnist_m_train").is_dir():
                return candidate
        for name in ("mnist_m.tar.gz", "mnist_m.tgz", "mnist_m.tar"):
            if (root / name).is_file():
                return root / name
        raise DataPathError(
            f"{self.setting('root')} = {root} holds neither mnist_m_train/ with mnist_m_train_labels.txt, nor "
            "mnist_m/, nor mnist_m.tar.gz"
        )

    def load(self) -> ImageSplits:
        where = self._locate()
        files = _ArchiveFiles(where) if where.is_file() else _FolderFiles(where)
        splits = {"train": self._read_split(files, "train")}
        if files.has("mnist_m_test_labels.txt") or files.has_folder("mnist_m_test"):
            splits["test"] = self._read_split(files, "test")
        return ImageSplits(splits, [str(i) for i in range(self.NUM_CLASSES)])

    def _read_split(self, files: _FolderFiles | _ArchiveFiles, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        folder, labels_name = f"mnist_m_{split}", f"mnist_m_{split}_labels.txt"
        for name, kind in ((folder, "folder"), (labels_name, "file")):
            if not (files.has_folder(name) if kind == "folder" else files.has(name)):
                needed = files.describe(name)
                raise DataPathError(f"{self.setting('root')}: the {split} split needs the {kind} {needed}")
        labels_where = files.describe(labels_name)
        images, labels = [], []
        for number, line in enumerate(files.read_text(labels_name).splitlines(), start=1):
            if not line.strip():
                continue
            parts = line.split()
            if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
                raise DataFileError(f"{labels_where}, line {number}: expected '<file name> <label>', got {line!r}")
            label = int(parts[1])
            if not 0 <= label < self.NUM_CLASSES:
                raise DataFileError(
                    f"{labels_where}, line {number}: label {label} is outside the classes 0..{self.NUM_CLASSES - 1}"
                )
            member = f"{folder}/{parts[0]}"
            if not files.has(member):
                raise DataPathError(
                    f"{labels_where}, line {number}: image file {files.describe(member)} does not exist"
                )
            images.append(files.read_image(member, self.image_size))
            labels.append(label)
        if not images:
            raise DataFileError(f"{labels_where} lists no images")
        x = stack_images(images, files.describe(folder), self.setting("image_size"))
        return x, torch.tensor(labels, dtype=torch.int64)

    def describe(self) -> str:
        return f"MNIST-M in {self.root}"


def _decode(data: bytes, where: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataFileError(f"{where} is not a text file of '<file name> <label>' lines ({exc})") from exc


class _FolderFiles:
    """The files of an extracted MNIST-M folder, by relative name."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def has(self, name: str) -> bool:
        return (self.root / name).is_file()

    def has_folder(self, name: str) -> bool:
        return (self.root / name).is_dir()

    def describe(self, name: str) -> str:
        return str(self.root / name)

    def read_text(self, name: str) -> str:
        return _decode((self.root / name).read_bytes(), self.describe(name))

    def read_image(self, name: str, image_size: int | None) -> torch.Tensor:
        return read_image(self.root / name, image_size)


class _ArchiveFiles:
    """The members of an MNIST-M tar archive (``mnist_m/...`` inside, any leading folder), read once into memory."""

    def __init__(self, archive: Path) -> None:
        import tarfile
        import zlib

        self.archive = archive
        self.members: dict[str, bytes] = {}
        try:
            with tarfile.open(archive, "r:*") as tar:
                for member in tar:
                    parts = member.name.split("/")
                    if not member.isfile() or not parts[-1] or parts[-1].startswith("."):
                        continue
                    name = "/".join(parts[-2:]) if len(parts) > 1 and parts[-2].startswith("mnist_m_") else parts[-1]
                    handle = tar.extractfile(member)
                    if handle is not None:
                        self.members[name] = handle.read()
        except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
            raise DataFileError(f"MNISTMSource: cannot read the archive {archive}: {exc}") from exc

    def has(self, name: str) -> bool:
        return name in self.members

    def has_folder(self, name: str) -> bool:
        prefix = name + "/"
        return any(key.startswith(prefix) for key in self.members)

    def describe(self, name: str) -> str:
        return f"{self.archive}:{name}"

    def read_text(self, name: str) -> str:
        return _decode(self.members[name], self.describe(name))

    def read_image(self, name: str, image_size: int | None) -> torch.Tensor:
        return read_image(self.describe(name), image_size, data=self.members[name])


class HW11Source(ImageSource):
    """HW11 (real photos -> drawings): ``train_data/<class>/*.png`` labelled, ``test_data/0/*.png`` unlabelled."""

    def __init__(self, root: str, domain: str = "source", image_size: int | None = None) -> None:
        """
        Args:
            root: the HW11 data folder (holding ``train_data/`` and ``test_data/``).
            domain: ``source`` reads the labelled ``train_data/<class>/`` tree; ``target`` reads the unlabelled
                ``test_data/0/`` images (labels ``-1``).
            image_size: resize every image to this square size while reading.
        """
        if domain not in ("source", "target"):
            raise SettingError(f"HW11Source.domain must be 'source' or 'target', got {domain!r}")
        self.root, self.domain, self.image_size = Path(root), domain, image_size

    def load(self) -> ImageSplits:
        hint = "give the HW11 data folder (holding train_data/ and test_data/)"
        require_folder(self.root, self.setting("root"), hint=hint)
        if self.domain == "source":
            folder = self._part("train_data")
            folder_source = ImageFolderSource(str(folder), self.image_size)
            if self.config_key:  # its root and image_size are this source's
                folder_source.name_settings(self.config_key)
            return folder_source.load()
        folder = self._part("test_data/0")
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
        if not files:
            raise DataFileError(f"HW11Source: no images ({', '.join(IMAGE_EXTENSIONS)}) in {folder}")
        x = stack_images([read_image(p, self.image_size) for p in files], str(folder), self.setting("image_size"))
        return ImageSplits({"train": (x, torch.full((len(x),), UNLABELLED, dtype=torch.int64))}, [])

    def _part(self, name: str) -> Path:
        """The sub-folder ``name`` of root (``train_data`` for the source domain, ``test_data/0`` for the target)."""
        folder = self.root / name
        if not folder.is_dir():
            raise DataPathError(f"{self.setting('root')} = {self.root} has no folder {name}/ (domain '{self.domain}')")
        return folder

    def describe(self) -> str:
        return f"HW11 {self.domain} data in {self.root}"


# ---------------------------------------------------------------------------------------------- MNIST-M style
def _smooth(noise: np.ndarray, passes: int) -> np.ndarray:
    """Repeated 3x3 box blur with wrap-around on (H, W, C)."""
    for _ in range(passes):
        noise = sum(np.roll(np.roll(noise, dy, 0), dx, 1) for dy in (-1, 0, 1) for dx in (-1, 0, 1)) / 9.0
    return noise


def colour_textures(count: int, size: int, seed: int) -> np.ndarray:
    """``count`` deterministic colour textures, uint8 (count, size, size, 3): smoothed colour noise, colour
    gradients and stripes mixed with random weights (a stand-in for MNIST-M's BSDS500 photo patches)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) / size
    out = np.empty((count, size, size, 3), dtype=np.uint8)
    for i in range(count):
        noise = _smooth(rng.random((size, size, 3)), passes=int(rng.integers(1, 6)))
        noise = (noise - noise.min()) / max(noise.max() - noise.min(), 1e-6)
        angle, freq = rng.uniform(0, np.pi), rng.uniform(1.0, 6.0)
        stripes = 0.5 + 0.5 * np.sin(2 * np.pi * freq * (np.cos(angle) * xx + np.sin(angle) * yy) + rng.uniform(0, 6))
        c0, c1 = rng.random(3), rng.random(3)
        gradient = c0 + (c1 - c0) * (xx * rng.uniform(-1, 1) + yy * rng.uniform(-1, 1))[..., None]
        w = rng.dirichlet([1.0, 1.0, 1.0])
        tex = w[0] * noise + w[1] * stripes[..., None] * rng.random(3) + w[2] * np.clip(gradient, 0, 1)
        out[i] = np.clip(tex * 255.0, 0, 255).astype(np.uint8)
    return out


def mnistm_blend(digits: torch.Tensor, textures: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
    """uint8 grey (N, 1, H, W) -> uint8 RGB (N, 3, H, W): ``|patch - digit|`` with a random patch per image."""
    n, _, h, w = digits.shape
    size = textures.shape[1]
    which = rng.integers(0, len(textures), n)
    top, left = rng.integers(0, size - h + 1, n), rng.integers(0, size - w + 1, n)
    patches = np.stack([textures[k, t : t + h, s : s + w] for k, t, s in zip(which, top, left)])  # (N, H, W, 3)
    patches = torch.from_numpy(patches).permute(0, 3, 1, 2).to(torch.int16)  # (N, 3, H, W)
    return (patches - digits.to(torch.int16)).abs().to(torch.uint8)


class MNISTMStyleSource(ImageSource):
    """Another source's images re-rendered MNIST-M style (colour texture blend), deterministic from the seed."""

    def __init__(
        self,
        base: ImageSource | None = None,
        image_size: int | None = 16,
        num_textures: int = 64,
        contrast: float = 1.0,
        seed: int = 0,
    ) -> None:
        """
        Args:
            base: the source to re-render (grey images; RGB ones are converted to grey first); default: the
                scikit-learn digits, i.e. the embedded domain-adaptation target.
            image_size: render at this square size (the base images are resized first); None keeps their size.
            num_textures: how many procedural textures the patches are cut from.
            contrast: texture values span ``[0, contrast * 255]``; 1 is MNIST-M's rule, below 0.5 strokes stay
                brighter than the background (a milder shift).
            seed: seed of the textures and of the patch chosen for each image.
        """
        if num_textures < 1:
            raise ValueError(f"MNISTMStyleSource.num_textures must be >= 1, got {num_textures}")
        if image_size is not None and image_size < 1:
            raise ValueError(f"MNISTMStyleSource.image_size must be >= 1, got {image_size}")
        if not 0.0 < contrast <= 1.0:
            raise ValueError(f"MNISTMStyleSource.contrast must be in (0, 1], got {contrast}")
        self.base = base if base is not None else DigitsSource()
        self.image_size, self.num_textures, self.contrast, self.seed = image_size, num_textures, contrast, seed

    def name_settings(self, config_key: str) -> None:
        """This source's config key, and its base's beneath it (``<key>.init_args.base``)."""
        super().name_settings(config_key)
        self.base.name_settings(f"{config_key}.init_args.base")

    def load(self) -> ImageSplits:
        loaded = self.base.load()
        splits = {}
        for index, (name, (x, y)) in enumerate(sorted(loaded.splits.items())):
            grey = x.float().mean(dim=1, keepdim=True) if x.shape[1] != 1 else x.float()
            if self.image_size is not None and tuple(grey.shape[-2:]) != (self.image_size, self.image_size):
                grey = F.interpolate(
                    grey, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False
                )
            grey = grey.round().clamp(0, 255).to(torch.uint8)  # (N, 1, S, S)
            size = max(2 * max(grey.shape[-2:]), 32)
            textures = colour_textures(self.num_textures, size, self.seed)
            textures = (textures * self.contrast).astype(np.uint8)
            splits[name] = (mnistm_blend(grey, textures, np.random.default_rng([self.seed, index])), y)
        return ImageSplits(splits, list(loaded.classes))

    def describe(self) -> str:
        return f"{self.base.describe()} re-rendered MNIST-M style (seed {self.seed})"
