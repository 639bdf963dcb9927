"""W&B: offline automatically without credentials or network, runs named and grouped by lecture, the resolved
config and the metrics readable back from the offline run; figures saved without overwriting."""

from __future__ import annotations

from pathlib import Path

import pytest

from lecture_modules.tracking import configure_wandb_init_args, wandb_offline_reason
from tests.helpers import FIT_CPU, run_cli
from tests.wandb_reader import FULL, read_records, read_run


def test_reader_stops_at_a_chunk_the_writer_has_not_finished(tmp_path):
    """The W&B service may still be appending when a test reads the log: a truncated last chunk is left for the
    next read instead of failing to parse."""
    import struct

    from wandb.proto import wandb_internal_pb2

    record = wandb_internal_pb2.Record()
    record.exit.exit_code = 0
    body = record.SerializeToString()
    header = b":W&B" + struct.pack("<HB", 0xBEE1, 0)
    full = struct.pack("<IHB", 0, len(body), FULL) + body
    path = tmp_path / "run.wandb"
    path.write_bytes(header + full + struct.pack("<IHB", 0, 100, FULL) + body[:3])  # second chunk cut short
    [read] = read_records(path)
    assert read.WhichOneof("record_type") == "exit"
    path.write_bytes(header + full + full)
    assert len(read_records(path)) == 2


def test_offline_without_credentials(tmp_path):
    reason = wandb_offline_reason({"HOME": str(tmp_path), "NETRC": str(tmp_path / "none")})
    assert reason is not None and "credentials" in reason


def test_explicit_mode_wins(tmp_path):
    assert "WANDB_MODE=offline" in wandb_offline_reason({"WANDB_MODE": "offline", "WANDB_API_KEY": "k"})
    assert wandb_offline_reason({"WANDB_MODE": "online", "NETRC": str(tmp_path / "none")}) is None


def test_offline_when_server_unreachable(tmp_path):
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1\n  login user\n  password secret\n")
    env = {"NETRC": str(netrc), "WANDB_BASE_URL": "https://127.0.0.1:1"}  # credentials, but nothing listening
    reason = wandb_offline_reason(env, timeout=0.5)
    assert reason is not None and "unreachable" in reason


def test_init_args_keep_user_values():
    args = configure_wandb_init_args(
        {"name": "mine", "group": None, "project": "p"}, "classification", "fit", offline_reason="no credentials"
    )
    assert args["name"] == "mine" and args["project"] == "p" and args["group"] == "classification"
    assert args["offline"] is True and args["log_model"] is False and args["job_type"] == "fit"


def test_offline_run_records_config_metrics_and_figure(tmp_path):
    cli = run_cli(
        *FIT_CPU,
        "--trainer.max_epochs",
        "2",
        "--trainer.logger.init_args.save_dir",
        str(tmp_path / "runs"),
        "--optimizer.init_args.lr",
        "0.004",
    )
    [log_file] = (tmp_path / "runs" / "wandb").glob("offline-run-*/run-*.wandb")
    run = read_run(log_file)
    assert run["name"].startswith("classification-") and run["group"] == "classification"
    assert run["job_type"] == "fit"
    config = run["config"]
    assert config["model"]["class_path"] == "lecture_modules.classification.Classification"
    assert config["optimizer"]["init_args"]["lr"] == 0.004 and config["trainer"]["max_epochs"] == 2
    val_acc = [row["val/acc"] for row in run["history"] if "val/acc" in row]
    assert len(val_acc) == 2 and val_acc[-1] == pytest.approx(float(cli.trainer.callback_metrics["val/acc"]))
    assert any("train/loss" in row for row in run["history"])
    run_dir = log_file.parent
    assert (run_dir / "files" / "lightning_config.yaml").is_file()
    assert list((run_dir / "files" / "figures").glob("val_confusion_matrix-*.png"))
    assert any(key.startswith("val/confusion_matrix") for row in run["history"] for key in row)


def test_second_run_in_same_directory_loses_nothing(tmp_path):
    args = [
        *FIT_CPU,
        "--trainer.max_epochs",
        "1",
        "--trainer.logger.init_args.save_dir",
        str(tmp_path / "runs"),
    ]
    run_cli(*args)
    first = {p: p.read_bytes() for p in (tmp_path / "runs").rglob("*.ckpt")}
    assert first
    run_cli(*args)
    for path, content in first.items():
        assert path.read_bytes() == content, f"{path} was overwritten"
    assert len(list((tmp_path / "runs").rglob("*.ckpt"))) == 2 * len(first)
    assert len(list((tmp_path / "runs" / "wandb").glob("offline-run-*"))) == 2


def test_log_figure_never_overwrites(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import lightning as L
    import matplotlib.pyplot as plt

    from lecture_modules.base import log_figure

    trainer = L.Trainer(logger=False, default_root_dir=str(tmp_path))
    paths = [log_figure(trainer, "val/plot", plt.figure()) for _ in range(2)]
    assert paths[0] != paths[1] and all(Path(p).is_file() for p in paths)
