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
OUTPUT_CASES: list[Case] = []

# ------------------------------------------------------------------ W&B
WANDB_CASES: list[Case] = []

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
