"""Image sources in their exact on-disk formats, seeded splits, and the DDP/resume samplers."""

from __future__ import annotations

import gzip
import re
import struct

import numpy as np
import pytest
import torch

from datamodules.errors import DataFileError, DataPathError, SettingError
from datamodules.image import ImageDataModule, conform_images, split_indices
from datamodules.samplers import ResumableSampler, ShardSampler
from datamodules.sources import (
    DigitsSource,
    HFDatasetSource,
    IDXSource,
    ImageFolderSource,
    ImageSource,
    ImageSplits,
    read_idx,
    read_image,
)


def write_idx(path, array: np.ndarray, compress: bool) -> None:
    """Write an IDX file exactly as MNIST's: magic 0x0000 0x08 ndim, big-endian dims, raw uint8 data."""
    payload = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(">" + "I" * array.ndim, *array.shape)
    payload += array.astype(np.uint8).tobytes()
    (gzip.open if compress else open)(path, "wb").write(payload)


@pytest.fixture
def mnist_dir(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "mnist"
    root.mkdir()
    for prefix, n, compress in (("train", 60, True), ("t10k", 20, False)):
        write_idx(
            root / f"{prefix}-images-idx3-ubyte{'.gz' if compress else ''}", rng.integers(0, 256, (n, 28, 28)), compress
        )
        write_idx(root / f"{prefix}-labels-idx1-ubyte{'.gz' if compress else ''}", np.arange(n) % 10, compress)
    return root


@pytest.mark.parametrize("compress", [True, False])
def test_read_idx_round_trip(tmp_path, compress):
    array = np.random.default_rng(1).integers(0, 256, (5, 7, 3))
    write_idx(tmp_path / "x.idx", array, compress)
    np.testing.assert_array_equal(read_idx(tmp_path / "x.idx"), array)


def test_read_idx_rejects_bad_magic_and_truncation(tmp_path):
    (tmp_path / "bad.idx").write_bytes(b"\x12\x34\x08\x01" + b"\x00" * 8)
    with pytest.raises(ValueError, match=r"bad.idx"):
        read_idx(tmp_path / "bad.idx")
    write_idx(tmp_path / "short.idx", np.zeros((4, 4)), compress=False)
    data = (tmp_path / "short.idx").read_bytes()
    (tmp_path / "short.idx").write_bytes(data[:-3])
    with pytest.raises(ValueError, match=r"short.idx"):
        read_idx(tmp_path / "short.idx")


def test_idx_source_reads_mnist_layout_and_datamodule_splits(mnist_dir):
    splits = IDXSource(str(mnist_dir)).load().splits
    assert splits["train"][0].shape == (60, 1, 28, 28) and splits["test"][0].shape == (20, 1, 28, 28)
    dm = ImageDataModule(IDXSource(str(mnist_dir)), val_fraction=0.2, seed=3)
    dm.setup("fit")
    assert {k: len(v) for k, v in dm._data.items()} == {"train": 48, "val": 12, "test": 20}
    assert dm.num_classes == 10 and dm.input_shape == (1, 28, 28)


def test_idx_source_missing_labels_names_the_file(mnist_dir):
    (mnist_dir / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(FileNotFoundError, match="train-labels-idx1-ubyte"):
        IDXSource(str(mnist_dir)).load()


def _write_png(path, array: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array.astype(np.uint8)).save(path)


def test_image_folder_reads_classes_and_mixed_grey_rgb(tmp_path):
    _write_png(tmp_path / "imgs" / "cat" / "a.png", np.full((6, 6), 10))
    _write_png(tmp_path / "imgs" / "cat" / "b.png", np.full((6, 6, 3), 20))
    _write_png(tmp_path / "imgs" / "dog" / "c.png", np.full((6, 6), 30))
    loaded = ImageFolderSource(str(tmp_path / "imgs")).load()
    x, y = loaded.splits["train"]
    assert loaded.classes == ["cat", "dog"] and y.tolist() == [0, 0, 1]
    assert x.shape == (3, 3, 6, 6) and x[0].unique().tolist() == [10]


def test_image_folder_train_test_subtrees(tmp_path):
    for split, n in (("train", 4), ("test", 2)):
        for cls in ("a", "b"):
            for i in range(n):
                _write_png(tmp_path / split / cls / f"{i}.png", np.full((5, 5), i))
    loaded = ImageFolderSource(str(tmp_path)).load()
    assert len(loaded.splits["train"][1]) == 8 and len(loaded.splits["test"][1]) == 4


def test_image_folder_errors_name_the_file_or_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing-folder"):
        ImageFolderSource(str(tmp_path / "missing-folder")).load()
    (tmp_path / "bad" / "cls").mkdir(parents=True)
    (tmp_path / "bad" / "cls" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match=r"broken.png"):
        ImageFolderSource(str(tmp_path / "bad")).load()


def _hf_dataset():
    import datasets
    from PIL import Image

    images = [Image.fromarray(np.full((4, 4), i * 20, dtype=np.uint8)) for i in range(6)]
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["x", "y", "z"])})
    return datasets.Dataset.from_dict({"image": images, "label": [0, 1, 2, 0, 1, 2]}, features=features)


def test_hf_dataset_from_save_to_disk(tmp_path):
    import datasets

    datasets.DatasetDict({"train": _hf_dataset(), "test": _hf_dataset()}).save_to_disk(str(tmp_path / "saved"))
    loaded = HFDatasetSource(str(tmp_path / "saved")).load()
    assert loaded.classes == ["x", "y", "z"] and loaded.splits["train"][0].shape == (6, 1, 4, 4)
    assert "test" in loaded.splits


def test_hf_dataset_from_data_folder_and_column_errors(tmp_path):
    folder = tmp_path / "parquet"
    folder.mkdir()
    _hf_dataset().to_parquet(str(folder / "train.parquet"))
    loaded = HFDatasetSource(str(folder)).load()
    assert loaded.splits["train"][1].tolist() == [0, 1, 2, 0, 1, 2]
    with pytest.raises(ValueError, match="label_key"):
        HFDatasetSource(str(folder), label_key="target").load()
    with pytest.raises(FileNotFoundError, match="nowhere"):
        HFDatasetSource(str(tmp_path / "nowhere")).load()


def test_hf_dataset_from_one_data_file_and_other_single_files_in_one_line(tmp_path):
    _hf_dataset().to_parquet(str(tmp_path / "train.parquet"))
    loaded = HFDatasetSource(str(tmp_path / "train.parquet")).load()
    assert loaded.splits["train"][1].tolist() == [0, 1, 2, 0, 1, 2] and loaded.splits["train"][0].shape == (6, 1, 4, 4)
    (tmp_path / "notes.txt").write_text("not data")
    with pytest.raises(ValueError, match=r"name_or_path = .*notes.txt: a single file must be .parquet or .arrow"):
        HFDatasetSource(str(tmp_path / "notes.txt")).load()


def test_digits_default_is_real_and_offline():
    loaded = DigitsSource().load()
    x, y = loaded.splits["train"]
    assert x.shape == (1797, 1, 8, 8) and x.dtype == torch.uint8 and sorted(y.unique().tolist()) == list(range(10))


def test_splits_are_seeded_disjoint_and_cover():
    a = split_indices(100, [0.1, 0.2], seed=5)
    b = split_indices(100, [0.1, 0.2], seed=5)
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    assert [len(p) for p in a] == [70, 10, 20]
    assert sorted(torch.cat(a).tolist()) == list(range(100))
    assert not torch.equal(split_indices(100, [0.1, 0.2], seed=6)[1], a[1])


def test_too_few_samples_to_split_is_a_setting_error_naming_the_fractions():
    with pytest.raises(SettingError, match=r"cannot split 3 samples into fractions \[0.1, 0.2\]: .*val_fraction"):
        split_indices(3, [0.1, 0.2], seed=0)


def test_conform_images_channels_and_size():
    x = torch.randint(0, 256, (2, 1, 8, 8), dtype=torch.uint8)
    y = conform_images(x, channels=3, image_size=16)
    assert y.shape == (2, 3, 16, 16) and y.min() >= 0.0 and y.max() <= 1.0
    assert conform_images(torch.zeros(1, 3, 4, 4, dtype=torch.uint8), 1, None).shape == (1, 1, 4, 4)


def test_datamodule_rejects_bad_settings():
    with pytest.raises(ValueError, match="val_fraction"):
        ImageDataModule(val_fraction=1.5)
    with pytest.raises(ValueError, match="channels"):
        ImageDataModule(channels=2)


def test_resumable_sampler_shards_cover_and_resume_skips():
    shards = [list(ResumableSampler(10, num_replicas=2, rank=r, seed=1)) for r in range(2)]
    assert sorted(shards[0] + shards[1]) == list(range(10))
    sampler = ResumableSampler(10, seed=1)
    sampler.set_epoch(3)
    full = list(sampler)
    assert full != list(ResumableSampler(10, seed=1))  # epoch 0 differs from epoch 3
    sampler.resume_from(epoch=3, batches_done=2, batch_size=3)
    assert list(sampler) == full[6:]
    assert list(sampler) == full  # the skip applies once


def test_shard_sampler_has_no_padding():
    parts = [list(ShardSampler(7, num_replicas=2, rank=r)) for r in range(2)]
    assert parts == [[0, 2, 4, 6], [1, 3, 5]] and [len(ShardSampler(7, 2, r)) for r in range(2)] == [4, 3]


# ------------------------------------------------------------------ bad data: one error naming the file or setting
def test_broken_idx_files_are_data_file_errors_naming_the_file(tmp_path):
    cases = {
        "empty.idx": b"",
        "magic.idx": b"\x89PNG\r\n\x1a\n" + bytes(16),
        "header.idx": b"\x00\x00\x08\x03" + (5).to_bytes(4, "big"),  # three sizes announced, one given
        "short.idx": b"\x00\x00\x08\x01" + (5).to_bytes(4, "big") + bytes(4),
        "long.idx": b"\x00\x00\x08\x01" + (5).to_bytes(4, "big") + bytes(6),
        "wide.idx": b"\x00\x00\x0c\x01" + (2).to_bytes(4, "big") + bytes(7),  # int32 values: 7 bytes
        "gzip.idx": b"\x1f\x8b\x08\x00" + bytes(12),  # a gzip header, then garbage
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(DataFileError, match=re.escape(str(tmp_path / name))):
            read_idx(tmp_path / name)
    with pytest.raises(DataPathError, match=r"nowhere\.idx"):
        read_idx(tmp_path / "nowhere.idx")


def test_idx_labels_must_number_the_classes(mnist_dir):
    labels = mnist_dir / "train-labels-idx1-ubyte.gz"
    write_idx(labels, np.array([*range(10)] * 5 + [200] + [*range(9)]), compress=True)  # record 50 corrupt
    with pytest.raises(DataFileError, match=r"train-labels-idx1-ubyte.gz, record 50: label 200, but no label is 10"):
        IDXSource(str(mnist_dir)).load()
    with pytest.raises(DataFileError, match=r"record 50: label 200 is outside the classes 0..9 \(IDXSource.num_c"):
        IDXSource(str(mnist_dir), num_classes=10).load()
    write_idx(labels, np.arange(60) % 26 + 1, compress=True)  # EMNIST letters: 1..26, class 0 unused
    loaded = IDXSource(str(mnist_dir), test_prefix="none").load()
    assert len(loaded.classes) == 27 and loaded.splits["train"][1].min() == 1
    write_idx(mnist_dir / "t10k-labels-idx1-ubyte", np.full(20, 30), compress=False)
    with pytest.raises(DataFileError, match=r"t10k-labels-idx1-ubyte, record 0: label 30 is outside the classes 0..26"):
        IDXSource(str(mnist_dir)).load()


def test_missing_data_paths_name_the_setting_by_its_config_key(tmp_path):
    from datamodules.streams import TaskStreamDataModule

    missing = str(tmp_path / "nowhere")
    with pytest.raises(DataPathError, match=r"^IDXSource.root does not exist: .*nowhere"):
        IDXSource(missing).load()
    dm = ImageDataModule(IDXSource(missing))
    with pytest.raises(DataPathError, match=r"^data.init_args.source.init_args.root does not exist: .*nowhere"):
        dm.setup()
    stream = TaskStreamDataModule(base=ImageDataModule(ImageFolderSource(missing)))
    with pytest.raises(DataPathError, match=r"^data.init_args.base.init_args.source.init_args.root does not exist"):
        stream.num_classes  # noqa: B018
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(DataPathError, match=r"IDXSource.root is a file, not a folder: .*file") as raised:
        IDXSource(str(tmp_path / "file")).load()
    assert "train-images-idx3-ubyte" in raised.value.hint
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataPathError, match=r"IDXSource.root = .*empty: no 'train-images-idx3-ubyte' \(or .gz\)"):
        IDXSource(str(tmp_path / "empty")).load()


def test_image_folder_layout_errors_blame_the_folder(tmp_path):
    _write_png(tmp_path / "one" / "cat" / "a.png", np.full((6, 6), 10))
    with pytest.raises(DataFileError, match=r"image folder .*one has 1 class sub-folder \('cat'\); .* at least 2"):
        ImageFolderSource(str(tmp_path / "one")).load()
    _write_png(tmp_path / "loose" / "a.png", np.full((6, 6), 10))
    with pytest.raises(DataFileError, match=r"loose has images but no class sub-folders; put each class's images"):
        ImageFolderSource(str(tmp_path / "loose")).load()
    for split, classes in (("train", "ab"), ("test", "abc")):
        for c in classes:
            _write_png(tmp_path / "split" / split / c / "0.png", np.full((6, 6), 10))
    with pytest.raises(DataFileError, match=r"split/test has class folders \['c'\] that the training folder lacks"):
        ImageFolderSource(str(tmp_path / "split")).load()
    _write_png(tmp_path / "sizes" / "a" / "0.png", np.full((6, 6), 10))
    _write_png(tmp_path / "sizes" / "b" / "0.png", np.full((7, 7), 10))
    source = ImageFolderSource(str(tmp_path / "sizes"))
    source.name_settings("data.init_args.source")
    with pytest.raises(DataFileError, match=r"different sizes .* set data.init_args.source.init_args.image_size"):
        source.load()


def test_corrupt_images_are_data_file_errors_naming_the_file(tmp_path):
    good = tmp_path / "good.png"
    _write_png(good, np.random.default_rng(0).integers(0, 256, (32, 32)))
    for name, data in (("text.png", b"not a png"), ("cut.png", good.read_bytes()[:500])):
        (tmp_path / "imgs" / "a").mkdir(parents=True, exist_ok=True)
        (tmp_path / "imgs" / "a" / name).write_bytes(data)
        with pytest.raises(DataFileError, match=rf"cannot read image file .*{name}"):
            read_image(tmp_path / "imgs" / "a" / name)


def test_labels_outside_the_classes_name_the_record_or_split(tmp_path):
    import datasets

    ds = datasets.Dataset.from_dict({"image": [np.zeros((4, 4), np.uint8)] * 3, "label": [0, 1, 7]})
    ds = ds.cast_column("label", datasets.ClassLabel(names=["x", "y", "z"]))  # 7 is no class
    ds.save_to_disk(str(tmp_path / "hf"))
    with pytest.raises(DataFileError, match=r"split 'train' column 'label', record 2: label 7 is not a class"):
        HFDatasetSource(str(tmp_path / "hf")).load()

    class Negative(ImageSource):
        def load(self) -> ImageSplits:
            return ImageSplits({"train": (torch.zeros(20, 1, 4, 4, dtype=torch.uint8), torch.arange(20) % 3 - 1)})

        def describe(self) -> str:
            return "negative source"

    with pytest.raises(DataFileError, match=r"negative source: split 'train' has label -1, outside the 2 classes"):
        ImageDataModule(Negative(), val_fraction=0, test_fraction=0).setup()
