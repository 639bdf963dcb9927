"""Classification lecture: backbones, the taught optimiser knobs from YAML, the schedule, and learning."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from datamodules.errors import SettingError
from lecture_modules.classification import Classification
from lecture_modules.nets import NetSpec, build_cnn, build_mlp
from lecture_modules.schedules import WarmupCosineLR, warmup_cosine_factor
from tests.helpers import CLASSIFICATION, FIT_CPU, SMOKE_FIT, run_cli, run_cli_parse_only

NO_LOG = ["--trainer.logger", "false", "--trainer.callbacks=[]"]


@pytest.mark.parametrize("build", [build_mlp, build_cnn])
def test_backbones_map_images_to_logits(build):
    net = build((3, 16, 16), 7, [8, 16], batch_norm=True, dropout=0.2)
    assert net(torch.randn(4, 3, 16, 16)).shape == (4, 7)
    kinds = {type(m) for m in net.modules()}
    assert kinds & {nn.BatchNorm1d, nn.BatchNorm2d} and kinds & {nn.Dropout, nn.Dropout2d}
    plain = build((3, 16, 16), 7, [8, 16], batch_norm=False, dropout=0.0)
    assert not {type(m) for m in plain.modules()} & {nn.BatchNorm1d, nn.BatchNorm2d, nn.Dropout, nn.Dropout2d}


def test_invalid_settings_name_the_argument():
    with pytest.raises(SettingError, match=r"^model\.init_args\.net\.kind must be 'mlp' or 'cnn', got 'resnet'$"):
        Classification(net={"kind": "resnet"})
    with pytest.raises(SettingError, match=r"^model\.init_args\.net\.dropout must be in \[0, 1\), got 1\.0$"):
        Classification(net=NetSpec(dropout=1.0))
    with pytest.raises(SettingError, match=r"^model\.init_args\.net: unknown field\(s\) \['hidden'\]"):
        Classification(net={"kind": "mlp", "hidden": [4]})
    with pytest.raises(SettingError, match=r"^model\.init_args\.label_smoothing must be in \[0, 1\), got 1\.5$"):
        Classification(label_smoothing=1.5)
    with pytest.raises(SettingError, match=r"^model\.init_args\.num_classes must be >= 2 \(the CLI links it from"):
        Classification(num_classes=1)


def test_a_non_finite_loss_hint_names_the_optimisers_lr():
    hint = Classification().non_finite_hint("ce")
    assert hint.startswith("lower the learning rate optimizer.init_args.lr; or clip gradients")


@pytest.mark.parametrize(
    ("given", "message"),
    [
        (["--model.init_args.num_classes", "7"], r"^model\.init_args\.num_classes is 7 but the data gives 10 "),
        (["--model.init_args.input_shape", "[3, 8, 8]"], r"input_shape is \[3, 8, 8\] but the data gives \[1, 16"),
    ],
)
def test_a_linked_shape_given_with_another_value_than_the_datas_is_refused(given, message):
    with pytest.raises(SettingError, match=message):
        run_cli_parse_only("--config", CLASSIFICATION, *given)


def test_a_linked_shape_given_with_the_datas_value_is_accepted():
    cli = run_cli_parse_only("--config", CLASSIFICATION, "--model.init_args.num_classes", "10")
    assert cli.model.hparams.num_classes == 10 and tuple(cli.model.hparams.input_shape) == (1, 16, 16)


def test_checkpoints_from_before_the_net_argument_keep_their_network():
    old = {"num_classes": 10, "backbone": "mlp", "hidden": [32], "batch_norm": False, "dropout": 0.2}
    new = Classification.upgrade_hparams(old)
    assert new == {"num_classes": 10, "net": {"kind": "mlp", "widths": [32], "batch_norm": False, "dropout": 0.2}}
    model = Classification(**new)
    assert [m.out_features for m in model.net if isinstance(m, nn.Linear)] == [32, 10]


def test_warmup_cosine_endpoints_and_shape():
    assert warmup_cosine_factor(0, 4, 20, 0.1) == pytest.approx(1 / 5)
    assert warmup_cosine_factor(4, 4, 20, 0.1) == pytest.approx(1.0)
    assert warmup_cosine_factor(20, 4, 20, 0.1) == pytest.approx(0.1)
    decay = [warmup_cosine_factor(s, 4, 20, 0.1) for s in range(4, 21)]
    assert all(a >= b for a, b in itertools.pairwise(decay))
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = WarmupCosineLR(opt, warmup_steps=0.25, total_steps=None)
    sched.set_total_steps(20)  # warm-up fraction resolves to 5 steps
    assert opt.param_groups[0]["lr"] == pytest.approx(1 / 6)
    with pytest.raises(ValueError, match="warmup_steps"):
        WarmupCosineLR(opt, warmup_steps=1.5)


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_config_runs_offline_smoke(kind):
    cli = run_cli(*SMOKE_FIT, "--model.init_args.net.kind", kind, "--model.init_args.net.widths", "[16, 16]")
    assert cli.trainer.global_step == 2 and "val/acc" in cli.trainer.callback_metrics
    assert cli.model.hparams.input_shape == (1, 16, 16)  # linked from the DataModule


def test_sgd_momentum_and_per_step_warmup_from_yaml(tmp_path):
    cli = run_cli(
        *FIT_CPU,
        *NO_LOG,
        "--trainer.max_steps",
        "6",
        "--trainer.limit_val_batches",
        "0",
        "--optimizer",
        "torch.optim.SGD",
        "--optimizer.lr",
        "0.1",
        "--optimizer.momentum",
        "0.9",
        "--optimizer.weight_decay",
        "0.0005",
        "--lr_scheduler.init_args.warmup_steps",
        "4",
        "--lr_scheduler.init_args.total_steps",
        "6",
        "--trainer.default_root_dir",
        str(tmp_path),
    )
    opt = cli.trainer.optimizers[0]
    assert isinstance(opt, torch.optim.SGD) and opt.defaults["momentum"] == 0.9
    config = cli.trainer.lr_scheduler_configs[0]
    assert config.interval == "step" and isinstance(config.scheduler, WarmupCosineLR)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1 * warmup_cosine_factor(6, 4, 6, 0.01))


def test_learns_the_digits(tmp_path):
    cli = run_cli(
        *FIT_CPU,
        *NO_LOG,
        "--trainer.max_epochs",
        "6",
        "--trainer.default_root_dir",
        str(tmp_path),
    )
    assert float(cli.trainer.callback_metrics["val/acc"]) > 0.9
    cli.trainer.test(cli.model, datamodule=cli.datamodule, verbose=False)
    assert float(cli.trainer.callback_metrics["test/acc"]) > 0.9
