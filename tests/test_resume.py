"""Resume is exact: an interrupted run resumed from its checkpoint ends with the same weights as one that never
stopped (dropout, shuffling, a per-step warm-up schedule and AdamW state all in play)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.helpers import FIT_CPU, crash_after_checkpoint, run_cli, state_dict_equal

# 1,797 digits -> 1,077 train samples -> 17 batches of 64 per epoch; 2 epochs = 34 steps.
BASE = [
    *FIT_CPU,
    "--trainer.logger",
    "false",
    "--trainer.callbacks=[]",
    "--trainer.max_epochs",
    "2",
    "--model.init_args.net.dropout",
    "0.3",
    "--data.init_args.limit_train_samples",
    "1077",
]


def _crash_after_checkpoint(step: int, root: Path) -> Path:
    return crash_after_checkpoint(BASE, step, root)


@pytest.mark.parametrize("stop_at", [5, 23])  # mid-epoch in the first epoch, and mid-epoch in the second
def test_resume_mid_epoch_gives_identical_weights(tmp_path, stop_at):
    full = run_cli(*BASE, "--trainer.default_root_dir", str(tmp_path / "full"))
    reference = {k: v.clone() for k, v in full.model.state_dict().items()}
    assert full.trainer.global_step == 34

    ckpt = _crash_after_checkpoint(stop_at, tmp_path / "ckpt")

    resumed = run_cli(*BASE, "--trainer.default_root_dir", str(tmp_path / "resumed"), "--ckpt_path", str(ckpt))
    assert resumed.trainer.global_step == 34
    assert state_dict_equal(resumed.model.state_dict(), reference), "resumed weights differ from the full run"
    # the schedule resumed too: same final learning rate
    assert resumed.trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(
        full.trainer.optimizers[0].param_groups[0]["lr"], rel=0, abs=0
    )


def test_without_rng_restore_resume_would_differ(tmp_path, monkeypatch):
    """Guards the test above: dropping the saved RNG state must break exactness, so the check has teeth."""
    from lecture_modules.base import LectureModule

    full = run_cli(*BASE, "--trainer.default_root_dir", str(tmp_path / "full"))
    ckpt = _crash_after_checkpoint(5, tmp_path / "ckpt")
    monkeypatch.setattr(LectureModule, "on_load_checkpoint", lambda self, checkpoint: None)
    torch.manual_seed(1234)  # a different global RNG state than the interrupted run had
    resumed = run_cli(
        *BASE,
        "--trainer.default_root_dir",
        str(tmp_path / "resumed"),
        "--ckpt_path",
        str(ckpt),
        "--seed_everything",
        "7",
    )
    assert not state_dict_equal(resumed.model.state_dict(), full.model.state_dict())


def test_checkpoint_loads_with_weights_only(tmp_path):
    ckpt = torch.load(_crash_after_checkpoint(3, tmp_path / "ckpt"), weights_only=True)
    assert "rng_states" in ckpt and "state_dict" in ckpt and ckpt["hyper_parameters"]["net"]["kind"] == "cnn"
