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
