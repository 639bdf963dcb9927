"""The classification config runs unchanged under 2-process CPU DDP (gloo); validation metrics are reduced
across ranks (both ranks report the same value) and equal a 1-process evaluation of the same weights."""

from __future__ import annotations

import json

import pytest

from tests.helpers import CLASSIFICATION, CONFIGS, QUICK, run_cli_subprocess

DDP2 = ["--trainer.accelerator", "cpu", "--trainer.strategy", "ddp", "--trainer.devices", "2"]


def _dump(out_dir) -> list[str]:
    return ["--trainer.callbacks+=tests.helpers.MetricsDump", "--trainer.callbacks.out_dir", str(out_dir)]


def _metrics(path) -> dict[str, float]:
    return json.loads(path.read_text())


@pytest.mark.slow
def test_ddp_fit_syncs_validation_metrics_and_matches_single_process(tmp_path):
    fit = run_cli_subprocess(
        "fit",
        "--config",
        CLASSIFICATION,
        *DDP2,
        *QUICK,
        "--trainer.max_epochs",
        "2",
        *_dump(tmp_path / "fit"),
        cwd=tmp_path,
    )
    assert fit.returncode == 0, fit.stderr[-3000:]
    rank0, rank1 = (_metrics(tmp_path / "fit" / f"fit-rank{r}.json") for r in (0, 1))
    assert set(rank0) >= {"val/acc", "val/loss"} and rank0 == rank1  # synced across ranks

    [last] = tmp_path.glob("runs/ml-lectures/*/checkpoints/last.ckpt")
    common = [
        "validate",
        "--config",
        CLASSIFICATION,
        *QUICK,
        "--trainer.logger",
        "false",
        "--trainer.callbacks=[]",
        "--ckpt_path",
        str(last),
    ]
    one = run_cli_subprocess(
        *common,
        "--trainer.accelerator",
        "cpu",
        "--trainer.devices",
        "1",
        "--trainer.default_root_dir",
        str(tmp_path / "one"),
        *_dump(tmp_path / "one"),
        cwd=tmp_path,
    )
    assert one.returncode == 0, one.stderr[-3000:]
    two = run_cli_subprocess(
        *common, *DDP2, "--trainer.default_root_dir", str(tmp_path / "two"), *_dump(tmp_path / "two"), cwd=tmp_path
    )
    assert two.returncode == 0, two.stderr[-3000:]

    single = _metrics(tmp_path / "one" / "validate-rank0.json")
    for result in (rank0, *(_metrics(tmp_path / "two" / f"validate-rank{r}.json") for r in (0, 1))):
        assert result["val/acc"] == pytest.approx(single["val/acc"], abs=1e-7)
        assert result["val/loss"] == pytest.approx(single["val/loss"], rel=1e-5)


@pytest.mark.slow
def test_ddp_distillation_with_frozen_teacher_and_hint_stage(tmp_path):
    """2-process DDP with the default find_unused_parameters=False: the frozen teacher is outside DDP, and the
    FitNets hint-only epoch (where the student's head gets no loss) must not raise an unused-parameter error."""
    fit = run_cli_subprocess(
        "fit",
        "--config",
        str(CONFIGS / "distillation.yaml"),
        *DDP2,
        *QUICK,
        "--model.init_args.hint_layers",
        "{'5': 'net.8'}",
        "--model.init_args.hint_only_epochs",
        "1",
        "--trainer.max_epochs",
        "2",
        "--trainer.limit_train_batches",
        "3",
        *_dump(tmp_path / "fit"),
        cwd=tmp_path,
    )
    assert fit.returncode == 0, fit.stderr[-3000:]
    rank0, rank1 = (_metrics(tmp_path / "fit" / f"fit-rank{r}.json") for r in (0, 1))
    assert {"val/acc", "val/teacher_acc", "val/agreement"} <= set(rank0) and rank0 == rank1


@pytest.mark.slow
def test_ddp_figure_without_wandb_logger(tmp_path):
    """log_figure runs on rank zero only; with no W&B logger it must not ask the trainer for log_dir (a broadcast
    that the other rank never joins)."""
    fit = run_cli_subprocess(
        "fit",
        "--config",
        CLASSIFICATION,
        *DDP2,
        *QUICK,
        "--trainer.logger",
        "false",
        "--trainer.callbacks=[]",
        "--trainer.max_epochs",
        "1",
        "--trainer.limit_train_batches",
        "2",
        "--trainer.default_root_dir",
        str(tmp_path),
        cwd=tmp_path,
        timeout=240,
    )
    assert fit.returncode == 0, fit.stderr[-3000:]
    assert list((tmp_path / "figures").glob("val_confusion_matrix-*.png"))


@pytest.mark.slow
def test_a_bad_setting_that_fails_under_2_process_ddp_ends_at_once_in_one_line(tmp_path):
    """A learning rate of 1e30 makes the loss non-finite at the same step on both processes, during training (after
    both started): rank 0 alone reports it, and the run ends with exit code 2 at once (no hang on a collective, no
    traceback, no per-rank copies)."""
    result = run_cli_subprocess(
        "fit", "--config", CLASSIFICATION, *DDP2, *QUICK, "--trainer.max_epochs", "1",
        "--trainer.default_root_dir", "run", "--optimizer.init_args.lr", "1e30", cwd=tmp_path, timeout=240,
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert "MEMBER: 2/2" in output, output[-3000:]  # the error came after the second process started
    assert result.returncode == 2, output[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "loss term" in errors[0], output[-3000:]
    assert "Traceback" not in output, output[-3000:]
