"""Pruning lecture: the schedule, exact unstructured sparsity, structured channel removal that keeps the network's
function, cost counting, and end-to-end runs (optimiser rebuild, reload of a pruned checkpoint, export, resume
exactness across a pruning round). The 2-process DDP run is marked slow."""

from __future__ import annotations

import json
import time
from pathlib import Path

import lightning as L
import pytest
import torch
from torch import nn

from callbacks.iterative_pruning import IterativePruning, schedule
from datamodules.errors import SettingError
from lecture_modules.nets import NetSpec, build_cnn
from lecture_modules.pruning import Pruning, export_pruned
from lecture_modules.pruning.core import (
    TaylorAccumulator,
    channel_scores,
    conv_indices,
    count_macs,
    count_params,
    keep_indices,
    make_permanent,
    prunable,
    prune_channels,
    sparsity,
    unstructured_round,
    widths_of,
)
from tests.helpers import (
    CONFIGS,
    CPU,
    QUICK,
    crash_after_checkpoint,
    optimised_params,
    run_cli,
    run_cli_subprocess,
    state_dict_equal,
    with_checkpoints,
)

SHAPE = (1, 16, 16)
# No logger; the only callback is the pruning schedule, which the SHORT arguments below set in full.
NO_LOG = [
    "--trainer.logger",
    "false",
    "--trainer.callbacks=[]",
    "--trainer.callbacks+=callbacks.iterative_pruning.IterativePruning",
]
# 320 train samples -> 5 batches of 64 per epoch; 1 dense epoch, rounds at epochs 1 and 2 (30%, then 50%), 3 epochs.
# The --trainer.callbacks.* arguments reach the last callback: IterativePruning (last in the configs too).
SHORT = [
    "--trainer.max_epochs",
    "3",
    "--trainer.limit_val_batches",
    "2",
    "--data.init_args.limit_train_samples",
    "320",
    "--trainer.callbacks.pretrain_epochs",
    "1",
    "--trainer.callbacks.amount_per_round",
    "0.3",
    "--trainer.callbacks.target_sparsity",
    "0.5",
    "--trainer.callbacks.latency_repeats",
    "1",
]


def _fit(config: str, *extra: str) -> list[str]:
    return ["fit", "--config", CPU, "--config", str(CONFIGS / config), *QUICK, *NO_LOG, *SHORT, *extra]


def _pruning(trainer: L.Trainer) -> IterativePruning:
    [callback] = [c for c in trainer.callbacks if isinstance(c, IterativePruning)]
    return callback


def _net(widths=(8, 16, 32), seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    net = build_cnn(SHAPE, 10, list(widths), batch_norm=True, dropout=0.0)
    with torch.no_grad():  # non-trivial batch-norm statistics, so slicing them is checked
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return net.eval()


# ---------------------------------------------------------------------------------------------- unstructured
@pytest.mark.parametrize("scope", ["global", "layer"])
def test_unstructured_rounds_reach_the_configured_sparsity_exactly(scope):
    net = _net()
    params_before = [id(p) for p in net.parameters()]
    total = sum(m.weight.numel() for m, _ in prunable(net))
    for level in schedule(0.8, 0.25):
        reached = unstructured_round(net, level, scope)
        assert reached == pytest.approx(level, abs=len(prunable(net)) / total)
    assert [id(p) for p in net.parameters()] == params_before  # weight_orig IS the old weight: optimiser unaffected
    if scope == "layer":
        for module, _ in prunable(net):
            assert float((module.weight == 0).float().mean()) == pytest.approx(0.8, abs=1 / module.weight.numel())
    # masks accumulate: a weight once pruned stays pruned (iterative pruning, not re-pruning from scratch)
    mask = net[0].weight_mask.clone()
    unstructured_round(net, 0.9, scope)
    assert torch.all(net[0].weight_mask <= mask)


def test_global_scope_prunes_the_smallest_weights_over_all_layers():
    net = _net()
    everything = torch.cat([m.weight.detach().abs().flatten() for m, _ in prunable(net)])
    unstructured_round(net, 0.5, "global")
    threshold = everything.kthvalue(round(0.5 * len(everything))).values
    for module, _ in prunable(net):
        kept = module.weight_orig[module.weight_mask.bool()].abs()
        assert kept.numel() == 0 or kept.min() >= threshold


def test_make_permanent_leaves_plain_weights_with_the_same_function():
    net = _net()
    unstructured_round(net, 0.7, "global")
    x = torch.randn(3, *SHAPE)
    before = net(x)
    make_permanent(net)
    assert not any(n.endswith(("_orig", "_mask")) for n in net.state_dict())
    assert torch.allclose(net(x), before) and sparsity(net) == pytest.approx(0.7, abs=1e-3)
    assert count_params(net, nonzero=True) < count_params(net)


# ---------------------------------------------------------------------------------------------- structured
def test_keeping_every_channel_changes_nothing():
    net = _net()
    same = prune_channels(net, {i: torch.arange(net[i].out_channels) for i in conv_indices(net)})
    x = torch.randn(4, *SHAPE)
    assert torch.allclose(same(x), net(x), atol=1e-6)


def test_removed_channels_equal_zeroed_batch_norm_channels():
    """Dropping a channel after Conv -> BN -> ReLU is the same function as forcing that channel's BN output to 0,
    so the smaller network must match the masked original exactly (eval mode)."""
    net = _net()
    keep = keep_indices(channel_scores(net, "l1"), {i: net[i].out_channels // 2 for i in conv_indices(net)})
    small = prune_channels(net, keep)
    reference = _net()  # same weights
    with torch.no_grad():
        for i, idx in keep.items():
            dropped = torch.ones(reference[i].out_channels, dtype=torch.bool)
            dropped[idx] = False
            reference[i + 1].weight[dropped] = 0.0
            reference[i + 1].bias[dropped] = 0.0
    x = torch.randn(5, *SHAPE)
    out = small(x)
    assert out.shape == (5, 10) and torch.isfinite(out).all()
    assert torch.allclose(out, reference(x), atol=1e-5)
    # the smaller network is exactly a build_cnn of the kept widths
    assert widths_of(small) == [4, 8, 16]
    assert count_params(small) == count_params(build_cnn(SHAPE, 10, [4, 8, 16], True, 0.0))
    assert count_params(small) < 0.3 * count_params(net)
    assert small[1].running_var.shape == (4,) and small[5].in_channels == 4 and small[-1].in_features == 16


def test_channel_scores_rank_filters_by_norm():
    net = _net()
    with torch.no_grad():
        net[0].weight.zero_()
        net[0].weight[3].fill_(1.0)
    for criterion in ("l1", "l2"):
        scores = channel_scores(net, criterion)
        assert scores[0].argmax() == 3 and set(scores) == set(conv_indices(net))
    assert keep_indices(channel_scores(net, "l1"), {0: 1, 5: 16, 10: 32})[0].tolist() == [3]


def test_taylor_scores_accumulate_over_backward_passes():
    net = _net().train()
    acc = TaylorAccumulator()
    acc.attach(net)
    for _ in range(2):
        nn.functional.cross_entropy(net(torch.randn(8, *SHAPE)), torch.randint(0, 10, (8,))).backward()
    assert {i: s.shape[0] for i, s in acc.scores.items()} == {0: 8, 5: 16, 10: 32}
    assert all((s >= 0).all() and s.sum() > 0 for s in acc.scores.values())
    with torch.no_grad():
        net.eval()(torch.randn(2, *SHAPE))  # evaluation adds nothing
    acc.detach()


def test_macs_follow_the_layer_shapes():
    conv = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1, bias=False))
    assert count_macs(conv, (2, 5, 5)) == 4 * 2 * 9 * 25  # C_out * C_in * k^2 * H * W
    net = _net()
    small = prune_channels(net, keep_indices(channel_scores(net, "l1"), {0: 4, 5: 8, 10: 16}))
    assert count_macs(small, SHAPE) < 0.3 * count_macs(net, SHAPE)
    unstructured_round(net, 0.9)
    assert count_macs(net, SHAPE) == count_macs(_net(), SHAPE)  # masks leave the dense work unchanged


def test_settings_are_validated_by_name():
    with pytest.raises(SettingError, match=r"^model\.init_args\.criterion must be 'l1' with .*unstructured.*'taylor'"):
        Pruning(method="unstructured", criterion="taylor")
    with pytest.raises(SettingError, match=r"^model\.init_args\.net\.dropout must be in \[0, 1\), got 1.0"):
        Pruning(net=NetSpec(dropout=1.0))
    with pytest.raises(SettingError, match=r"^model\.init_args\.net\.kind must be 'cnn' with .*'structured'.*'mlp'"):
        Pruning(net=NetSpec(kind="mlp"), method="structured")


def test_unstructured_pruning_of_an_mlp_masks_its_linear_layers():
    model = Pruning(input_shape=SHAPE, net=NetSpec(kind="mlp", widths=[32, 16]))
    model.prune(0.6)
    assert sparsity(model.net) == pytest.approx(0.6, abs=1e-3) and model.kept == []
    assert model.pruning_stats(batch_sizes=[1], repeats=0)["nonzero_params"] < count_params(model.net)


OLD_HPARAMS = {  # what a checkpoint written before the network became one spec (and the schedule a callback) holds
    "num_classes": 10,
    "input_shape": [1, 16, 16],
    "hidden": [8, 16, 32],
    "batch_norm": True,
    "dropout": 0.2,
    "method": "structured",
    "scope": "layer",
    "criterion": "l2",
    "amount_per_round": 0.2,
    "target_sparsity": 0.5,
    "pretrain_epochs": 5,
    "epochs_per_round": 1,
    "rewind": "init",
    "rewind_epoch": 1,
    "latency_batch_sizes": None,
    "latency_repeats": 5,
}


def test_upgrade_hparams_folds_the_old_network_arguments_and_drops_the_schedule():
    new = Pruning.upgrade_hparams(OLD_HPARAMS)
    assert new == {
        "num_classes": 10,
        "input_shape": [1, 16, 16],
        "method": "structured",
        "scope": "layer",
        "criterion": "l2",
        "net": {"kind": "cnn", "widths": [8, 16, 32], "batch_norm": True, "dropout": 0.2},
    }
    assert Pruning.upgrade_hparams(new) == new  # today's hyper-parameters pass unchanged
    torch.manual_seed(0)
    model = Pruning(**new)
    torch.manual_seed(0)
    old_layout = build_cnn(SHAPE, 10, [8, 16, 32], True, 0.2)
    assert state_dict_equal(model.net.state_dict(), old_layout.state_dict())


def test_a_top_level_optimizer_is_refused_with_the_setting_to_use(tmp_path):
    with pytest.raises(ValueError, match=r"model.init_args.optimizer"):
        run_cli(*_fit("pruning.yaml"), "--optimizer", "torch.optim.SGD", "--optimizer.lr", "0.1",
                "--trainer.default_root_dir", str(tmp_path))  # fmt: skip


@pytest.mark.parametrize("method", ["unstructured", "structured"])
def test_lottery_ticket_rewind_resets_the_survivors_to_their_initial_values(method):
    torch.manual_seed(0)
    model = Pruning(input_shape=SHAPE, net=NetSpec(widths=[8, 16, 32], dropout=0.0), method=method)
    init = {k: v.clone() for k, v in model.net.state_dict().items()}
    with torch.no_grad():  # stands in for training: the pruning decision is made on these weights
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    trained = {k: v.clone() for k, v in model.net.state_dict().items()}
    model.prune(0.5)  # what IterativePruning does in a round with rewind: init
    model.rewind(init)
    state = model.net.state_dict()
    if method == "unstructured":
        for key in ("0.weight", "5.weight", "10.weight", "17.weight"):
            mask = state[key.replace("weight", "weight_mask")].bool()
            assert torch.equal(state[key.replace("weight", "weight_orig")], init[key])  # rewound ...
            magnitude = trained[key].abs()  # ... but chosen by the trained magnitudes (one global threshold)
            assert magnitude[mask].min() >= magnitude[~mask].max()
        assert sparsity(model.net) == pytest.approx(0.5, abs=1e-3)
    else:
        k0, k1 = model.kept[0], model.kept[1]
        assert widths_of(model.net) == [4, 8, 16]
        assert torch.equal(state["0.weight"], init["0.weight"][k0])
        assert torch.equal(state["1.running_var"], init["1.running_var"][k0])
        assert torch.equal(state["5.weight"], init["5.weight"][k1][:, k0])
        assert torch.equal(k0, channel_scores(_rebuilt(trained), "l1")[0].topk(4).indices.sort().values)
    assert torch.equal(state["17.bias"], init["17.bias"])


def _rebuilt(state: dict[str, torch.Tensor]) -> nn.Sequential:
    net = build_cnn(SHAPE, 10, [8, 16, 32], True, 0.0)
    net.load_state_dict(state)
    return net


# ---------------------------------------------------------------------------------------------- end to end
def test_unstructured_fit_reaches_target_and_checkpoint_reloads(tmp_path):
    cli = run_cli(
        *_fit("pruning.yaml"),
        "--trainer.default_root_dir",
        str(tmp_path),
        *with_checkpoints(tmp_path / "ckpt"),
    )
    model, pruning = cli.model, _pruning(cli.trainer)
    assert pruning.rounds_done == 2 and sparsity(model.net) == pytest.approx(0.5, abs=1e-4)
    assert [r["round"] for r in pruning.history] == [0, 1, 2]
    assert all(r["val_acc"] is not None for r in pruning.history)
    assert optimised_params(cli.trainer) == {id(p) for p in model.parameters()}
    [path] = (tmp_path / "ckpt").glob("*.ckpt")
    x = torch.randn(6, *SHAPE)
    model.eval()
    reloaded = Pruning.load_from_checkpoint(path, weights_only=True).eval()
    assert torch.equal(reloaded(x), model(x)) and sparsity(reloaded.net) == sparsity(model.net)
    out = export_pruned(path, tmp_path / "pruned.ckpt")
    # the rounds as the checkpoint recorded them (the last row's accuracy comes from the validation after it)
    assert torch.load(out, weights_only=True)["pruning_history"][:-1] == pruning.history[:-1]
    exported = Pruning.load_from_checkpoint(out, weights_only=True).eval()
    assert not any(k.endswith("_mask") for k in exported.state_dict())
    assert torch.allclose(exported(x), model(x), atol=1e-6)


def test_structured_fit_shrinks_network_rebuilds_optimiser_and_exports(tmp_path):
    cli = run_cli(
        *_fit("pruning_structured.yaml"),
        "--trainer.default_root_dir",
        str(tmp_path),
        *with_checkpoints(tmp_path / "ckpt"),
    )
    model = cli.model
    assert widths_of(model.net) == [16, 32, 64]  # 50% of [32, 64, 128]
    assert _pruning(cli.trainer).history[-1]["params"] == count_params(build_cnn(SHAPE, 10, [16, 32, 64], True, 0.0))
    # the optimiser trains the new, smaller layers
    assert optimised_params(cli.trainer) == {id(p) for p in model.parameters()}
    assert cli.trainer.optimizers[0] is cli.trainer.lr_scheduler_configs[0].scheduler.optimizer
    assert torch.isfinite(cli.trainer.callback_metrics["train/loss"])
    [path] = (tmp_path / "ckpt").glob("*.ckpt")
    x = torch.randn(6, *SHAPE)
    model.eval()
    reloaded = Pruning.load_from_checkpoint(path, weights_only=True).eval()
    assert widths_of(reloaded.net) == [16, 32, 64] and torch.equal(reloaded(x), model(x))
    out = export_pruned(path, tmp_path / "pruned.ckpt")
    assert torch.load(out, weights_only=True)["hyper_parameters"]["net"]["widths"] == [16, 32, 64]
    exported = Pruning.load_from_checkpoint(out, weights_only=True).eval()
    assert torch.equal(exported(x), model(x)) and count_params(exported.net) == count_params(model.net)
    with pytest.raises(FileExistsError):
        export_pruned(path, out)


def test_resume_across_a_pruning_round_is_exact(tmp_path):
    """Taylor-scored structured pruning with lottery-ticket rewinding, interrupted mid-epoch right after round 1:
    the checkpoint must carry the pruned widths, the partial Taylor scores and the rewind weights."""
    args = _fit("pruning_structured.yaml", "--model.init_args.criterion", "taylor", "--trainer.callbacks.rewind")
    args += ["init", "--model.init_args.net.dropout", "0.2"]
    full = run_cli(*args, "--trainer.default_root_dir", str(tmp_path / "full"))
    assert full.trainer.global_step == 15 and widths_of(full.model.net) == [16, 32, 64]
    ckpt = crash_after_checkpoint(args, 7, tmp_path / "ckpt")
    assert torch.load(ckpt, weights_only=True)["pruning"]["widths"] == [22, 45, 90]  # after round 1 (30%)
    resumed = run_cli(*args, "--trainer.default_root_dir", str(tmp_path / "resumed"), "--ckpt_path", str(ckpt))
    assert resumed.trainer.global_step == 15
    assert state_dict_equal(resumed.model.state_dict(), full.model.state_dict())
    assert _untimed(_pruning(resumed.trainer).history) == _untimed(_pruning(full.trainer).history)


def _untimed(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if not k.startswith("cpu_ms")} for row in history]


class WeightsDump(L.Callback):
    """Test-only: each rank writes its final widths and a checksum of its weights to ``<out_dir>/rank<r>.json``."""

    def __init__(self, out_dir: str) -> None:
        self.out_dir = Path(out_dir)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        state = pl_module.state_dict()
        summary = {"widths": widths_of(pl_module.net), "sums": {k: float(v.double().sum()) for k, v in state.items()}}
        (self.out_dir / f"rank{trainer.global_rank}.json").write_text(json.dumps(summary))


@pytest.mark.slow
def test_ddp_structured_pruning_rebuilds_the_ddp_model(tmp_path):
    """2-process CPU DDP, Taylor scores all-reduced: both ranks prune the same channels and, with the DDP wrapper
    rebuilt around the new layers, end with identical weights."""

    fit = run_cli_subprocess(
        "fit",
        "--config",
        str(CONFIGS / "pruning_structured.yaml"),
        "--trainer.accelerator",
        "cpu",
        "--trainer.strategy",
        "ddp",
        "--trainer.devices",
        "2",
        *QUICK,
        *NO_LOG,
        *SHORT,
        "--model.init_args.criterion",
        "taylor",
        "--trainer.callbacks+=tests.helpers.MetricsDump",
        "--trainer.callbacks.out_dir",
        str(tmp_path / "fit"),
        "--trainer.callbacks+=tests.lectures.test_pruning.WeightsDump",
        "--trainer.callbacks.out_dir",
        str(tmp_path / "weights"),
        cwd=tmp_path,
    )
    assert fit.returncode == 0, fit.stderr[-3000:]
    assert "pruning round 2/2" in fit.stderr + fit.stdout
    rank0, rank1 = (json.loads((tmp_path / "fit" / f"fit-rank{r}.json").read_text()) for r in (0, 1))
    assert "val/acc" in rank0 and rank0 == rank1
    w0, w1 = (json.loads((tmp_path / "weights" / f"rank{r}.json").read_text()) for r in (0, 1))
    assert w0["widths"] == [16, 32, 64] and w0 == w1


def test_offline_wandb_run_has_round_metrics_table_and_figure(tmp_path):
    from tests.wandb_reader import read_run

    run_cli(
        "fit",
        "--config",
        CPU,
        "--config",
        str(CONFIGS / "pruning_structured.yaml"),
        *QUICK,
        *SHORT,
        "--trainer.callbacks.target_sparsity",
        "0.3",  # one round
        "--trainer.max_epochs",
        "2",
        "--trainer.limit_train_batches",
        "2",
        "--trainer.logger.init_args.save_dir",
        str(tmp_path / "runs"),
    )
    [log_file] = (tmp_path / "runs" / "wandb").glob("offline-run-*/run-*.wandb")
    for _ in range(50):  # the W&B service may still be writing the offline file when fit returns
        logged = {key for row in read_run(log_file)["history"] for key in row}
        if "prune/accuracy/_type" in logged:
            break
        time.sleep(0.2)
    expected = {"sparsity", "params", "macs", "cpu_ms_b1", "cpu_ms_b64", "val_acc"}
    assert {f"prune/{k}" for k in expected} <= logged
    assert "prune/rounds/_type" in logged and "prune/accuracy/_type" in logged  # the table and the figure
    assert list((log_file.parent / "files" / "figures").glob("prune_accuracy-*.png"))
