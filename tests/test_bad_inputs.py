"""A user's mistake ends in one line naming the file or setting, exit code 2, no traceback, nothing written outside
the run folder (issue 20).

Every case runs in this process through ``cli.main`` (which wraps ``cli.run``), so the table does not pay one
Lightning import per case. A case is a function that writes its bad input under ``in/`` of the test's temporary
working directory and returns the command line; the table states the words the error line must contain. The run
folder is ``runs/`` (``configs/base.yaml``: W&B's save_dir) or ``run/`` (``--trainer.default_root_dir`` where a case
sets it): a failed run may leave files there, nowhere else.

Sections: command line and config files; data sources; checkpoints and output folders; W&B; lecture settings.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

import cli
from tests.helpers import CLASSIFICATION, CONFIGS, SMOKE
from tests.wandb_server import FAKE_KEY, answering_server

RUN_FOLDERS = ("runs", "run")  # W&B's save_dir (configs/base.yaml) and the cases' --trainer.default_root_dir


@dataclass(frozen=True)
class Case:
    """One bad input: ``make(inputs)`` writes files under ``inputs`` and returns the command line; the error line
    must contain every string of ``names`` (case-insensitive)."""

    id: str
    make: Callable[[Path], list[str]]
    names: tuple[str, ...]


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def smoke(config: str | Path, *extra: str) -> list[str]:
    """``fit`` of ``config`` for a few batches, writing only under ``run/``."""
    return ["fit", "--config", str(config), "--config", SMOKE, "--trainer.default_root_dir", "run", *extra]


# ------------------------------------------------------------------ command line and config files
CLI_CASES = [
    Case(
        "unknown-lecture-setting",
        lambda d: smoke(CLASSIFICATION, "--model.init_args.nosuch", "1"),
        ("model.init_args.nosuch", "Classification"),
    ),
    Case(
        "unknown-trainer-setting",
        lambda d: smoke(CLASSIFICATION, "--trainer.nosuch", "1"),
        ("trainer.nosuch",),
    ),
    Case(
        "wrong-value-type",
        lambda d: smoke(CLASSIFICATION, "--data.init_args.batch_size", "abc"),
        ("data.init_args.batch_size", "abc", "int"),
    ),
    Case(
        "misspelt-lecture-class-path",
        lambda d: smoke(CLASSIFICATION, "--model", "lecture_modules.classification.Clasification"),
        (
            "lecture_modules.classification.Clasification",
            "did you mean",
            "lecture_modules.classification.Classification",
        ),
    ),
    Case(
        "misspelt-datamodule-class-path",
        lambda d: smoke(CLASSIFICATION, "--data", "datamodules.image.ImageDataModul"),
        ("datamodules.image.ImageDataModul", "did you mean"),
    ),
    Case(
        "unknown-key-in-a-config-file",
        lambda d: smoke(CLASSIFICATION, "--config", str(write(d / "mine.yaml", "trainer:\n  max_epohcs: 3\n"))),
        ("trainer.max_epohcs", "did you mean trainer.max_epochs", "mine.yaml"),
    ),
    Case(
        "yaml-syntax-error",
        lambda d: ["fit", "--config", str(write(d / "bad.yaml", "model:\n  class_path: x\n  init_args: [a\n"))],
        ("bad.yaml", "line 3"),
    ),
    Case(
        "missing-config-file",
        lambda d: ["fit", "--config", str(d / "nope.yaml")],
        ("nope.yaml", "not found"),
    ),
    Case(
        "unknown-subcommand",
        lambda d: ["fitt", "--config", CLASSIFICATION],
        ("fitt", "fit"),
    ),
    Case(
        "missing-required-data-path",
        lambda d: smoke(CONFIGS / "dann_mnistm.yaml"),
        ("data.init_args.source.init_args.root", "required"),
    ),
]

# ------------------------------------------------------------------ data sources
# Small fixtures written by each case (never ../shared/data). Sources are chosen through the configs that use them:
# dann_mnistm.yaml (IDX -> MNIST-M), classification.yaml (an image folder), maml.yaml + data/omniglot.yaml,
# bert_classification.yaml (GLUE TSV) and bert_qa.yaml (SQuAD JSON).
DANN_MNISTM = CONFIGS / "dann_mnistm.yaml"
OMNIGLOT = ("--config", str(CONFIGS / "data" / "omniglot.yaml"))  # after a meta-learning config
SOURCE_ROOT, TARGET_ROOT = "--data.init_args.source.init_args.root", "--data.init_args.target.init_args.root"


def idx_bytes(values: list[int] | None = None, shape: tuple[int, ...] | None = None) -> bytes:
    """An IDX file as MNIST's (magic, ndim, big-endian sizes, uint8 data): ``values`` as labels, or random images."""
    import numpy as np

    array = np.asarray(values) if values is not None else np.random.default_rng(0).integers(0, 256, shape)
    head = b"\0\0\x08" + bytes([array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    return head + array.astype(np.uint8).tobytes()


def mnist_folder(d: Path, images: bytes | None = None, labels: bytes | None = None) -> Path:
    """An MNIST-layout folder of 40 images; ``images`` / ``labels`` replace the train files' content."""
    root = d / "mnist"
    write(root / "train-images-idx3-ubyte", idx_bytes(shape=(40, 28, 28)) if images is None else images)
    write(root / "train-labels-idx1-ubyte", idx_bytes([i % 10 for i in range(40)]) if labels is None else labels)
    return root


def png_bytes(value: int, size: int = 8) -> bytes:
    import io

    import numpy as np
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.full((size, size), value, dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def mnistm_folder(d: Path, labels: list[int] | None = None) -> Path:
    """An extracted MNIST-M folder: 20 training images and their labels file (``labels``: 0..9 twice)."""
    root = d / "mnist_m"
    labels = [i % 10 for i in range(20)] if labels is None else labels
    for i in range(20):
        write(root / "mnist_m_train" / f"{i:08d}.png", png_bytes(i, size=32))
    write(root / "mnist_m_train_labels.txt", "".join(f"{i:08d}.png {y}\n" for i, y in enumerate(labels)))
    return root


def dann_mnistm(mnist: Path, mnistm: Path) -> list[str]:
    return smoke(DANN_MNISTM, SOURCE_ROOT, str(mnist), TARGET_ROOT, str(mnistm))


def image_folder(root: Path, classes: tuple[str, ...] = ("cat", "dog"), per_class: int = 6) -> Path:
    for c, name in enumerate(classes):
        for i in range(per_class):
            write(root / name / f"{i}.png", png_bytes(20 * c + i))
    return root


def image_folder_run(root: Path) -> list[str]:
    """The classification config reading ``root`` as an image folder."""
    return smoke(CLASSIFICATION, "--data.init_args.source", "datamodules.sources.ImageFolderSource", SOURCE_ROOT,
                 str(root))  # fmt: skip


def corrupt_image(d: Path) -> list[str]:
    root = image_folder(d / "imgs")
    write(root / "dog" / "broken.png", png_bytes(0)[:40])  # a PNG cut short
    return image_folder_run(root)


def omniglot_truncated_zip(d: Path) -> list[str]:
    import zipfile

    archive = d / "omniglot" / "images_background.zip"
    archive.parent.mkdir()
    with zipfile.ZipFile(archive, "w") as zf:
        for i in range(4):
            zf.writestr(f"images_background/Latin/character0{i}/0_{i}.png", png_bytes(i, size=105))
    archive.write_bytes(archive.read_bytes()[:200])  # a download cut short
    return smoke(CONFIGS / "maml.yaml", *OMNIGLOT, SOURCE_ROOT, str(archive.parent))


def glue_table(d: Path, extra_rows: list[str], name: str = "train.tsv") -> Path:
    """An SST-2-style TSV: a header, 12 good rows (lines 2-13), then ``extra_rows`` (from line 14)."""
    good = [f"{'a fine' if i % 2 else 'a dull'} film {i}\t{i % 2}" for i in range(12)]
    return write(d / name, "sentence\tlabel\n" + "\n".join(good + extra_rows) + "\n")


def glue_run(train: Path, *extra: str) -> list[str]:
    return smoke(CONFIGS / "bert_classification.yaml", "--data.init_args.train_file", str(train), *extra)


def squad_run(d: Path, text: str) -> list[str]:
    return smoke(CONFIGS / "bert_qa.yaml", "--data.init_args.train_file", str(write(d / "train.json", text)))


DATA_CASES: list[Case] = [
    Case("omniglot-truncated-zip", omniglot_truncated_zip, ("images_background.zip", "zip")),
    Case(
        "omniglot-missing-root",
        lambda d: smoke(CONFIGS / "maml.yaml", *OMNIGLOT, SOURCE_ROOT, str(d / "omniglot-nowhere")),
        ("data.init_args.source.init_args.root", "omniglot-nowhere"),
    ),
    Case(
        "glue-row-without-label",
        lambda d: glue_run(glue_table(d, ["a film without its label"])),
        ("train.tsv", "line 14", "label"),
    ),
    Case(
        "glue-ten-rows-without-label",
        lambda d: glue_run(glue_table(d, [f"a film without its label {i}" for i in range(10)])),
        ("train.tsv", "line 14", "label"),
    ),
    Case(
        "glue-label-outside-the-classes",
        lambda d: glue_run(glue_table(d, []), "--data.init_args.val_file", str(glue_table(d, ["odd\t2"], "dev.tsv"))),
        ("dev.tsv", "line 14", "'2'"),
    ),
    Case("glue-missing-train-file", lambda d: glue_run(d / "nope.tsv"), ("data.init_args.train_file", "nope.tsv")),
    Case("squad-not-json", lambda d: squad_run(d, '{"data": [{"paragraphs": [}'), ("train.json", "line 1", "JSON")),
    Case(
        "squad-record-without-context",
        lambda d: squad_run(d, '{"data": [{"paragraphs": [{"qas": [{"id": "q1", "question": "who?"}]}]}]}'),
        ("train.json", "data[0].paragraphs[0]", "context"),
    ),
    Case(
        "idx-missing-folder",
        lambda d: dann_mnistm(d / "mnist-nowhere", mnistm_folder(d)),
        ("data.init_args.source.init_args.root", "mnist-nowhere"),
    ),
    Case(
        "idx-bad-magic-number",
        lambda d: dann_mnistm(mnist_folder(d, images=png_bytes(0)), mnistm_folder(d)),
        ("train-images-idx3-ubyte", "magic number"),
    ),
    Case(
        "idx-truncated-file",
        lambda d: dann_mnistm(mnist_folder(d, images=idx_bytes(shape=(40, 28, 28))[:-100]), mnistm_folder(d)),
        ("train-images-idx3-ubyte", "31360"),
    ),
    Case(
        "idx-label-beyond-the-classes",
        lambda d: dann_mnistm(
            mnist_folder(d, labels=idx_bytes([*range(10)] * 3 + [200] + [*range(9)])), mnistm_folder(d)
        ),
        ("train-labels-idx1-ubyte", "record 30", "200"),
    ),
    Case(
        "mnistm-missing-root",
        lambda d: dann_mnistm(mnist_folder(d), d / "mnistm-nowhere"),
        ("data.init_args.target.init_args.root", "mnistm-nowhere"),
    ),
    Case(
        "mnistm-label-outside-the-digits",
        lambda d: dann_mnistm(mnist_folder(d), mnistm_folder(d, labels=[0, 1, 2, 3, -5, *range(5, 10), *range(10)])),
        ("mnist_m_train_labels.txt", "line 5", "-5"),
    ),
    Case(
        "image-folder-missing",
        lambda d: image_folder_run(d / "images-nowhere"),
        ("data.init_args.source.init_args.root", "images-nowhere"),
    ),
    Case("image-folder-corrupt-image", corrupt_image, ("broken.png",)),
    Case(
        "image-folder-too-few-images-to-split",
        lambda d: image_folder_run(image_folder(d / "imgs", per_class=1)),
        ("2 samples", "val_fraction"),
    ),
    Case(
        "image-folder-with-one-class",
        lambda d: image_folder_run(image_folder(d / "one-class-imgs", classes=("cat",))),
        ("one-class-imgs", "1 class sub-folder", "at least 2"),
    ),
]

# ------------------------------------------------------------------ checkpoints and output folders
TEACHER_CKPT = CONFIGS.parent / "lecture_modules" / "distillation" / "assets" / "digits_cnn_teacher.ckpt"
MODEL_CHECKPOINT = "--trainer.callbacks+=lightning.pytorch.callbacks.ModelCheckpoint"


class _OpensAFile:
    """Pickled as a call to ``open(marker, "w")``: loading it with full pickle would create ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def pickled_checkpoint(inputs: Path) -> Path:
    """A checkpoint holding a pickled object; the file it would create lies outside ``in/`` (checked as written)."""
    import torch

    path = inputs / "evil.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"x": _OpensAFile(inputs.parent / "pwned")}}, path)
    return path


def other_architecture(inputs: Path) -> Path:
    """A Classification checkpoint of an MLP (classification.yaml asks for a CNN)."""
    net = {"kind": "mlp", "widths": [7], "batch_norm": False, "dropout": 0.0}
    hparams = {"_class_path": "lecture_modules.classification.Classification", "net": net, "label_smoothing": 0.0}
    import torch

    path = inputs / "mlp.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": hparams}, path)
    return path


def five_classes(inputs: Path) -> Path:
    """A Classification checkpoint of classification.yaml's network for 5 classes (its data has 10)."""
    import torch

    net = {"kind": "cnn", "widths": [32, 64, 128], "batch_norm": True, "dropout": 0.1}
    hparams = {"_class_path": "lecture_modules.classification.Classification", "num_classes": 5, "net": net}
    path = inputs / "five.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": hparams}, path)
    return path


OUTPUT_CASES = [
    Case(
        "missing-checkpoint-file",
        lambda d: smoke(CLASSIFICATION, "--ckpt_path", str(d / "nope.ckpt")),
        ("nope.ckpt", "not found"),
    ),
    Case(
        "refused-pickled-checkpoint",
        lambda d: smoke(CLASSIFICATION, "--ckpt_path", str(pickled_checkpoint(d))),
        ("evil.ckpt", "refused", "pickled", "weights_only"),
    ),
    Case(
        "unreadable-checkpoint",
        lambda d: smoke(CLASSIFICATION, "--ckpt_path", str(write(d / "junk.ckpt", b"not a checkpoint"))),
        ("junk.ckpt", "cannot read"),
    ),
    Case(
        "checkpoint-of-another-lecture",
        lambda d: [
            "test",
            "--config",
            str(CONFIGS / "distillation.yaml"),
            "--config",
            SMOKE,
            "--trainer.default_root_dir",
            "run",
            "--ckpt_path",
            str(TEACHER_CKPT),
        ],
        ("digits_cnn_teacher.ckpt", "Classification", "Distillation"),
    ),
    Case(
        "checkpoint-of-another-architecture",
        lambda d: smoke(CLASSIFICATION, "--ckpt_path", str(other_architecture(d))),
        ("mlp.ckpt", "model.init_args.net.kind", "mlp", "cnn"),
    ),
    Case(
        "checkpoint-for-other-data",
        lambda d: [
            "test",
            "--config",
            CLASSIFICATION,
            "--config",
            SMOKE,
            "--trainer.default_root_dir",
            "run",
            "--ckpt_path",
            str(five_classes(d)),
        ],
        ("five.ckpt", "model.init_args.num_classes", "5", "10"),
    ),
    Case(
        "run-folder-under-a-file",
        lambda d: smoke(CLASSIFICATION, "--trainer.default_root_dir", str(write(d / "taken", "") / "run")),
        ("trainer.default_root_dir", "taken", "not a folder"),
    ),
    Case(
        "checkpoint-folder-under-a-file",
        lambda d: smoke(
            CLASSIFICATION, MODEL_CHECKPOINT, "--trainer.callbacks.dirpath", str(write(d / "taken", "") / "ck")
        ),
        ("ModelCheckpoint", "dirpath", "taken", "not a folder"),
    ),
    Case(
        "wandb-folder-under-a-file",
        lambda d: [
            "fit",
            "--config",
            CLASSIFICATION,
            "--trainer.max_steps",
            "1",
            "--trainer.limit_val_batches",
            "0",
            "--trainer.logger.init_args.save_dir",
            str(write(d / "taken", "") / "wandb"),
        ],
        ("trainer.logger.init_args.save_dir", "taken", "not a folder"),
    ),
]


# ------------------------------------------------------------------ W&B
def wandb_server(answer: int | str, inputs: Path, netrc: bool = False, **env: str) -> list[str]:
    """Log in to a local W&B server answering ``answer`` (``tests/wandb_server.py``) with a 40-character key from
    ``WANDB_API_KEY`` or, with ``netrc``, from a netrc file under ``inputs``; return the smoke run's command line.
    Set straight in ``os.environ``: ``NETRC`` is restored after the test (conftest's monkeypatch), and conftest
    clears ``WANDB_API_KEY``/``WANDB_BASE_URL``/``WANDB_MODE`` before every test."""
    url = answering_server(answer)
    if netrc:
        path = write(inputs / "netrc", f"machine {url.split('/')[2]}\n  login user\n  password {FAKE_KEY}\n")
        os.environ["NETRC"] = str(path)
    else:
        os.environ["WANDB_API_KEY"] = FAKE_KEY
    os.environ.update({"WANDB_BASE_URL": url, **env})
    return smoke(CLASSIFICATION)


WANDB_CASES = [
    Case(
        "wandb-key-refused",
        lambda d: wandb_server(401, d),
        ("refused the API key from WANDB_API_KEY", "HTTP 401", "WANDB_MODE=offline", "--trainer.logger false"),
    ),
    Case(
        "wandb-netrc-key-refused-by-self-hosted-server",
        lambda d: wandb_server(403, d, netrc=True),
        ("refused the API key from the netrc entry", "netrc", "HTTP 403", "WANDB_MODE=offline"),
    ),
    Case(
        "wandb-key-of-nobody-with-mode-online",
        lambda d: wandb_server("nobody", d, WANDB_MODE="online"),
        ("refused the API key", "WANDB_MODE=offline", "--trainer.logger false"),
    ),
]

# ------------------------------------------------------------------ lecture settings
SETTING_CASES: list[Case] = [
    Case(
        "classification-label-smoothing-out-of-range",
        lambda d: smoke(CLASSIFICATION, "--model.init_args.label_smoothing", "1.5"),
        ("model.init_args.label_smoothing", "1.5", "[0, 1)"),
    ),
    Case(
        "linked-num-classes-given-with-another-value",
        lambda d: smoke(CLASSIFICATION, "--model.init_args.num_classes", "7"),
        ("model.init_args.num_classes", "7", "10", "data.num_classes"),
    ),
    Case(
        "schedule-min-lr-ratio-out-of-range",
        lambda d: smoke(CLASSIFICATION, "--lr_scheduler.init_args.min_lr_ratio", "2"),
        ("WarmupCosineLR.min_lr_ratio", "[0, 1]", "lr_scheduler"),
    ),
    Case(
        "pruning-channel-criterion-with-unstructured-method",
        lambda d: smoke(CONFIGS / "pruning.yaml", "--model.init_args.criterion", "taylor"),
        ("model.init_args.criterion", "'taylor'", "model.init_args.method"),
    ),
    Case(
        "pruning-target-sparsity-out-of-range",
        lambda d: smoke(CONFIGS / "pruning.yaml", "--trainer.callbacks.target_sparsity", "1.5"),
        ("IterativePruning", "init_args.target_sparsity", "[0, 1)", "1.5"),
    ),
    Case(
        "distillation-temperature-not-positive",
        lambda d: smoke(CONFIGS / "distillation.yaml", "--model.init_args.temperature", "0"),
        ("model.init_args.temperature", "> 0", "got 0"),
    ),
    Case(
        "distillation-student-rank-below-one",
        lambda d: smoke(CONFIGS / "distillation.yaml", "--model.init_args.student.rank", "0"),
        ("model.init_args.student.rank", ">= 1"),
    ),
    Case(
        "maml-net-deeper-than-the-images",
        lambda d: smoke(CONFIGS / "maml.yaml", "--model.init_args.net.blocks", "9"),
        ("model.init_args.net.blocks", "9", "data.init_args.image_size"),
    ),
    Case(
        "dann-negative-reversal-coefficient",
        lambda d: smoke(CONFIGS / "dann.yaml", "--model.init_args.grl_lambda", "-1"),
        ("model.init_args.grl_lambda", "-1", ">= 0"),
    ),
    Case(
        "mcd-no-generator-steps",
        lambda d: smoke(CONFIGS / "mcd.yaml", "--model.init_args.num_k", "0"),
        ("model.init_args.num_k", ">= 1"),
    ),
    Case(
        "rwalk-eps-not-positive",
        lambda d: smoke(CONFIGS / "rwalk.yaml", "--model.init_args.eps", "0"),
        ("model.init_args.eps", "> 0"),
    ),
    Case(
        "ewc-gamma-out-of-range",
        lambda d: smoke(CONFIGS / "ewc.yaml", "--model.init_args.gamma", "2"),
        ("model.init_args.gamma", "[0, 1]", "2.0"),
    ),
    Case(
        "bert-freeze-more-layers-than-the-model-has",
        lambda d: smoke(CONFIGS / "bert_classification.yaml", "--model.init_args.freeze_layers", "10"),
        ("model.init_args.freeze_layers", "10", "<= 2"),
    ),
    Case(
        "bert-missing-local-model-folder",
        lambda d: smoke(
            CONFIGS / "bert_classification.yaml", "--model.init_args.model_name_or_path", str(d / "no-model")
        ),
        ("model.init_args.model_name_or_path", "no-model", "does not exist", "tiny-bert", "minilm"),
    ),
    Case(
        "bert-model-folder-without-config",
        lambda d: smoke(
            CONFIGS / "bert_qa.yaml",
            "--model.init_args.model_name_or_path",
            str(write(d / "model" / "README.md", "no model here").parent),
        ),
        ("model.init_args.model_name_or_path", "config.json", "tiny-bert"),
    ),
    Case(
        "bert-unknown-hub-name-offline",
        lambda d: smoke(
            CONFIGS / "bert_classification.yaml", "--model.init_args.model_name_or_path", "no-such-org/no-model"
        ),
        ("model.init_args.model_name_or_path", "no-such-org/no-model", "cache", "tiny-bert"),
    ),
]

CASES = CLI_CASES + DATA_CASES + OUTPUT_CASES + WANDB_CASES + SETTING_CASES


def files_under(root: Path) -> set[Path]:
    return {p.relative_to(root) for p in root.rglob("*") if p.is_file()}


def error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("error:")]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_a_bad_input_ends_in_one_line_naming_it_with_exit_code_2(case, tmp_path, capfd):
    inputs = tmp_path / "in"
    inputs.mkdir()
    argv = case.make(inputs)
    before = files_under(tmp_path)
    code = cli.main(argv)
    out, err = capfd.readouterr()
    assert code == 2, f"exit code {code}\nstdout:\n{out}\nstderr:\n{err}"
    assert "Traceback" not in out + err, err
    assert not re.search(r"^usage:", err, re.M), f"a usage dump:\n{err}"
    lines = error_lines(err)
    assert len(lines) == 1, f"expected one error line, got {len(lines)}:\n{err}"
    for name in case.names:
        assert name.lower() in lines[0].lower(), f"{name!r} not in {lines[0]!r}"
    written = {p for p in files_under(tmp_path) - before if p.parts[0] != "in"}
    outside = sorted(str(p) for p in written if p.parts[0] not in RUN_FOLDERS)
    assert not outside, f"written outside the run folder: {outside}"


def test_the_table_covers_at_least_40_bad_inputs_with_distinct_ids():
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids))
    assert len(ids) >= 40, f"{len(ids)} cases"


def test_debug_shows_the_traceback_of_the_cause(tmp_path, capfd):
    code = cli.main([*smoke(CLASSIFICATION, "--data.init_args.batch_size", "abc"), "--debug"])
    _, err = capfd.readouterr()
    assert code == 2
    assert "Traceback" in err and len(error_lines(err)) == 1
