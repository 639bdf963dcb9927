"""W&B: offline automatically without credentials or network (within seconds, with the server's own port), a refused
key is one error line, runs named and grouped by lecture, the resolved config and the metrics readable back from
the offline run; figures saved without overwriting."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from cli import run
from datamodules.errors import UserInputError
from lecture_modules.tracking import ServerProblem, configure_wandb_init_args, wandb_offline_reason
from tests.helpers import CLASSIFICATION, FIT_CPU, run_cli
from tests.wandb_reader import FULL, read_records, read_run
from tests.wandb_server import FAKE_KEY, answering_server, silent_server


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


def keyed(base_url: str, **more: str) -> dict[str, str]:
    return {"WANDB_API_KEY": FAKE_KEY, "WANDB_BASE_URL": base_url, **more}


def test_a_server_that_accepts_but_never_answers_sends_the_run_offline_within_the_timeout():
    with silent_server() as url:
        start = time.monotonic()
        reason = wandb_offline_reason(keyed(url), timeout=1.0)
        elapsed = time.monotonic() - start
    assert isinstance(reason, ServerProblem) and "did not answer within 1 s" in reason and url in reason
    assert elapsed < 3.0, f"the probe took {elapsed:.1f} s"


def test_the_probe_asks_the_host_and_port_of_WANDB_BASE_URL():
    """A self-hosted server on its own port (not 443) that knows the key: the run stays online."""
    assert wandb_offline_reason(keyed(answering_server(200)), timeout=2.0) is None


def test_a_netrc_entry_for_host_and_port_is_the_key_of_a_self_hosted_server(tmp_path):
    """``wandb login --host http://host:8080`` writes ``machine host:8080``."""
    url = answering_server(200)
    netrc = tmp_path / "netrc"
    netrc.write_text(f"machine {url.split('/')[2]}\n  login user\n  password {FAKE_KEY}\n")
    assert wandb_offline_reason({"NETRC": str(netrc), "WANDB_BASE_URL": url}, timeout=2.0) is None


def test_a_server_error_sends_the_run_offline():
    reason = wandb_offline_reason(keyed(answering_server(503)), timeout=2.0)
    assert isinstance(reason, ServerProblem) and "HTTP 503" in reason


@pytest.mark.parametrize("answer", [401, 403, "nobody"])
def test_a_refused_key_is_an_error_that_says_how_to_run_offline(answer):
    """Not a fallback: the same key would refuse every later ``wandb sync`` (see ``lecture_modules.tracking``)."""
    with pytest.raises(UserInputError) as raised:
        wandb_offline_reason(keyed(answering_server(answer)), timeout=2.0)
    message = str(raised.value)
    assert "refused the API key from WANDB_API_KEY" in message and "\n" not in message
    assert "WANDB_MODE=offline" in message and "--trainer.logger false" in message
    assert FAKE_KEY not in message + str(raised.value.hint)


@pytest.mark.parametrize("url", ["localhost:8080", "ftp://wandb.example", "http://localhost:99999"])
def test_a_base_url_that_is_not_an_http_url_is_an_error_naming_it(url):
    with pytest.raises(UserInputError, match=f"WANDB_BASE_URL='{url}' is not an http"):
        wandb_offline_reason(keyed(url), timeout=0.5)


def test_explicit_online_checks_the_key_but_never_falls_back():
    with pytest.raises(UserInputError, match="refused"):
        wandb_offline_reason(keyed(answering_server(401), WANDB_MODE="online"), timeout=2.0)
    with silent_server() as url:
        assert wandb_offline_reason(keyed(url, WANDB_MODE="online"), timeout=0.5) is None


def test_a_logger_set_offline_in_the_config_asks_no_server(monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
    monkeypatch.setenv("WANDB_BASE_URL", answering_server(401))  # would be an error if asked
    cli = run(["--config", CLASSIFICATION, "--trainer.logger.init_args.offline", "true"], run=False)
    assert cli.trainer.logger._offline is True


def test_a_fit_run_goes_offline_in_seconds_when_the_server_never_answers(tmp_path, monkeypatch, caplog):
    """Issue 20 item 5: a 40-character key and a server that accepts and never answers stalled ~2 minutes, then
    crashed. Now: one warning line naming the server, and the run is saved offline."""
    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
    with silent_server() as url, caplog.at_level(logging.WARNING, logger="lecture_modules.tracking"):
        monkeypatch.setenv("WANDB_BASE_URL", url)
        start = time.monotonic()
        run_cli(*FIT_CPU, "--trainer.max_epochs", "1", "--trainer.logger.init_args.save_dir", str(tmp_path / "runs"))
        elapsed = time.monotonic() - start
    [warning] = [r.getMessage() for r in caplog.records if r.name == "lecture_modules.tracking"]
    assert "W&B runs offline" in warning and url in warning and "did not answer" in warning and "\n" not in warning
    assert list((tmp_path / "runs" / "wandb").glob("offline-run-*/run-*.wandb"))
    assert elapsed < 60, f"the run took {elapsed:.0f} s"


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
