"""Image sources: where labelled images come from, independent of how they are split and batched.

Each source returns :class:`ImageSplits`: uint8 image tensors ``(N, C, H, W)`` and int64 labels ``(N,)`` per
split it provides (``train`` always, ``test`` when the format has one), and the class names. Sources read:

* :class:`DigitsSource` — scikit-learn's bundled handwritten digits (1,797 real 8x8 images, no download);
* :class:`IDXSource` — MNIST-format IDX files, gzipped or raw;
* :class:`ImageFolderSource` — ``root/<class>/*.png`` trees (optionally with ``train/`` and ``test/`` subtrees);
* :class:`HFDatasetSource` — a Hugging Face dataset by name (from the local cache when offline) or path.

Bad input raises a :mod:`datamodules.errors` type: :class:`DataPathError` naming the setting and the path,
:class:`DataFileError` naming the file and the record (a corrupt image or IDX file, a label outside the classes).
A DataModule tells its source where it sits in the config (:meth:`ImageSource.name_settings`), so a message names
a setting as the user writes it: ``data.init_args.source.init_args.root``.
"""

from __future__ import annotations

import gzip
import io
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from datamodules.errors import DataFileError, DataPathError, SettingError
from datamodules.paths import require_file, require_folder

HF_DATA_FILE_BUILDERS = {".parquet": "parquet", ".arrow": "arrow"}  # one data file -> the datasets builder

__all__ = [
    "DigitsSource",
    "HFDatasetSource",
    "IDXSource",
    "ImageFolderSource",
    "ImageSource",
    "ImageSplits",
    "check_labels",
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

    config_key: str | None = None  # where this source sits in the config, e.g. "data.init_args.source"

    def load(self) -> ImageSplits:
        raise NotImplementedError

    def name_settings(self, config_key: str) -> None:
        """Record where this source sits in the config (``data.init_args.source``); the DataModule holding it calls
        this, so errors name the source's settings by their config keys."""
        self.config_key = config_key

    def setting(self, name: str) -> str:
        """The config key of this source's argument ``name``; ``ClassName.name`` for a source used on its own."""
        return f"{self.config_key}.init_args.{name}" if self.config_key else f"{type(self).__name__}.{name}"

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


def read_idx(path: str | Path, setting: str = "path") -> np.ndarray:
    """Read one IDX file (gzipped or raw) into a NumPy array.

    Raises:
        DataPathError: no such file (naming ``setting``).
        DataFileError: not an IDX file, a broken gzip stream, or a size that disagrees with the header; names the file.
    """
    path = require_file(path, setting)
    dtypes = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    try:
        with _open_maybe_gzip(path) as fh:
            header = fh.read(4)
            if len(header) != 4 or header[0] != 0 or header[1] != 0 or header[2] not in dtypes:
                raise DataFileError(
                    f"{path} is not an IDX file (bad magic number {header.hex() or 'none: empty file'}; an IDX "
                    "file starts with 00 00, a type byte 08..0e and the number of dimensions)"
                )
            ndim = header[3]
            sizes = fh.read(4 * ndim)
            payload = fh.read()
    except (OSError, EOFError, zlib.error) as exc:
        raise DataFileError(f"cannot read IDX file {path}: {exc}") from exc
    if len(sizes) != 4 * ndim:
        raise DataFileError(f"{path}: the IDX header is cut short ({ndim} dimension sizes announced)")
    shape = struct.unpack(">" + "I" * ndim, sizes)
    dtype = np.dtype(dtypes[header[2]])
    expected = int(np.prod(shape))
    if len(payload) != expected * dtype.itemsize:
        raise DataFileError(
            f"{path}: header says shape {shape} ({expected} values) but the file holds "
            f"{len(payload) / dtype.itemsize:g}: a truncated or corrupt file"
        )
    return np.frombuffer(payload, dtype=dtype).reshape(shape)


def check_labels(labels: np.ndarray, num_classes: int, where: str, allowed: str) -> None:
    """Every label lies in ``0..num_classes-1``, else a :class:`DataFileError` naming ``where`` (the labels file),
    the first wrong record (0-based) and ``allowed`` (how the class list was set)."""
    bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if len(bad):
        i = int(bad[0])
        raise DataFileError(
            f"{where}, record {i}: label {labels[i]} is outside the classes 0..{num_classes - 1} ({allowed})"
        )


class IDXSource(ImageSource):
    """MNIST-format IDX files in one folder (``train-images-idx3-ubyte[.gz]`` and friends)."""

    def __init__(
        self, root: str, train_prefix: str = "train", test_prefix: str = "t10k", num_classes: int | None = None
    ) -> None:
        """
        Args:
            root: folder holding the IDX files.
            train_prefix: file prefix of the training split (``train`` for MNIST and Fashion-MNIST).
            test_prefix: file prefix of the test split (``t10k`` for MNIST); a missing test split is allowed.
            num_classes: labels must lie in ``0..num_classes-1``; null: the training labels number the classes
                ``0..max`` (0 may be unused, as in EMNIST letters; any other unused number is an error).
        """
        if num_classes is not None and num_classes < 2:
            raise SettingError(f"IDXSource.num_classes must be >= 2 or null, got {num_classes}")
        self.root = Path(root)
        self.train_prefix = train_prefix
        self.test_prefix = test_prefix
        self.num_classes = num_classes

    def _find(self, prefix: str, kind: str) -> Path | None:
        for suffix in ("", ".gz"):
            for sep in ("-", "."):
                candidate = self.root / f"{prefix}-{kind}-idx{3 if kind == 'images' else 1}{sep}ubyte{suffix}"
                if candidate.is_file():
                    return candidate
        return None

    def load(self) -> ImageSplits:
        hint = f"give the folder holding {self.train_prefix}-images-idx3-ubyte(.gz) and its labels file"
        require_folder(self.root, self.setting("root"), hint=hint)
        splits, classes = {}, self.num_classes
        for split, prefix in (("train", self.train_prefix), ("test", self.test_prefix)):
            images, labels = self._find(prefix, "images"), self._find(prefix, "labels")
            if images is None and labels is None and split == "test":
                continue
            if images is None or labels is None:
                kind = "images-idx3" if images is None else "labels-idx1"
                raise DataPathError(
                    f"{self.setting('root')} = {self.root}: no '{prefix}-{kind}-ubyte' (or .gz) file for the "
                    f"{split} split"
                )
            x, y = read_idx(images), read_idx(labels)
            if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
                raise DataFileError(
                    f"{images} holds {x.shape}, {labels} holds {y.shape}; expected images (N, H, W) and labels (N,)"
                )
            classes = classes or self._count_classes(y, labels)
            check_labels(y, classes, str(labels), self._classes_rule(classes))
            splits[split] = (torch.from_numpy(x.astype(np.uint8)).unsqueeze(1), torch.from_numpy(y.astype(np.int64)))
        return ImageSplits(splits, [str(i) for i in range(classes)])

    def _count_classes(self, y: np.ndarray, where: Path) -> int:
        """Classes ``0..max`` of the training labels; a number other than 0 that no label uses is an error."""
        if not len(y):
            raise DataFileError(f"{where} holds no labels")
        if y.min() < 0:
            i = int(np.flatnonzero(y < 0)[0])
            raise DataFileError(f"{where}, record {i}: label {y[i]} is negative (labels number the classes 0..K-1)")
        present = np.unique(y)
        unused = np.setdiff1d(np.arange(1, int(present[-1]) + 1), present)
        if len(unused):
            above = int(np.flatnonzero(y > unused[0])[0])
            raise DataFileError(
                f"{where}, record {above}: label {y[above]}, but no label is {int(unused[0])} (labels should number "
                f"the classes 0..K-1): a corrupt labels file? If the numbering really has gaps, set "
                f"{self.setting('num_classes')}"
            )
        return int(present[-1]) + 1

    def _classes_rule(self, classes: int) -> str:
        if self.num_classes is not None:
            return f"{self.setting('num_classes')} = {classes}"
        return f"the training labels number {classes} classes"

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


def stack_images(images: list[torch.Tensor], where: str, size_setting: str | None = None) -> torch.Tensor:
    """Stack (C, H, W) uint8 images; mixed grey/RGB become RGB. Differing sizes are a :class:`DataFileError`
    naming ``where`` and the setting that resizes them (``size_setting``)."""
    channels = max(t.shape[0] for t in images)
    images = [t.expand(channels, -1, -1) if t.shape[0] != channels else t for t in images]
    sizes = {tuple(t.shape[1:]) for t in images}
    if len(sizes) > 1:
        fix = f"set {size_setting} to resize them while reading" if size_setting else "resize them to one size"
        raise DataFileError(f"{where}: images have different sizes {sorted(sizes)[:4]}; {fix}")
    return torch.stack(images)


def read_image(path: Path | str, image_size: int | None = None, data: bytes | None = None) -> torch.Tensor:
    """One image file (or its bytes, read from an archive member named ``path``) to uint8 (C, H, W); an unreadable
    image is a :class:`DataFileError` naming the file."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path if data is None else io.BytesIO(data)) as img:
            img.load()
            if image_size is not None and img.size != (image_size, image_size):
                img = img.resize((image_size, image_size), Image.BILINEAR)
            return _pil_to_tensor(img)
    except UnidentifiedImageError as exc:
        raise DataFileError(f"cannot read image file {path}: not an image format PIL knows (corrupt?)") from exc
    except (OSError, SyntaxError) as exc:  # PIL reports some broken headers as SyntaxError
        raise DataFileError(f"cannot read image file {path}: {exc}") from exc


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
        training = classes is None
        classes = classes or found
        unknown = sorted(set(found) - set(classes))
        if unknown:
            raise DataFileError(
                f"{root} has class folders {unknown} that the training folder lacks (its classes: {classes})"
            )
        images, labels = [], []
        for label, name in enumerate(classes):
            folder = root / name
            if not folder.is_dir():
                continue
            for path in sorted(folder.iterdir()):
                if path.suffix.lower() in IMAGE_EXTENSIONS:
                    images.append(read_image(path, self.image_size))
                    labels.append(label)
        if training:
            self._check_class_folders(root, found)
        if not images:
            raise DataFileError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) under {root}/<class>/")
        size_setting = self.setting("image_size")
        return stack_images(images, str(root), size_setting), torch.tensor(labels, dtype=torch.int64), classes

    def _check_class_folders(self, root: Path, found: list[str]) -> None:
        """The training tree has one sub-folder per class, at least two (checked after reading, so that a broken
        image is reported first)."""
        layout = f"put each class's images in its own sub-folder ({root}/<class>/*.png)"
        if not found:
            loose = any(p.suffix.lower() in IMAGE_EXTENSIONS for p in root.iterdir())
            what = "images but no class sub-folders" if loose else "no class sub-folders"
            raise DataFileError(f"image folder {root} has {what}; {layout}")
        if len(found) < 2:
            raise DataFileError(
                f"image folder {root} has 1 class sub-folder ({found[0]!r}); a classifier needs at least 2: {layout}"
            )

    def load(self) -> ImageSplits:
        hint = "give a folder with one sub-folder per class (or train/ and test/ folders of that form)"
        require_folder(self.root, self.setting("root"), hint=hint)
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

        path = Path(self.name_or_path).expanduser()
        if path.is_file():  # one data file: read by the datasets builder of its format
            builder = HF_DATA_FILE_BUILDERS.get(path.suffix.lower())
            if builder is None:
                raise SettingError(
                    f"{self.setting('name_or_path')} = {path}: a single file must be "
                    f"{' or '.join(HF_DATA_FILE_BUILDERS)}; for other formats give the folder holding the data files"
                )
            loaded = datasets.load_dataset(builder, data_files=str(path), split="train")
        elif path.is_dir() and (
            (path / "dataset_dict.json").is_file()
            or ((path / "dataset_info.json").is_file() and (path / "state.json").is_file())
        ):
            loaded = datasets.load_from_disk(str(path))
        else:
            looks_local = self.name_or_path.startswith((".", "/", "~")) or path.suffix != ""
            if looks_local and not path.exists():
                raise DataPathError(f"{self.setting('name_or_path')} does not exist: {path}")
            loaded = datasets.load_dataset(self.name_or_path, self.config_name, revision=self.revision)
        if isinstance(loaded, datasets.Dataset):
            loaded = datasets.DatasetDict({"train": loaded})
        return loaded

    def load(self) -> ImageSplits:
        ddict = self._load_dict()
        if "train" not in ddict:
            raise DataFileError(f"Hugging Face dataset {self.name_or_path}: no 'train' split (splits: {list(ddict)})")
        splits, classes = {}, []
        for split in ("train", "validation", "val", "test"):
            if split not in ddict:
                continue
            ds = ddict[split]
            for key, setting in ((self.image_key, "image_key"), (self.label_key, "label_key")):
                if key not in ds.column_names:
                    raise SettingError(
                        f"{self.setting(setting)}: Hugging Face dataset {self.name_or_path} split '{split}' has no "
                        f"column '{key}' (columns: {ds.column_names})"
                    )
            feature = ds.features[self.label_key]
            if not classes and hasattr(feature, "names"):
                classes = list(feature.names)
            images = [self._to_tensor(v) for v in ds[self.image_key]]
            where = f"Hugging Face dataset {self.name_or_path} split '{split}'"
            x = stack_images(images, where)
            y = self._labels(ds[self.label_key], f"{where} column '{self.label_key}'", classes)
            splits["val" if split == "validation" else split] = (x, y)
        return ImageSplits(splits, classes)

    @staticmethod
    def _labels(values: list, where: str, classes: list[str]) -> torch.Tensor:
        """Integer labels in ``0..len(classes)-1`` (any class number when the column names none); -1 marks an
        unlabelled image (Hugging Face's ClassLabel convention). Anything else names the record."""
        for i, v in enumerate(values):
            if not isinstance(v, (int, np.integer)) or v < -1 or (classes and v >= len(classes)):
                allowed = f"0..{len(classes) - 1}" if classes else "class numbers 0, 1, ..."
                raise DataFileError(f"{where}, record {i}: label {v!r} is not a class; labels are {allowed} or -1")
        return torch.tensor(values, dtype=torch.int64)

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
