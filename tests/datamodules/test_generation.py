"""Images for generative models: the digits in [-1, 1] at the metric classifier's size, HW6's flat face folders,
class trees, MNIST IDX files, and the predict loader of sample indices."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
import torch

from datamodules.errors import DataFileError, DataPathError, SettingError
from datamodules.generation import FlatImageFolderSource, GenerationDataModule
from datamodules.image import ImageDataModule
from datamodules.sources import IDXSource


def _write_images(folder, n: int, size: tuple[int, int], suffix: str = ".jpg", seed: int = 0) -> None:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(folder / f"{i}{suffix}")


def test_the_digits_come_in_minus_one_to_one_at_16_px_with_the_classifier_lectures_training_statistics():
    dm = GenerationDataModule()
    dm.setup("fit")
    x, _ = next(iter(dm.train_dataloader()))
    assert dm.input_shape == (1, 16, 16) and dm.num_classes == 10
    assert x.min() >= -1.0 and x.max() <= 1.0 and x.min() < -0.99 and x.max() > 0.99
    classification = ImageDataModule(image_size=16)  # configs/classification.yaml's data: the metric CNN's training
    mean, std = classification.pixel_stats
    torch.testing.assert_close(dm.real_stats[0], mean)
    torch.testing.assert_close(dm.real_stats[1], std)
    assert len(dm.reference_images()) == len(classification._data["train"])


def test_hw6s_flat_face_folder_is_one_class_resized_while_reading(tmp_path):
    _write_images(tmp_path / "faces", 12, (96, 96))
    dm = GenerationDataModule(source=FlatImageFolderSource(root=str(tmp_path / "faces"), image_size=32),
                              image_size=None, val_fraction=0.25, test_fraction=0.0, batch_size=4)  # fmt: skip
    dm.setup("fit")
    assert dm.input_shape == (3, 32, 32) and dm.num_classes == 1
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (4, 3, 32, 32) and set(y.tolist()) == {0} and x.min() >= -1.0 and x.max() <= 1.0


def test_a_class_tree_gives_one_class_per_folder(tmp_path):
    for name in ("cats", "dogs"):
        _write_images(tmp_path / "pets" / name, 5, (20, 20), suffix=".png")
    dm = GenerationDataModule(source=FlatImageFolderSource(root=str(tmp_path / "pets"), image_size=16),
                              val_fraction=0.2, test_fraction=0.0)  # fmt: skip
    dm.setup("fit")
    assert dm.num_classes == 2 and dm.input_shape == (3, 16, 16)


def _write_idx(path, array: np.ndarray, type_byte: int = 0x08) -> None:
    header = bytes([0, 0, type_byte, array.ndim]) + struct.pack(">" + "I" * array.ndim, *array.shape)
    with gzip.open(path, "wb") as fh:
        fh.write(header + array.astype(np.uint8).tobytes())


def test_mnist_idx_files_are_read_at_28_px(tmp_path):
    rng = np.random.default_rng(0)
    _write_idx(tmp_path / "train-images-idx3-ubyte.gz", rng.integers(0, 255, (40, 28, 28)))
    _write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.arange(40) % 10)
    dm = GenerationDataModule(source=IDXSource(root=str(tmp_path)), image_size=28, test_fraction=0.0)
    dm.setup("fit")
    assert dm.input_shape == (1, 28, 28) and dm.num_classes == 10


@pytest.mark.parametrize(
    ("make", "error", "named"),
    [
        (lambda root: None, DataPathError, "root"),
        (lambda root: root.mkdir(), DataFileError, "no images"),
        (lambda root: (root.mkdir(), (root / "a.jpg").write_bytes(b"not a jpeg")), DataFileError, "a.jpg"),
    ],
)
def test_a_bad_image_folder_names_the_setting_or_file(tmp_path, make, error, named):
    root = tmp_path / "faces"
    make(root)
    source = FlatImageFolderSource(root=str(root))
    source.name_settings("data.init_args.source")
    with pytest.raises(error, match=named):
        source.load()


def test_normalize_and_a_non_positive_num_generate_are_refused_naming_the_setting():
    with pytest.raises(SettingError, match=r"data\.init_args\.normalize"):
        GenerationDataModule(normalize=True)
    with pytest.raises(SettingError, match=r"data\.init_args\.num_generate"):
        GenerationDataModule(num_generate=0)


def test_predict_yields_each_sample_index_once():
    dm = GenerationDataModule(num_generate=10, eval_batch_size=4)
    indices = torch.cat([batch[0] for batch in dm.predict_dataloader()])
    assert indices.tolist() == list(range(10))
