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

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

import cli
from tests.helpers import CLASSIFICATION, CONFIGS, SMOKE

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
        ("lecture_modules.classification.Clasification", "did you mean", "lecture_modules.classification.Classification"),
    ),
    Case(
        "misspelt-datamodule-class-path",
        lambda d: smoke(CLASSIFICATION, "--data", "datamodules.image.ImageDataModul"),
        ("datamodules.image.ImageDataModul", "did you mean"),
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
DATA_CASES: list[Case] = []

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
WANDB_CASES: list[Case] = []

# ------------------------------------------------------------------ lecture settings
SETTING_CASES: list[Case] = []

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
