"""Image sources: where labelled images come from, independent of how they are split and batched.

Each source returns :class:`ImageSplits`: uint8 image tensors ``(N, C, H, W)`` and int64 labels ``(N,)`` per
split it provides (``train`` always, ``test`` when the format has one), and the class names. Sources read:

* :class:`DigitsSource` — scikit-learn's bundled handwritten digits (1,797 real 8x8 images, no download);
* :class:`IDXSource` — MNIST-format IDX files, gzipped or raw;
* :class:`ImageFolderSource` — ``root/<class>/*.png`` trees (optionally with ``train/`` and ``test/`` subtrees);
* :class:`HFDatasetSource` — a Hugging Face dataset by name (from the local cache when offline) or path.

Bad input raises ``FileNotFoundError``/``ValueError`` naming the file or setting.
"""

from __future__ import annotations

import gzip
import io
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

__all__ = [
    "DigitsSource",
    "HFDatasetSource",
    "IDXSource",
    "ImageFolderSource",
    "ImageSource",
    "ImageSplits",
    "read_idx",
]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


@dataclass
class ImageSplits:
    """Images per split: ``splits[name] = (images uint8 (N, C, H, W), labels int64 (N,))``."""

    splits: dict[str, tuple[torch.Tensor, torch.Tensor]]
    classes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if "train" not in self.splits:
            raise ValueError(f"an image source must provide a 'train' split; got {sorted(self.splits)}")
        for name, (x, y) in self.splits.items():
            if x.dtype != torch.uint8 or x.ndim != 4 or y.ndim != 1 or len(x) != len(y):
                raise ValueError(
                    f"split '{name}': expected uint8 images (N, C, H, W) and labels (N,), got {tuple(x.shape)} "
                    f"{x.dtype} and {tuple(y.shape)}"
                )
        if not self.classes:
            n = int(max(int(y.max()) for _, y in self.splits.values() if len(y)) + 1)
            self.classes = [str(i) for i in range(n)]


class ImageSource:
    """Base class: subclasses implement :meth:`load`."""

    def load(self) -> ImageSplits:
        raise NotImplementedError

    def describe(self) -> str:
        return type(self).__name__


class DigitsSource(ImageSource):
    """scikit-learn's bundled 8x8 handwritten digits (real data shipped with the package, no download)."""

    def load(self) -> ImageSplits:
        from sklearn.datasets import load_digits

        digits = load_digits()
        images = np.clip(np.round(digits.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)  # (N, 8, 8)
        x = torch.from_numpy(images).unsqueeze(1)  # (N, 1, 8, 8)
        y = torch.from_numpy(digits.target.astype(np.int64))
        return ImageSplits({"train": (x, y)}, [str(i) for i in range(10)])


def _open_maybe_gzip(path: Path):
    with open(path, "rb") as fh:
        magic = fh.read(2)
    return gzip.open(path, "rb") if magic == b"\x1f\x8b" else open(path, "rb")


def read_idx(path: str | Path) -> np.ndarray:
    """Read one IDX file (gzipped or raw) into a NumPy array; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"IDX file not found: {path}")
    dtypes = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    try:
        with _open_maybe_gzip(path) as fh:
            header = fh.read(4)
            if len(header) != 4 or header[0] != 0 or header[1] != 0 or header[2] not in dtypes:
                raise ValueError(f"{path} is not an IDX file (bad magic number {header.hex()})")
            ndim = header[3]
            shape = struct.unpack(">" + "I" * ndim, fh.read(4 * ndim))
            data = np.frombuffer(fh.read(), dtype=dtypes[header[2]])
    except (OSError, EOFError) as exc:
        raise ValueError(f"cannot read IDX file {path}: {exc}") from exc
    expected = int(np.prod(shape))
    if data.size != expected:
        raise ValueError(f"{path}: header says shape {shape} ({expected} values) but the file holds {data.size}")
    return data.reshape(shape)


class IDXSource(ImageSource):
    """MNIST-format IDX files in one folder (``train-images-idx3-ubyte[.gz]`` and friends)."""

    def __init__(self, root: str, train_prefix: str = "train", test_prefix: str = "t10k") -> None:
        """
        Args:
            root: folder holding the IDX files.
            train_prefix: file prefix of the training split (``train`` for MNIST and Fashion-MNIST).
            test_prefix: file prefix of the test split (``t10k`` for MNIST); a missing test split is allowed.
        """
        self.root = Path(root)
        self.train_prefix = train_prefix
        self.test_prefix = test_prefix

    def _find(self, prefix: str, kind: str) -> Path | None:
        for suffix in ("", ".gz"):
            for sep in ("-", "."):
                candidate = self.root / f"{prefix}-{kind}-idx{3 if kind == 'images' else 1}{sep}ubyte{suffix}"
                if candidate.is_file():
                    return candidate
        return None

    def load(self) -> ImageSplits:
        if not self.root.is_dir():
            raise FileNotFoundError(f"IDXSource.root does not exist or is not a folder: {self.root}")
        splits = {}
        for split, prefix in (("train", self.train_prefix), ("test", self.test_prefix)):
            images, labels = self._find(prefix, "images"), self._find(prefix, "labels")
            if images is None and labels is None and split == "test":
                continue
            if images is None or labels is None:
                kind = "images-idx3" if images is None else "labels-idx1"
                raise FileNotFoundError(
                    f"IDXSource: no '{prefix}-{kind}-ubyte' (or .gz) file in {self.root} for the {split} split"
                )
            x, y = read_idx(images), read_idx(labels)
            if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
                raise ValueError(
                    f"IDXSource: {images} holds {x.shape}, {labels} holds {y.shape}; expected (N,H,W),(N,)"
                )
            splits[split] = (torch.from_numpy(x.astype(np.uint8)).unsqueeze(1), torch.from_numpy(y.astype(np.int64)))
        return ImageSplits(splits)

    def describe(self) -> str:
        return f"IDX files in {self.root}"


def _pil_to_tensor(img) -> torch.Tensor:
    """A PIL image to uint8 (C, H, W): greyscale stays 1 channel, everything else becomes RGB."""
    if img.mode not in ("L", "RGB"):
        img = img.convert("L" if img.mode in ("1", "I", "I;16", "F", "LA") else "RGB")
    arr = np.asarray(img, dtype=np.uint8)
    if arr.ndim == 2:
        arr = arr[None]
    else:
        arr = arr.transpose(2, 0, 1)
    return torch.from_numpy(arr.copy())


def stack_images(images: list[torch.Tensor], where: str) -> torch.Tensor:
    """Stack (C, H, W) uint8 images; mixed grey/RGB become RGB. Differing sizes are an error naming ``where``."""
    channels = max(t.shape[0] for t in images)
    images = [t.expand(channels, -1, -1) if t.shape[0] != channels else t for t in images]
    sizes = {tuple(t.shape[1:]) for t in images}
    if len(sizes) > 1:
        raise ValueError(
            f"{where}: images have different sizes {sorted(sizes)[:4]}; set the data module's image_size to resize"
        )
    return torch.stack(images)


def read_image(path: Path | str, image_size: int | None = None, data: bytes | None = None) -> torch.Tensor:
    """One image file (or its bytes, read from an archive member named ``path``) to uint8 (C, H, W); unreadable
    images raise ``ValueError`` naming the file."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path if data is None else io.BytesIO(data)) as img:
            img.load()
            if image_size is not None and img.size != (image_size, image_size):
                img = img.resize((image_size, image_size), Image.BILINEAR)
            return _pil_to_tensor(img)
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError(f"cannot read image file {path}: {exc}") from exc


class ImageFolderSource(ImageSource):
    """``root/<class>/*.png`` trees; with ``root/train`` (and ``root/test``) subtrees those become the splits."""

    def __init__(self, root: str, image_size: int | None = None) -> None:
        """
        Args:
            root: folder with one sub-folder per class, or with ``train/`` and ``test/`` folders of that form.
            image_size: resize every image to this square size while reading (needed when sizes differ).
        """
        self.root = Path(root)
        self.image_size = image_size

    def _read_tree(self, root: Path, classes: list[str] | None) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
        found = sorted(p.name for p in root.iterdir() if p.is_dir())
        classes = classes or found
        unknown = sorted(set(found) - set(classes))
        if unknown:
            raise ValueError(f"ImageFolderSource: {root} has class folders {unknown} that the train split lacks")
        images, labels = [], []
        for label, name in enumerate(classes):
            folder = root / name
            if not folder.is_dir():
                continue
            for path in sorted(folder.iterdir()):
                if path.suffix.lower() in IMAGE_EXTENSIONS:
                    images.append(read_image(path, self.image_size))
                    labels.append(label)
        if not images:
            raise ValueError(f"ImageFolderSource: no images ({', '.join(IMAGE_EXTENSIONS)}) under {root}/<class>/")
        return stack_images(images, str(root)), torch.tensor(labels, dtype=torch.int64), classes

    def load(self) -> ImageSplits:
        if not self.root.is_dir():
            raise FileNotFoundError(f"ImageFolderSource.root does not exist or is not a folder: {self.root}")
        if (self.root / "train").is_dir():
            x, y, classes = self._read_tree(self.root / "train", None)
            splits = {"train": (x, y)}
            for name in ("val", "test"):
                if (self.root / name).is_dir():
                    xs, ys, _ = self._read_tree(self.root / name, classes)
                    splits[name] = (xs, ys)
            return ImageSplits(splits, classes)
        x, y, classes = self._read_tree(self.root, None)
        return ImageSplits({"train": (x, y)}, classes)

    def describe(self) -> str:
        return f"image folder {self.root}"


class HFDatasetSource(ImageSource):
    """A Hugging Face dataset: a saved ``save_to_disk`` folder, a local data folder/file, or a hub name."""

    def __init__(
        self,
        name_or_path: str,
        image_key: str = "image",
        label_key: str = "label",
        config_name: str | None = None,
        revision: str | None = None,
    ) -> None:
        """
        Args:
            name_or_path: ``save_to_disk`` folder, a folder of data files (parquet, imagefolder, ...), or a hub
                dataset name (read from the local cache when ``HF_DATASETS_OFFLINE=1``).
            image_key: column holding the images (PIL images or nested arrays).
            label_key: column holding integer class labels.
            config_name: dataset configuration name, if the dataset has several.
            revision: dataset revision (hub names only).
        """
        self.name_or_path = name_or_path
        self.image_key = image_key
        self.label_key = label_key
        self.config_name = config_name
        self.revision = revision

    def _load_dict(self):
        import datasets

        path = Path(self.name_or_path)
        if path.is_dir() and (
            (path / "dataset_dict.json").is_file()
            or ((path / "dataset_info.json").is_file() and (path / "state.json").is_file())
        ):
            loaded = datasets.load_from_disk(str(path))
        else:
            looks_local = self.name_or_path.startswith((".", "/", "~")) or path.suffix != ""
            if looks_local and not path.exists():
                raise FileNotFoundError(f"HFDatasetSource.name_or_path does not exist: {path}")
            loaded = datasets.load_dataset(self.name_or_path, self.config_name, revision=self.revision)
        if isinstance(loaded, datasets.Dataset):
            loaded = datasets.DatasetDict({"train": loaded})
        return loaded

    def load(self) -> ImageSplits:
        ddict = self._load_dict()
        if "train" not in ddict:
            raise ValueError(f"HFDatasetSource '{self.name_or_path}': no 'train' split (splits: {list(ddict)})")
        splits, classes = {}, []
        for split in ("train", "validation", "val", "test"):
            if split not in ddict:
                continue
            ds = ddict[split]
            for key, setting in ((self.image_key, "image_key"), (self.label_key, "label_key")):
                if key not in ds.column_names:
                    raise ValueError(
                        f"HFDatasetSource '{self.name_or_path}' split '{split}' has no column '{key}' "
                        f"(set {setting}; columns: {ds.column_names})"
                    )
            feature = ds.features[self.label_key]
            if not classes and hasattr(feature, "names"):
                classes = list(feature.names)
            images = [self._to_tensor(v) for v in ds[self.image_key]]
            x = stack_images(images, f"HFDatasetSource '{self.name_or_path}' split '{split}'")
            y = torch.tensor(ds[self.label_key], dtype=torch.int64)
            splits["val" if split == "validation" else split] = (x, y)
        return ImageSplits(splits, classes)

    @staticmethod
    def _to_tensor(value) -> torch.Tensor:
        if hasattr(value, "mode"):  # a PIL image
            return _pil_to_tensor(value)
        arr = np.asarray(value)
        if arr.ndim == 2:
            arr = arr[None]
        elif arr.ndim == 3 and arr.shape[-1] in (1, 3) and arr.shape[0] not in (1, 3):
            arr = arr.transpose(2, 0, 1)
        if arr.dtype != np.uint8:
            arr = np.clip(arr * (255.0 if arr.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8)
        return torch.from_numpy(np.ascontiguousarray(arr))

    def describe(self) -> str:
        return f"Hugging Face dataset {self.name_or_path}"
