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


# ------------------------------------------------------------------------------------------- Hugging Face datasets
def _hf_images(n: int, size: int = 20) -> list:
    from PIL import Image

    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)) for _ in range(n)]


def _hf_dataset(labelled: bool = True, n: int = 12):
    import datasets

    columns = {"img": _hf_images(n)}
    features = {"img": datasets.Image()}
    if labelled:
        columns["label"] = [i % 3 for i in range(n)]
        features["label"] = datasets.ClassLabel(names=["cat", "dog", "fox"])
    return datasets.Dataset.from_dict(columns, features=datasets.Features(features))


def test_a_saved_hugging_face_dataset_comes_in_minus_one_to_one_with_its_class_names(tmp_path):
    from datamodules.generation import HFImageSource

    _hf_dataset().save_to_disk(str(tmp_path / "saved"))
    source = HFImageSource(name_or_path=str(tmp_path / "saved"), image_key="img")
    dm = GenerationDataModule(source=source, image_size=16,
                              val_fraction=0.25, test_fraction=0.0)  # fmt: skip
    dm.setup("fit")
    x, y = dm._data["train"].tensors
    assert dm.input_shape == (3, 16, 16) and dm.classes == ["cat", "dog", "fox"] and len(x) == 9
    assert -1.0 <= x.min() < 0 < x.max() <= 1.0 and set(y.tolist()) <= {0, 1, 2}


def test_an_unlabelled_parquet_file_and_an_imagefolder_tree_load_as_hugging_face_datasets(tmp_path):
    from datamodules.generation import HFImageSource

    _hf_dataset(labelled=False).to_parquet(str(tmp_path / "faces.parquet"))
    faces = HFImageSource(name_or_path=str(tmp_path / "faces.parquet"), image_key="img", unlabelled=True).load()
    assert faces.classes == ["0"] and faces.splits["train"][0].shape == (12, 3, 20, 20)
    assert faces.splits["train"][1].tolist() == [0] * 12
    for name in ("a", "b"):  # datasets' imagefolder builder: one sub-folder per class
        _write_images(tmp_path / "tree" / "train" / name, 4, (12, 12), suffix=".png", seed=len(name))
    tree = HFImageSource(name_or_path=str(tmp_path / "tree")).load()
    assert tree.classes == ["a", "b"] and tree.splits["train"][0].shape == (8, 3, 12, 12)


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        (["--data.init_args.source.init_args.image_key", "picture"], "data.init_args.source.init_args.image_key"),
        (["--data.init_args.source.init_args.unlabelled", "false"], "data.init_args.source.init_args.label_key"),
        (["--data.init_args.source.init_args.name_or_path", "{tmp}/faces.csv"],
         "data.init_args.source.init_args.name_or_path"),
        (["--data.init_args.source.init_args.name_or_path", "{tmp}/none.parquet"],
         "data.init_args.source.init_args.name_or_path"),
    ],
)  # fmt: skip
def test_a_bad_hugging_face_setting_ends_in_one_line_naming_it(tmp_path, capsys, extra, named):
    from cli import main
    from tests.helpers import CONFIGS, SMOKE

    _hf_dataset(labelled=False).to_parquet(str(tmp_path / "faces.parquet"))
    (tmp_path / "faces.csv").write_text("img\n")
    source = ["--data.init_args.source", "datamodules.generation.HFImageSource",
              "--data.init_args.source.init_args.name_or_path", str(tmp_path / "faces.parquet"),
              "--data.init_args.source.init_args.image_key", "img", "--data.init_args.source.init_args.unlabelled",
              "true", "--model.init_args.metric_classifier", "null"]  # fmt: skip
    extra = [a.replace("{tmp}", str(tmp_path)) for a in extra]
    code = main(["fit", "--config", str(CONFIGS / "dcgan.yaml"), "--config", SMOKE, *source, *extra,
                 "--trainer.default_root_dir", str(tmp_path / "run")])  # fmt: skip
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1 and named in errors[0] and "Traceback" not in err, err[-2000:]


def test_a_gan_trains_on_an_unlabelled_hugging_face_dataset(tmp_path):
    from tests.helpers import CONFIGS, SMOKE, run_cli

    _hf_dataset(labelled=False, n=40).save_to_disk(str(tmp_path / "faces"))
    cli = run_cli("fit", "--config", str(CONFIGS / "dcgan.yaml"), "--config", SMOKE,
                  "--data.init_args.source", "datamodules.generation.HFImageSource",
                  "--data.init_args.source.init_args.name_or_path", str(tmp_path / "faces"),
                  "--data.init_args.source.init_args.image_key", "img",
                  "--data.init_args.source.init_args.unlabelled", "true", "--data.init_args.batch_size", "8",
                  "--model.init_args.metric_classifier", "null",
                  "--trainer.default_root_dir", str(tmp_path / "run"))  # fmt: skip
    assert cli.model.hparams.input_shape == (3, 16, 16) and cli.model.hparams.num_classes == 1
    assert torch.isfinite(next(cli.model.generator.parameters())).all()
