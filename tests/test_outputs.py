"""Every file a run writes goes under its run folder (``runs/`` unless ``trainer.default_root_dir`` says
otherwise), a second run never refuses to start because of the first, and the output folders are checked before
training starts (issue 20, items 9-11)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import cli
from datamodules.errors import OutputFolderError
from tests.helpers import CLASSIFICATION, FIT_CPU, REPO, SMOKE, SMOKE_FIT, run_cli

SHIPPED_TEACHER_CKPT = REPO / "lecture_modules" / "distillation" / "assets" / "digits_cnn_teacher.ckpt"

LOGGER_OFF = [*FIT_CPU, "--trainer.logger", "false", "--trainer.max_steps", "2", "--trainer.limit_val_batches", "1"]


def files_under(root: Path) -> list[Path]:
    return sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())


def test_a_smoke_run_twice_writes_no_checkpoint_and_nothing_outside_runs(tmp_path):
    for _ in range(2):
        run_cli(*SMOKE_FIT)
    written = files_under(tmp_path)
    assert all(p.parts[0] == "runs" for p in written), written
    assert not [p for p in written if p.suffix == ".ckpt"], written  # fast_dev_run saves no checkpoint
    figures = sorted(Path("runs").glob("classification-*/figures/val_confusion_matrix-*.png"))
    assert len({p.parts[1] for p in figures}) == 2, figures  # one run folder each


def test_a_run_without_logger_twice_writes_each_into_its_own_run_folder(tmp_path):
    for _ in range(2):
        run_cli(*LOGGER_OFF)
    written = files_under(tmp_path)
    assert all(p.parts[0] == "runs" for p in written), written
    folders = sorted({p.parts[1] for p in written})
    assert len(folders) == 2 and all(f.startswith("classification-") for f in folders), folders
    for folder in folders:
        run = Path("runs", folder)
        assert {run / "config.yaml", run / "checkpoints" / "last.ckpt"} <= set(written), written


def test_a_given_default_root_dir_is_the_run_folder(tmp_path):
    run_cli(*LOGGER_OFF, "--trainer.default_root_dir", "mine")
    written = files_under(tmp_path)
    assert written and all(p.parts[0] == "mine" for p in written), written


def test_a_read_only_run_folder_stops_before_training_naming_the_setting(tmp_path, monkeypatch):
    """Simulated with ``os.access``: the tests may run as root, who can write anywhere."""
    locked = (tmp_path / "locked").resolve()
    locked.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: Path(path) != locked and real_access(path, mode))
    with pytest.raises(OutputFolderError, match=r"output folder locked/run \(trainer.default_root_dir\).*not writable"):
        run_cli(*LOGGER_OFF, "--trainer.default_root_dir", "locked/run")
    assert files_under(tmp_path) == []


def test_the_checkpoint_folder_is_checked_only_when_fitting(tmp_path):
    (tmp_path / "taken").write_text("")
    args = ["--trainer.callbacks+=lightning.pytorch.callbacks.ModelCheckpoint", "--trainer.callbacks.dirpath"]
    with pytest.raises(OutputFolderError, match=r"taken/ck \(dirpath of ModelCheckpoint in trainer.callbacks\)"):
        run_cli(*SMOKE_FIT, *args, "taken/ck")
    tested = run_cli("test", "--config", CLASSIFICATION, "--config", SMOKE, *args, "taken/ck")
    assert any(str(cb.dirpath).endswith("taken/ck") for cb in tested.trainer.checkpoint_callbacks)


def test_lightnings_own_checkpoint_names_are_not_read_as_files():
    for name in ("best", "last", "hpc", "registry:me/model:latest", "s3://bucket/last.ckpt"):
        assert cli._resolved_by_lightning(name)
    assert not cli._resolved_by_lightning("runs/last.ckpt")


def test_model_from_ckpt_takes_the_checkpoints_lecture_and_settings(tmp_path):
    tested = run_cli(
        "test", "--config", CLASSIFICATION, "--config", SMOKE, "--model.init_args.net.widths", "[8]",
        "--ckpt_path", str(SHIPPED_TEACHER_CKPT), "--model_from_ckpt", "true",
    )  # fmt: skip
    assert tested.model.hparams["net"]["widths"] == [32, 64, 128]


def test_ddp_processes_started_by_rank_0_take_its_run_folder(tmp_path, monkeypatch):
    """Lightning's DDP launcher starts the other ranks with rank 0's environment: they reuse its folder name, while
    every fresh rank-0 process makes its own (the second in the same second gets a suffix)."""
    monkeypatch.delenv(cli.RUN_FOLDER_ENV, raising=False)
    monkeypatch.delenv("RANK", raising=False)
    first = cli._new_run_folder("maml")
    assert first.startswith("runs/maml-") and os.environ[cli.RUN_FOLDER_ENV] == first
    Path(first).mkdir(parents=True)
    second = cli._new_run_folder("maml")
    assert second != first and second.startswith("runs/maml-")
    monkeypatch.setenv("RANK", "1")
    assert cli._new_run_folder("maml") == second
