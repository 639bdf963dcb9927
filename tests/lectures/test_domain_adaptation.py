"""Domain adaptation lectures: gradient reversal, the DANN schedules, MCD's update steps, every method's fit on
the embedded default, honest target labels, exact resume (automatic and manual optimisation) and 2-process DDP."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from lecture_modules.domain_adaptation.core import (
    classifier_discrepancy,
    dann_lambda,
    grad_reverse,
    normalized_entropy,
    proxy_a_distance,
)
from lecture_modules.domain_adaptation.mcd import MCD
from lecture_modules.schedules import InverseDecayLR, dann_lr_factor
from tests.helpers import CONFIGS, CPU, QUICK, crash_after_checkpoint, run_cli, run_cli_subprocess, state_dict_equal

METHODS = ["source_only", "dann", "mcd", "target_oracle"]
# 256 samples per domain -> 4 batches of 64 per epoch; PCA figure, small embedding subset.
SMALL = [
    *QUICK,
    "--trainer.accelerator=cpu",
    "--trainer.devices=1",
    "--data.init_args.limit_train_samples=256",
    "--model.init_args.embedding=pca",
    "--model.init_args.embedding_samples=100",
]
NO_LOG = ["--trainer.logger=false", "--trainer.callbacks=[]"]


pytestmark = pytest.mark.usefixtures("one_thread")


def _config(name: str) -> str:
    return str(CONFIGS / f"{name}.yaml")


# ---------------------------------------------------------------------------------------------- pure pieces
@pytest.mark.parametrize("coeff", [0.0, 0.37, 1.0, 2.5])
def test_gradient_reversal_is_identity_forward_and_flips_scaled_gradient(coeff):
    x = torch.randn(5, 3, requires_grad=True)
    upstream = torch.randn(5, 3)
    y = grad_reverse(x, coeff)
    assert torch.equal(y, x)
    y.backward(upstream)
    assert torch.equal(x.grad, -coeff * upstream)


def test_gradient_reversal_inside_a_network_negates_only_the_upstream_part():
    torch.manual_seed(0)
    g, d = nn.Linear(4, 3), nn.Linear(3, 1)
    x = torch.randn(8, 4)
    d(g(x)).sum().backward()
    plain_g, plain_d = g.weight.grad.clone(), d.weight.grad.clone()
    g.zero_grad(), d.zero_grad()
    d(grad_reverse(g(x), 0.5)).sum().backward()
    assert torch.allclose(g.weight.grad, -0.5 * plain_g)  # the extractor gets the reversed, scaled gradient
    assert torch.equal(d.weight.grad, plain_d)  # the domain classifier's own gradient is unchanged


def test_dann_lambda_schedule_endpoints_and_monotone():
    assert dann_lambda(0.0) == 0.0
    assert dann_lambda(1.0) == pytest.approx(2 / (1 + math.exp(-10)) - 1)
    assert dann_lambda(1.0) > 0.9999 and dann_lambda(2.0) == dann_lambda(1.0)  # progress is clamped
    values = [dann_lambda(p / 20) for p in range(21)]
    assert all(a < b for a, b in itertools.pairwise(values))
    assert dann_lambda(0.5, gamma=0.0) == 0.0


def test_dann_lr_schedule_endpoints_and_scheduler():
    assert dann_lr_factor(0.0) == 1.0
    assert dann_lr_factor(1.0) == pytest.approx(11**-0.75)
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.01)
    sched = InverseDecayLR(opt, total_steps=None)
    assert opt.param_groups[0]["lr"] == 0.01  # open length: no decay until the length is known
    sched.set_total_steps(10)
    for _ in range(10):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.01 * 11**-0.75)
    with pytest.raises(ValueError, match=r"InverseDecayLR\.total_steps"):
        InverseDecayLR(opt, total_steps=0)


def test_discrepancy_entropy_and_proxy_a_distance():
    a = torch.tensor([[10.0, -10.0], [0.0, 0.0]])
    assert classifier_discrepancy(a, a) == 0
    assert classifier_discrepancy(a, a.flip(1)) == pytest.approx(0.5, abs=1e-4)  # row 1: |1-0|, row 2: 0
    assert normalized_entropy(torch.zeros(3, 4)).tolist() == pytest.approx([1.0] * 3)
    rng = torch.Generator().manual_seed(0)
    same = torch.randn(400, 8, generator=rng).numpy()
    assert proxy_a_distance(same[:200], same[200:]) < 0.5  # one distribution: close to 0
    assert proxy_a_distance(same[:200], same[200:] + 5.0) > 1.9  # separable: close to 2


# ---------------------------------------------------------------------------------------------- MCD steps
def _mcd_with_plain_optimisers() -> tuple[MCD, dict[str, dict[str, torch.Tensor]]]:
    torch.manual_seed(0)
    model = MCD(num_classes=10, input_shape=(3, 16, 16), conv_channels=[8, 16], feature_dim=16, hidden=16, lr=0.01)
    opts = model.configure_optimizers()
    model.optimizers = lambda: opts  # what the trainer would hand back
    model.manual_backward = lambda loss: loss.backward()
    return model, opts


def _snapshot(model: MCD) -> dict[str, dict[str, torch.Tensor]]:
    parts = {"G": model.features, "F1": model.classifier, "F2": model.classifier2}
    return {k: {n: p.detach().clone() for n, p in m.named_parameters()} for k, m in parts.items()}


def _changed(before, after) -> dict[str, bool]:
    return {k: any(not torch.equal(before[k][n], after[k][n]) for n in before[k]) for k in before}


def test_mcd_step_b_updates_only_the_classifiers_and_step_c_only_the_generator():
    model, _ = _mcd_with_plain_optimisers()
    model.train()
    x_s, y_s, x_t = torch.randn(8, 3, 16, 16), torch.arange(8) % 10, torch.randn(8, 3, 16, 16) + 1.0
    before = _snapshot(model)
    model.step_b(x_s, y_s, x_t)
    assert _changed(before, _snapshot(model)) == {"G": False, "F1": True, "F2": True}

    before = _snapshot(model)
    model.step_c(x_t)
    assert _changed(before, _snapshot(model)) == {"G": True, "F1": False, "F2": False}


# ---------------------------------------------------------------------------------------------- fits
@pytest.mark.parametrize("method", METHODS)
def test_each_method_fits_the_embedded_default_and_logs(method, tmp_path):
    cli = run_cli(
        "fit", "--config", _config(method), *SMALL, *NO_LOG, "--trainer.max_epochs=1",
        f"--trainer.default_root_dir={tmp_path}",
    )  # fmt: skip
    metrics = cli.trainer.callback_metrics
    expected = {
        "val/source_acc",
        "val/target_acc",
        "val/target_entropy",
        "val/label_free_score",
        "val/proxy_a_distance",
    }
    assert expected <= set(metrics), sorted(metrics)
    assert any(k.startswith("train/loss") for k in metrics)
    steps_per_batch = 2 + 1 + 4 if method == "mcd" else 1
    assert cli.trainer.global_step == 4 * steps_per_batch
    assert cli.model.hparams.input_shape == (3, 16, 16)  # 8x8 grey source conformed to the 16x16 RGB target
    if method == "dann":
        assert {"val/domain_acc", "train/grl_lambda", "train/domain_acc"} <= set(metrics)
        assert 0 < float(metrics["train/grl_lambda"]) < 1
    figures = list(tmp_path.rglob("val_feature_embedding*.png"))
    assert len(figures) == 1, figures


def test_non_oracle_refuses_target_labels_and_oracle_needs_them(tmp_path):
    with pytest.raises(ValueError, match=r"data.init_args.train_on"):
        run_cli(
            "fit", "--config", _config("dann"), *SMALL, *NO_LOG, "--data.init_args.train_on=target",
            "--trainer.max_steps=1", f"--trainer.default_root_dir={tmp_path / 'dann'}",
        )  # fmt: skip
    with pytest.raises(ValueError, match=r"data.init_args.train_on"):
        run_cli(
            "fit", "--config", _config("target_oracle"), *SMALL, *NO_LOG, "--data.init_args.train_on=source",
            "--trainer.max_steps=1", f"--trainer.default_root_dir={tmp_path / 'oracle'}",
        )  # fmt: skip


def test_mcd_with_an_injected_single_optimizer_fails_with_the_setting(tmp_path):
    with pytest.raises(ValueError, match=r"optimizer"):
        run_cli(
            "fit", "--config", _config("mcd"), *SMALL, *NO_LOG, "--optimizer=torch.optim.SGD",
            "--optimizer.lr=0.1", "--trainer.max_steps=1", f"--trainer.default_root_dir={tmp_path}",
        )  # fmt: skip


# ---------------------------------------------------------------------------------------------- resume
def _resume_base(method: str) -> list[str]:
    extra = ["--model.init_args.num_k=1"] if method == "mcd" else []  # 4 optimiser steps per batch
    return ["fit", "--config", _config(method), *SMALL, *NO_LOG, "--trainer.max_epochs=2",
            "--model.init_args.embedding=none", "--model.init_args.dropout=0.3", *extra]  # fmt: skip


@pytest.mark.parametrize(("method", "stop_at", "total"), [("dann", 6, 8), ("mcd", 12, 32)])
def test_resume_mid_epoch_is_exact(method, stop_at, total, tmp_path):
    base = _resume_base(method)
    full = run_cli(*base, f"--trainer.default_root_dir={tmp_path / 'full'}")
    assert full.trainer.global_step == total
    ckpt = crash_after_checkpoint(base, stop_at, tmp_path / "ckpt")
    assert len(torch.load(ckpt, weights_only=True)["optimizer_states"]) == (2 if method == "mcd" else 1)
    resumed = run_cli(*base, f"--trainer.default_root_dir={tmp_path / 'resumed'}", f"--ckpt_path={ckpt}")
    assert resumed.trainer.global_step == total
    assert state_dict_equal(resumed.model.state_dict(), full.model.state_dict()), "resumed weights differ"


def test_resume_without_the_sampler_skip_would_differ(tmp_path, monkeypatch):
    """Guards the test above: if the two-domain loader did not skip the batches already trained on, it would fail."""
    import datamodules.domains

    base = _resume_base("dann")
    full = run_cli(*base, f"--trainer.default_root_dir={tmp_path / 'full'}")
    ckpt = crash_after_checkpoint(base, 2, tmp_path / "ckpt")
    monkeypatch.setattr(datamodules.domains, "resume_sampler", lambda trainer, sampler, batch_size: None)
    resumed = run_cli(*base, f"--trainer.default_root_dir={tmp_path / 'resumed'}", f"--ckpt_path={ckpt}")
    assert not state_dict_equal(resumed.model.state_dict(), full.model.state_dict())


# ---------------------------------------------------------------------------------------------- DDP
@pytest.mark.slow
@pytest.mark.parametrize("method", ["dann", "mcd"])  # automatic and manual optimisation
def test_runs_under_two_process_ddp_with_synced_metrics(method, tmp_path):
    result = run_cli_subprocess(
        "fit", "--config", _config(method), "--config", CPU, *QUICK, "--trainer.strategy=ddp",
        "--trainer.devices=2", "--trainer.max_epochs=1", "--data.init_args.limit_train_samples=128",
        "--model.init_args.embedding=pca",  # the config's W&B logger (offline) and checkpoint callback stay
        "--trainer.callbacks+=tests.helpers.MetricsDump", f"--trainer.callbacks.out_dir={tmp_path}",
        cwd=tmp_path, env={"OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    rank0, rank1 = (json.loads(Path(tmp_path / f"fit-rank{r}.json").read_text()) for r in (0, 1))
    assert {"val/target_acc", "val/source_acc", "val/label_free_score", "val/proxy_a_distance"} <= set(rank0)
    assert ("val/domain_acc" in rank0) == (method == "dann")
    assert rank0 == rank1
    assert len(list(tmp_path.rglob("val_feature_embedding*.png"))) == 1  # rank zero only
