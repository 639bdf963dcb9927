"""Two-domain data: MNIST-M and HW11 layouts, the MNIST-M-style re-rendering, format conformance between domains,
honest training batches (no target labels), cycling samplers, and errors that name the file or setting."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from datamodules.domain_sources import HW11Source, MNISTMSource, MNISTMStyleSource
from datamodules.domains import TwoDomainDataModule
from datamodules.errors import DataFileError, DataPathError
from datamodules.samplers import ResumableSampler
from datamodules.sources import DigitsSource, HFDatasetSource, IDXSource, ImageFolderSource, ImageSource, ImageSplits
from tests.datamodules.test_sources import write_idx

pytestmark = pytest.mark.usefixtures("one_thread")


def _png(path, array) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(path)


def _mnistm(root, n_train: int = 30, n_test: int = 10):
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("test", n_test)):
        lines = []
        for i in range(n):
            name = f"{i:08d}.png"
            _png(root / f"mnist_m_{split}" / name, rng.integers(0, 256, (32, 32, 3)))
            lines.append(f"{name} {i % 10}")
        (root / f"mnist_m_{split}_labels.txt").write_text("\n".join(lines) + "\n")
    return root


def _mnist(root, n: int = 40):
    root.mkdir(parents=True)
    rng = np.random.default_rng(1)
    write_idx(root / "train-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)), compress=True)
    write_idx(root / "train-labels-idx1-ubyte.gz", np.arange(n) % 10, compress=True)
    return root


def test_mnistm_layout_reads_both_splits(tmp_path):
    splits = MNISTMSource(str(_mnistm(tmp_path / "mnistm"))).load().splits
    assert splits["train"][0].shape == (30, 3, 32, 32) and splits["test"][0].shape == (10, 3, 32, 32)
    assert splits["train"][1][:12].tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]


def test_mnistm_errors_name_the_file(tmp_path):
    root = _mnistm(tmp_path / "mnistm")
    labels = root / "mnist_m_train_labels.txt"
    labels.write_text(labels.read_text() + "99999999.png 3\n")
    with pytest.raises(FileNotFoundError, match=r"mnist_m_train_labels.txt, line 31: image file .*99999999.png"):
        MNISTMSource(str(root)).load()
    labels.write_text("00000000.png\n")
    with pytest.raises(ValueError, match=r"mnist_m_train_labels.txt, line 1"):
        MNISTMSource(str(root)).load()
    (root / "mnist_m_train" / "00000000.png").write_bytes(b"not a png")
    labels.write_text("00000000.png 0\n")
    with pytest.raises(ValueError, match=r"cannot read image file .*00000000.png"):
        MNISTMSource(str(root)).load()
    with pytest.raises(FileNotFoundError, match=r"MNISTMSource.root .*nowhere"):
        MNISTMSource(str(tmp_path / "nowhere")).load()
    with pytest.raises(ValueError, match=r"MNISTMSource.root is required: the mnist_m.tar.gz archive"):
        MNISTMSource()


def _tar(folder, archive):
    import tarfile

    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname="mnist_m")  # the distributed layout: mnist_m/mnist_m_train/..., mnist_m/*_labels.txt
    return archive


def test_mnistm_reads_the_distributed_archive_and_its_extracted_folder_alike(tmp_path):
    folder = _mnistm(tmp_path / "extracted" / "mnist_m")
    archive = _tar(folder, tmp_path / "mnist_m.tar.gz")
    want = MNISTMSource(str(folder)).load().splits
    for root in (archive, tmp_path / "extracted", tmp_path):  # the archive, the folder above mnist_m/, its folder
        got = MNISTMSource(str(root)).load().splits
        assert set(got) == {"train", "test"}
        for split in got:
            assert torch.equal(got[split][0], want[split][0]) and torch.equal(got[split][1], want[split][1])


def test_mnistm_labels_outside_the_ten_digits_and_broken_archives_name_the_file(tmp_path):
    folder = _mnistm(tmp_path / "mnist_m")
    labels = folder / "mnist_m_train_labels.txt"
    labels.write_text(labels.read_text().replace("00000004.png 4", "00000004.png -5"))
    with pytest.raises(ValueError, match=r"mnist_m_train_labels.txt, line 5: label -5 is outside the classes 0..9"):
        MNISTMSource(str(folder)).load()
    archive = _tar(folder, tmp_path / "mnist_m.tar.gz")
    with pytest.raises(ValueError, match=r"mnist_m.tar.gz:mnist_m_train_labels.txt, line 5: label -5"):
        MNISTMSource(str(archive)).load()
    truncated = tmp_path / "truncated.tar.gz"
    truncated.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(ValueError, match=r"cannot read the archive .*truncated.tar.gz"):
        MNISTMSource(str(truncated)).load()


def test_mnist_to_mnistm_conforms_grey_28_to_rgb_32(tmp_path):
    dm = TwoDomainDataModule(
        IDXSource(str(_mnist(tmp_path / "mnist"))), MNISTMSource(str(_mnistm(tmp_path / "mnistm"))), batch_size=8
    )
    dm.setup("fit")
    assert dm.input_shape == (3, 32, 32) and dm.num_classes == 10
    assert dm.dataset("target", "test").tensors[0].shape == (10, 3, 32, 32)  # the source's own test split kept
    grey = TwoDomainDataModule(DigitsSource(), MNISTMSource(str(tmp_path / "mnistm")), channels=1, image_size=20)
    assert grey.input_shape == (1, 20, 20)


def test_hw11_layout_labelled_source_unlabelled_target(tmp_path):
    root = tmp_path / "real_or_drawing"
    for c in range(3):
        for i in range(6):
            _png(root / "train_data" / str(c) / f"{i}.png", np.full((32, 32, 3), 40 * c + i))
    for i in range(18):
        _png(root / "test_data" / "0" / f"{i}.png", np.full((28, 28), 5 * i))
    dm = TwoDomainDataModule(HW11Source(str(root), "source"), HW11Source(str(root), "target"), batch_size=4)
    dm.setup("fit")
    assert dm.num_classes == 3 and dm.input_shape == (3, 32, 32)
    assert not dm.target_labelled() and bool((dm.dataset("target", "train").tensors[1] == -1).all())
    batch = next(iter(dm.train_dataloader()))[0]
    assert len(batch["source"]) == 2 and len(batch["target"]) == 1  # images only from the target
    with pytest.raises(ValueError, match=r"train_on='target' needs target labels"):
        TwoDomainDataModule(HW11Source(str(root), "source"), HW11Source(str(root), "target"), train_on="target").setup()
    with pytest.raises(FileNotFoundError, match=r"test_data"):
        HW11Source(str(root / "train_data"), "target").load()


def test_mnistm_style_is_deterministic_rgb_and_shifted():
    a = MNISTMStyleSource(seed=3).load().splits["train"]
    b = MNISTMStyleSource(seed=3).load().splits["train"]
    c = MNISTMStyleSource(seed=4).load().splits["train"]
    assert a[0].shape == (1797, 3, 16, 16) and a[0].dtype == torch.uint8
    assert torch.equal(a[0], b[0]) and not torch.equal(a[0], c[0])
    assert torch.equal(a[1], DigitsSource().load().splits["train"][1])  # labels kept
    assert float(a[0].float().std(dim=1).mean()) > 10  # colour, not grey
    with pytest.raises(ValueError, match=r"MNISTMStyleSource\.contrast"):
        MNISTMStyleSource(contrast=0.0)


def test_class_count_mismatch_names_both_domains(tmp_path):
    for c in range(3):
        _png(tmp_path / "three" / str(c) / "a.png", np.full((8, 8), c))
    dm = TwoDomainDataModule(
        DigitsSource(), ImageFolderSource(str(tmp_path / "three")), val_fraction=0, test_fraction=0
    )
    with pytest.raises(ValueError, match=r"class count mismatch.*DigitsSource has 10 classes.*three has 3"):
        dm.setup("fit")


def test_training_batches_pair_domains_and_hide_target_labels():
    dm = TwoDomainDataModule(batch_size=16, limit_train_samples=100)
    dm.setup("fit")
    loader = dm.train_dataloader()
    batches = [b for b, *_ in loader]
    assert len(batches) == 7  # ceil(100 / 16) for both streams
    (x_s, y_s), (x_t,) = batches[0]["source"], batches[0]["target"]
    assert x_s.shape == x_t.shape == (16, 3, 16, 16) and y_s.shape == (16,)
    oracle = TwoDomainDataModule(batch_size=16, limit_train_samples=100, train_on="target")
    oracle.setup("fit")
    assert len(next(iter(oracle.train_dataloader()))[0]["target"]) == 2
    assert [len(loader) for loader in dm.val_dataloader()] == [12, 12]  # 180 val samples per domain, batch 16


def test_cycling_sampler_keeps_the_first_permutation_and_shards():
    plain = list(ResumableSampler(10, seed=5))
    longer = list(ResumableSampler(10, seed=5, epoch_size=25))
    assert longer[:10] == plain and sorted(longer[10:20]) == list(range(10)) and len(longer) == 25
    shorter = list(ResumableSampler(10, seed=5, epoch_size=4))
    assert shorter == plain[:4]
    ranks = [list(ResumableSampler(10, 2, r, seed=5, epoch_size=25)) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == 13
    resumed = ResumableSampler(10, seed=5, epoch_size=25)
    resumed.resume_from(0, batches_done=3, batch_size=4)
    assert list(resumed) == longer[12:]
    with pytest.raises(ValueError, match="epoch_size"):
        ResumableSampler(10, epoch_size=0)


def test_hugging_face_dataset_as_target_and_image_folder_as_source(tmp_path):
    from tests.datamodules.test_sources import _hf_dataset

    _hf_dataset().save_to_disk(str(tmp_path / "hf"))  # 3 classes, 4x4 grey
    for c in "abc":
        for i in range(4):
            _png(tmp_path / "folder" / c / f"{i}.png", np.full((6, 6, 3), 30 * i))
    dm = TwoDomainDataModule(
        ImageFolderSource(str(tmp_path / "folder")), HFDatasetSource(str(tmp_path / "hf")), val_fraction=0.25,
        test_fraction=0.25,
    )  # fmt: skip
    dm.setup("fit")
    assert dm.num_classes == 3 and dm.input_shape == (3, 6, 6) and dm.target_labelled()
    assert {split: len(dm.dataset("target", split)) for split in ("train", "val", "test")} == {
        "train": 2, "val": 2, "test": 2,
    }  # fmt: skip


def test_domain_sources_name_their_settings_by_config_key(tmp_path):
    mnist = _mnist(tmp_path / "mnist")
    dm = TwoDomainDataModule(IDXSource(str(mnist)), MNISTMSource(str(tmp_path / "nowhere")))
    with pytest.raises(DataPathError, match=r"^data.init_args.target.init_args.root does not exist: .*nowhere"):
        dm.setup()
    style = TwoDomainDataModule(target=MNISTMStyleSource(base=IDXSource(str(tmp_path / "gone"))))
    with pytest.raises(DataPathError, match=r"^data.init_args.target.init_args.base.init_args.root does not exist"):
        style.setup()
    (tmp_path / "hw11").mkdir()
    with pytest.raises(DataPathError, match=r"HW11Source.root = .*hw11 has no folder test_data/0/ \(domain 'target'\)"):
        HW11Source(str(tmp_path / "hw11"), domain="target").load()


def test_mnistm_labels_file_that_is_not_text_names_the_file(tmp_path):
    root = _mnistm(tmp_path / "mnist_m")
    (root / "mnist_m_train_labels.txt").write_bytes(b"\xff\xfe\x00binary")
    with pytest.raises(DataFileError, match=r"mnist_m_train_labels.txt is not a text file of '<file name> <label>'"):
        MNISTMSource(str(root)).load()


def test_source_labels_beyond_the_classes_are_refused_but_unlabelled_targets_pass(tmp_path):
    class Labels(ImageSource):
        def __init__(self, labels: torch.Tensor, classes: list[str]) -> None:
            self.labels, self.classes = labels, classes

        def load(self) -> ImageSplits:
            return ImageSplits({"train": (torch.zeros(len(self.labels), 1, 8, 8, dtype=torch.uint8), self.labels)},
                               self.classes)  # fmt: skip

    ten = [str(i) for i in range(10)]
    dm = TwoDomainDataModule(Labels(torch.arange(40) % 10 - 1, ten), Labels(torch.full((40,), -1), []))
    with pytest.raises(DataFileError, match=r"source Labels: split '(train|val|test)' has label -1, outside the 10"):
        dm.setup()
    dm = TwoDomainDataModule(Labels(torch.arange(40) % 10, ten), Labels(torch.full((40,), -1), []))
    dm.setup()
    assert not dm.target_labelled()
