"""Life-long learning (lecture 14): importance estimators against hand / loop computations, the penalty, the
metrics, the task stream, every method end to end on the embedded default, and exact resume in the middle of
the stream."""

from __future__ import annotations

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from datamodules.errors import SettingError
from datamodules.streams import TaskStreamDataModule, permute_pixels, rotate_images, split_classes
from lecture_modules.lifelong.continual import TaskNet
from lecture_modules.lifelong.ewc import EWC
from lecture_modules.lifelong.importance import (
    PathIntegral,
    RiemannianWalk,
    fisher_diagonal,
    mas_importance,
    quadratic_penalty,
    scp_importance,
)
from lecture_modules.lifelong.mas import MAS
from lecture_modules.lifelong.metrics import average_accuracy, backward_transfer, forgetting, forward_transfer
from lecture_modules.lifelong.replay import Replay
from lecture_modules.lifelong.rwalk import RWalk
from lecture_modules.nets import NetSpec, build_mlp
from tests.helpers import CONFIGS, QUICK, crash_after_checkpoint, run_cli, state_dict_equal

METHODS = ["finetune", "ewc", "si", "mas", "rwalk", "scp", "replay", "joint"]


def tiny_net(mask: torch.Tensor | None = None) -> TaskNet:
    torch.manual_seed(0)
    net = TaskNet(nn.Sequential(nn.Flatten(), nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 4)))
    net.set_class_mask(mask)
    return net


def tiny_batches(n: int = 10, batch: int = 4, task: int = 0):
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(n, 1, 2, 3, generator=g), torch.randint(0, 2, (n,), generator=g)
    t = torch.full((n,), task)
    return [(x[i : i + batch], y[i : i + batch], t[i : i + batch]) for i in range(0, n, batch)]


def loop_estimate(net: TaskNet, batches, per_sample) -> dict[str, torch.Tensor]:
    """The textbook computation: one autograd backward pass per sample (per class for the true Fisher)."""
    params = dict(net.named_parameters())
    sums, n = {k: torch.zeros_like(p) for k, p in params.items()}, 0
    for x, y, t in batches:
        for i in range(len(y)):
            for weight, value in per_sample(net(x[i : i + 1], t[i : i + 1])[0], y[i]):
                grads = torch.autograd.grad(value, list(params.values()), retain_graph=True)
                for k, g in zip(params, grads):
                    sums[k] += weight(g)
            n += 1
    return {k: v / n for k, v in sums.items()}


def assert_close(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-7)


# ------------------------------------------------------------------ importance estimators
@pytest.mark.parametrize("vectorize", [True, False])
@pytest.mark.parametrize("masked", [False, True])
def test_fisher_matches_per_sample_loop(vectorize, masked):
    mask = torch.tensor([[True, True, False, False]]) if masked else None
    net, batches = tiny_net(mask), tiny_batches()

    def empirical(logits, y):
        yield (lambda g: g.pow(2)), F.cross_entropy(logits[None], y[None])

    def true(logits, y):
        log_p = F.log_softmax(logits, -1)
        for c in range(4):
            p = float(log_p[c].exp())
            if p > 0:
                yield (lambda g, p=p: p * g.pow(2)), log_p[c]

    for kind, per_sample in (("empirical", empirical), ("true", true)):
        got = fisher_diagonal(net, batches, kind, vectorize=vectorize, chunk_size=2)
        assert_close(got, loop_estimate(net, batches, per_sample))
        assert all(torch.isfinite(v).all() for v in got.values())


def test_true_and_empirical_fisher_differ_and_are_nonnegative_with_parameter_shapes():
    net, batches = tiny_net(), tiny_batches()
    shapes = {k: p.shape for k, p in net.named_parameters()}
    emp, true = fisher_diagonal(net, batches, "empirical"), fisher_diagonal(net, batches, "true")
    for estimate in (emp, true, mas_importance(net, batches), scp_importance(net, batches, slices=7)):
        assert {k: v.shape for k, v in estimate.items()} == shapes
        assert all((v >= 0).all() and v.sum() > 0 for v in estimate.values())
    assert not torch.allclose(emp["body.3.weight"], true["body.3.weight"])


def test_mas_matches_per_sample_loop():
    net, batches = tiny_net(), tiny_batches()
    got = mas_importance(net, batches, vectorize=False)
    assert_close(got, mas_importance(net, batches))
    assert_close(got, loop_estimate(net, batches, lambda logits, y: [((lambda g: g.abs()), logits.pow(2).sum())]))


def test_batch_level_mas_is_the_absolute_gradient_of_each_batch_mean():
    """per_sample=False (HW14's estimate): |d mean_batch ||f||^2 / d theta| per batch, averaged over batches;
    with equal batches, never above the per-sample estimate (triangle inequality) and below it where signs cancel."""
    net, batches = tiny_net(), tiny_batches(n=12, batch=4)
    params = dict(net.named_parameters())
    expected = {k: torch.zeros_like(p) for k, p in params.items()}
    for x, _, t in batches:
        grads = torch.autograd.grad(net(x, t).pow(2).sum(1).mean(), list(params.values()))
        for k, g in zip(params, grads):
            expected[k] += g.abs() / len(batches)
    got = mas_importance(net, batches, per_sample=False)
    assert_close(got, expected)
    per_sample = mas_importance(net, batches)
    assert all((got[k] <= per_sample[k] + 1e-7).all() for k in got)
    assert any((got[k] < per_sample[k] - 1e-4).any() for k in got)


def test_scp_equals_explicit_slices():
    """SCP's diag(J^T M J) shortcut equals averaging the squared gradients of the L projections one by one."""
    net, batches = tiny_net(), tiny_batches()
    got = scp_importance(net, batches, slices=5, generator=torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)
    params = dict(net.named_parameters())
    expected = {k: torch.zeros_like(p) for k, p in params.items()}
    for x, _, t in batches:
        xi = torch.randn(5, 4, generator=g)
        xi = xi / xi.norm(dim=1, keepdim=True)
        mean_out = net(x, t).mean(0)
        for direction in xi:
            grads = torch.autograd.grad(mean_out @ direction, list(params.values()), retain_graph=True)
            for k, gr in zip(params, grads):
                expected[k] += gr.pow(2) / 5
    assert_close(got, {k: v / len(batches) for k, v in expected.items()})


def test_importance_estimation_leaves_train_mode_and_gradients_alone():
    net = tiny_net()
    net.train()
    fisher_diagonal(net, tiny_batches())
    assert net.training and all(p.grad is None for p in net.parameters())


def test_penalty_is_zero_at_the_anchor_and_positive_after_a_perturbation():
    net = tiny_net()
    params = dict(net.named_parameters())
    anchors = {k: p.detach().clone() for k, p in params.items()}
    importance = fisher_diagonal(net, tiny_batches())
    assert float(quadratic_penalty(params, anchors, importance)) == 0.0
    with torch.no_grad():
        params["body.1.weight"].add_(0.1)
    penalty = quadratic_penalty(params, anchors, importance)
    assert float(penalty) == pytest.approx(0.01 * float(importance["body.1.weight"].sum()), rel=1e-5)
    assert penalty > 0 and penalty.requires_grad


def consolidate_four_tasks(model) -> None:
    """Close 4 tasks whose importances are m_k = k everywhere, moving the weights between them."""
    model.estimate_importance = lambda task, *_: {n: torch.full_like(p, task + 1.0) for n, p in model.named_params()}
    for k in range(4):
        with torch.no_grad():
            next(model.net.parameters()).add_(1.0)  # the weights move between tasks
        model.consolidate(k)


def test_accumulated_importance_is_the_sum_or_the_mean_and_survives_a_checkpoint():
    """After 4 tasks with importances m_k = k: the running sum holds 1 + 2 + 3 + 4 = 10, the mean 2.5; one penalty
    pair each, anchored at the latest weights; the mean's running sum travels in the checkpoint."""
    net = NetSpec(kind="mlp", widths=[3], batch_norm=False)
    totals = {}
    for accumulate in ("sum", "mean"):
        model = MAS(num_classes=2, input_shape=(1, 2, 2), net=net, accumulate=accumulate)
        consolidate_four_tasks(model)
        [(anchors, importance)] = model.penalties
        assert all(torch.equal(anchors[n], p) for n, p in model.named_params())
        totals[accumulate] = {float(v.unique()) for v in importance.values()}
        restored = MAS(num_classes=2, input_shape=(1, 2, 2), net=net, accumulate=accumulate)
        restored.load_method_state(model.method_state())
        assert restored.penalties[0][1].keys() == importance.keys()
        if accumulate == "mean":  # the sum 10 carries on, the penalty holds 10 / 4
            assert {float(v.unique()) for v in restored.importance_sum.values()} == {10.0}
    assert totals == {"sum": {10.0}, "mean": {2.5}}
    with pytest.raises(SettingError, match=r"^model\.init_args\.accumulate must be 'sum' or 'mean', got 'product'$"):
        MAS(accumulate="product")
    with pytest.raises(SettingError, match=r"^model\.init_args\.accumulate"):  # HW14's compounding left the product
        MAS(accumulate="hw14")


def test_settings_name_their_config_key_and_a_blown_up_penalty_names_its_weight():
    with pytest.raises(SettingError, match=r"^model\.init_args\.penalty_weight must be >= 0, got -1$"):
        EWC(penalty_weight=-1)
    with pytest.raises(SettingError, match=r"^model\.init_args\.importance_batch_size must be >= 1, got 0$"):
        MAS(importance_batch_size=0)
    with pytest.raises(SettingError, match=r"^model\.init_args\.eps must be > 0, got 0$"):
        RWalk(eps=0)
    with pytest.raises(SettingError, match=r"^model\.init_args\.replay_weight must be >= 0, got -1$"):
        Replay(replay_weight=-1)
    ewc = EWC(penalty_weight=5000.0)
    hint = ewc.non_finite_hint("penalty")
    assert hint.startswith("lower the penalty weight model.init_args.penalty_weight (now 5000)")
    assert ewc.non_finite_hint("ce").startswith("lower the learning rate optimizer.init_args.lr;")


def test_old_hyper_parameters_fold_into_net_and_build_the_same_network():
    """Checkpoints written before ``net``: backbone/hidden/batch_norm/dropout become one spec (hidden null meant
    HW14's 1024-512-256), MAS's estimate_on 'current' is dropped, and the investigation's settings name its class."""
    old = {"num_classes": 10, "input_shape": (1, 8, 8), "backbone": "mlp", "hidden": [32, 16], "batch_norm": False,
           "dropout": 0.2, "penalty_weight": 5.0, "fisher": "true"}  # fmt: skip
    new = EWC.upgrade_hparams(old)
    assert new["net"] == {"kind": "mlp", "widths": [32, 16], "batch_norm": False, "dropout": 0.2}
    assert not {"backbone", "hidden", "batch_norm", "dropout"} & set(new)
    torch.manual_seed(0)
    rebuilt = EWC(**new)
    torch.manual_seed(0)
    body = TaskNet(build_mlp((1, 8, 8), 10, [32, 16], False, 0.2))
    assert state_dict_equal(rebuilt.net.state_dict(), body.state_dict())
    assert rebuilt.hparams.fisher == "true" and rebuilt.hparams.net == new["net"]
    assert EWC.upgrade_hparams({**old, "hidden": None})["net"]["widths"] == [1024, 512, 256]
    assert EWC.upgrade_hparams({**old, "backbone": "cnn", "hidden": None})["net"]["widths"] == [32, 64, 128]
    mas = {**old, "accumulate": "mean", "estimate_on": "current", "per_sample": False}
    del mas["fisher"]
    upgraded = MAS.upgrade_hparams(mas)
    assert "estimate_on" not in upgraded and MAS(**upgraded).hparams.accumulate == "mean"
    with pytest.raises(ValueError, match="MASHW14"):
        MAS.upgrade_hparams({**mas, "estimate_on": "seen"})
    assert MAS.upgrade_hparams(new) == new  # already upgraded: unchanged


def test_si_path_integral_on_a_quadratic():
    """SGD on L = theta^2 / 2 (g = theta, delta = -lr theta): omega = sum lr theta_t^2, Omega = omega / (D^2 + xi)."""
    theta = nn.Parameter(torch.tensor([1.0, -2.0]))
    path, lr, thetas = PathIntegral(), 0.1, []
    named = lambda: [("theta", theta)]  # noqa: E731
    path.begin_task(named())
    for _ in range(3):
        thetas.append(theta.detach().clone())
        theta.grad = theta.detach().clone()
        path.before_step(named())
        with torch.no_grad():
            theta -= lr * theta.grad
        path.after_step(named())
    omega = sum(lr * th.pow(2) for th in thetas)
    torch.testing.assert_close(path.omega["theta"], omega)
    delta = theta.detach() - torch.tensor([1.0, -2.0])
    torch.testing.assert_close(path.importance(named(), 0.1)["theta"], omega / (delta.pow(2) + 0.1))


def test_rwalk_score_and_online_fisher_on_a_quadratic():
    theta = nn.Parameter(torch.tensor([1.0]))
    walk = RiemannianWalk(alpha=0.5, eps=1e-8)
    named = lambda: [("theta", theta)]  # noqa: E731
    walk.begin_task(named())
    theta.grad = torch.tensor([1.0])
    walk.before_step(named())
    with torch.no_grad():
        theta -= 0.1
    walk.after_step(named())
    assert float(walk.fisher["theta"]) == 1.0  # first step: F = g^2
    assert float(walk.score["theta"]) == pytest.approx(0.1 / (0.5 * 1.0 * 0.01 + 1e-8))


# ------------------------------------------------------------------ metrics
def test_continual_metrics_on_a_hand_matrix():
    r = [[0.9, 0.1, 0.2], [0.6, 0.8, 0.3], [0.5, 0.7, 0.9]]
    assert average_accuracy(r) == pytest.approx((0.5 + 0.7 + 0.9) / 3)
    assert backward_transfer(r) == pytest.approx(((0.5 - 0.9) + (0.7 - 0.8)) / 2)
    assert forgetting(r) == pytest.approx(((0.9 - 0.5) + (0.8 - 0.7)) / 2)
    assert forward_transfer(r, [0.1, 0.1, 0.1]) == pytest.approx(((0.1 - 0.1) + (0.3 - 0.1)) / 2)
    assert backward_transfer(r[:1]) is None and average_accuracy(r[:1]) == 0.9


# ------------------------------------------------------------------ task stream
def test_stream_tasks_are_permutations_rotations_and_class_splits():
    x = torch.arange(24.0).view(2, 1, 3, 4)
    perm = torch.randperm(12)
    assert torch.equal(permute_pixels(x, perm).flatten(1).sort(1).values, x.flatten(1))
    assert torch.equal(rotate_images(x, 0.0), x)
    assert torch.allclose(rotate_images(rotate_images(x[:, :, :3, :3], 90.0), -90.0), x[:, :, :3, :3], atol=1e-5)
    assert split_classes(list(range(10)), 3) == [[0, 1, 2, 3], [4, 5, 6], [7, 8, 9]]

    split = TaskStreamDataModule(scenario="split_task", num_tasks=5)
    mask = split.class_mask()
    assert mask.shape == (5, 10) and mask.sum(1).tolist() == [2] * 5
    y = split.task_data(3, "train").tensors[1]
    assert set(y.tolist()) == {6, 7}
    assert TaskStreamDataModule(scenario="split_class").class_mask() is None

    permuted = TaskStreamDataModule(num_tasks=3, epochs_per_task=2)
    a, b = permuted.task_data(0, "val").tensors[0], permuted.task_data(1, "val").tensors[0]
    assert not torch.equal(a, b) and torch.equal(a.flatten(1).sort(1).values, b.flatten(1).sort(1).values)
    assert [permuted.task_of_epoch(e) for e in range(7)] == [0, 0, 1, 1, 2, 2, 2]
    shards = [list(permuted.shard_batches(0, 10, 4, world=2, rank=r)) for r in (0, 1)]
    whole = list(permuted.shard_batches(0, 10, 4))
    for (y0, y1), y in zip(((s0[1], s1[1]) for s0, s1 in zip(*shards)), (w[1] for w in whole)):
        assert sorted(torch.cat([y0, y1]).tolist()) == sorted(y.tolist())
    (val_x, *_), *_ = permuted.shard_batches(1, None, 10_000, split="val")  # every val sample of task 1, one batch
    ref = permuted.task_data(1, "val").tensors[0]
    assert len(val_x) == len(ref) and torch.equal(val_x.flatten(1).sort(0).values, ref.flatten(1).sort(0).values)


def test_stream_rejects_bad_settings():
    with pytest.raises(ValueError, match="scenario"):
        TaskStreamDataModule(scenario="shuffled")
    with pytest.raises(ValueError, match="angles"):
        TaskStreamDataModule(scenario="rotated", num_tasks=2, angles=[0.0])
    with pytest.raises(ValueError, match="class_order"):
        TaskStreamDataModule(scenario="split_task", class_order=[0, 0, 1]).task_classes()


def test_stream_needs_dataloader_reload_every_epoch(tmp_path):
    with pytest.raises(ValueError, match="reload_dataloaders_every_n_epochs"):
        run_cli(*stream_args("ewc", tmp_path), "--trainer.reload_dataloaders_every_n_epochs", "0")


# ------------------------------------------------------------------ end to end
def stream_args(method: str, root, tasks: int = 2, batches: int = 3, logger: bool = False) -> list[str]:
    return [
        "fit",
        "--config",
        str(CONFIGS / f"{method}.yaml"),
        *QUICK,
        *([] if logger else ["--trainer.logger", "false"]),
        "--trainer.callbacks=[]",
        "--trainer.accelerator",
        "cpu",
        "--trainer.devices",
        "1",
        "--trainer.default_root_dir",
        str(root),
        "--data.init_args.num_tasks",
        str(tasks),
        "--data.init_args.epochs_per_task",
        "1",
        "--trainer.max_epochs",
        str(tasks),
        "--trainer.limit_train_batches",
        str(batches),
        "--model.init_args.net.widths",
        "[32]",
    ]


@pytest.mark.parametrize("method", METHODS)
def test_method_runs_the_stream_end_to_end(method, tmp_path):
    cli = run_cli(*stream_args(method, tmp_path))
    model = cli.model
    assert cli.trainer.global_step == 6 and model.tasks_done == 2
    assert len(model.matrix) == 2 and all(len(row) == 2 for row in model.matrix)
    assert len(model.random_init_acc) == 2 and len(model.curves) == 2
    metrics = cli.trainer.callback_metrics
    assert {"val/acc", "val/acc_task0", "val/acc_task1"} <= set(metrics)
    if hasattr(model, "penalties"):
        assert "train/loss_penalty" in metrics  # the second task was regularised
        expected = 2 if method == "ewc" else 1  # EWC: one penalty per task; the others accumulate
        assert len(model.penalties) == expected
        for anchors, importance in model.penalties:
            assert anchors.keys() == importance.keys() == dict(model.named_params()).keys()
            assert all((v >= 0).all() and torch.isfinite(v).all() for v in importance.values())
    if method == "replay":
        assert "train/loss_replay" in metrics and len(model.memory[0]) == 200


def test_ewc_online_keeps_one_decayed_penalty_and_true_fisher_runs(tmp_path):
    online_args = stream_args("ewc", tmp_path / "online", tasks=3, batches=2)
    online = run_cli(*online_args, "--model.init_args.online", "true", "--model.init_args.gamma", "0.5").model
    assert len(online.penalties) == 1 and online.tasks_done == 3
    args = [*stream_args("ewc", tmp_path / "true", tasks=3, batches=2), "--model.init_args.fisher", "true"]
    true = run_cli(*args, "--model.init_args.importance_samples", "40").model
    assert len(true.penalties) == 3


def test_joint_refuses_a_current_task_only_stream(tmp_path):
    with pytest.raises(ValueError, match="train_on"):
        run_cli(*stream_args("joint", tmp_path), "--data.init_args.train_on", "current")


def test_a_plain_image_datamodule_is_refused_with_the_setting_to_change(tmp_path):
    with pytest.raises(TypeError, match="TaskStreamDataModule"):
        run_cli(
            *stream_args("ewc", tmp_path)[:-10],  # without the stream's own settings
            "--data",
            "datamodules.image.ImageDataModule",
        )


@pytest.mark.parametrize("scenario", ["rotated", "split_class"])
def test_rotated_and_class_incremental_streams_without_validation_still_fill_the_matrix(scenario, tmp_path):
    args = [*stream_args("si", tmp_path), "--data.init_args.scenario", scenario, "--trainer.limit_val_batches", "0"]
    model = run_cli(*args).model
    assert len(model.matrix) == 2 and model.curves == []  # rows measured at the task ends, not by validation


def test_task_incremental_split_masks_other_tasks_classes(tmp_path):
    cli = run_cli(*stream_args("finetune", tmp_path), "--data.init_args.scenario", "split_task")
    x, _, t = cli.datamodule.task_data(1, "val").tensors[:8]
    logits = cli.model(x[:8], t[:8])
    assert torch.isinf(logits[:, [0, 1, 2, 3, 4]]).all() and torch.isfinite(logits[:, 5:]).all()


def test_offline_wandb_run_has_matrix_metrics_table_and_figures(tmp_path):
    """After every task: cl/* metrics, the accuracy-matrix table and heat map; at the end the accuracy curves."""
    import time

    from tests.wandb_reader import read_run

    run_cli(*stream_args("ewc", tmp_path, logger=True), "--trainer.logger.init_args.save_dir", str(tmp_path / "runs"))
    [log_file] = (tmp_path / "runs" / "wandb").glob("offline-run-*/run-*.wandb")
    for _ in range(50):  # the W&B service may still be writing the offline file when fit returns
        logged = {key for row in read_run(log_file)["history"] for key in row}
        if "cl/accuracy_curves/_type" in logged:
            break
        time.sleep(0.2)
    assert {"cl/avg_acc", "cl/bwt", "cl/forgetting", "cl/fwt", "val/acc_task0", "val/acc_task1"} <= logged
    assert {"cl/accuracy_matrix/_type", "cl/accuracy_matrix_heatmap/_type", "cl/accuracy_curves/_type"} <= logged
    figures = log_file.parent / "files" / "figures"
    assert len(list(figures.glob("cl_accuracy_matrix_heatmap-*.png"))) == 2 and list(
        figures.glob("cl_accuracy_curves-*")
    )


# ------------------------------------------------------------------ resume
@pytest.mark.parametrize("method", ["ewc", "si", "rwalk", "replay"])
def test_resume_in_the_middle_of_task_three_is_exact(method, tmp_path):
    """3 tasks x 1 epoch x 4 batches = 12 steps; crash at step 10 (inside task 3), resume, compare everything."""
    args = [*stream_args(method, tmp_path / "x", tasks=3, batches=4), "--model.init_args.net.dropout", "0.2"]
    full = run_cli(*args, "--trainer.default_root_dir", str(tmp_path / "full")).model
    ckpt = crash_after_checkpoint(args, 10, tmp_path / "ckpt")
    state = torch.load(ckpt, weights_only=True)
    assert state["lifelong"]["tasks_done"] == 2  # the crash happened in the third task
    resumed = run_cli(*args, "--trainer.default_root_dir", str(tmp_path / "resumed"), "--ckpt_path", str(ckpt)).model
    assert state_dict_equal(resumed.state_dict(), full.state_dict())
    assert resumed.matrix == full.matrix and resumed.random_init_acc == full.random_init_acc
    a, b = _flat(resumed.method_state()), _flat(full.method_state())
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


class AdamSteps(L.Callback):
    """Adam's step count for the network's first parameter when every epoch starts (probe for the reset)."""

    def __init__(self) -> None:
        self.steps: list[int] = []

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        state, first = trainer.optimizers[0].state, next(pl_module.net.parameters())
        self.steps.append(int(state[first]["step"]) if first in state else 0)


RESET = "--trainer.callbacks+=callbacks.ResetOptimizerPerTask"
PROBE = "--trainer.callbacks+=tests.lectures.test_lifelong.AdamSteps"


@pytest.mark.parametrize("reset", [False, True])
def test_optimizer_state_is_cleared_when_a_task_begins_and_only_then(reset, tmp_path):
    """2 tasks x 2 epochs x 3 steps: Adam's step count at each epoch start is 0, 3, 6, 9 when the state is kept
    and 0, 3, 0, 3 with ResetOptimizerPerTask (cleared at the second task, not between a task's epochs)."""
    args = [*stream_args("ewc", tmp_path, tasks=2, batches=3), "--data.init_args.epochs_per_task", "2"]
    cli = run_cli(*args, "--trainer.max_epochs", "4", *([RESET] if reset else []), PROBE)
    [probe] = [c for c in cli.trainer.callbacks if isinstance(c, AdamSteps)]
    assert probe.steps == ([0, 3, 0, 3] if reset else [0, 3, 6, 9])


def test_reset_optimizer_callback_refuses_a_plain_datamodule(tmp_path):
    with pytest.raises(TypeError, match="ResetOptimizerPerTask needs a task stream"):
        run_cli(
            "fit", "--config", str(CONFIGS / "classification.yaml"), *QUICK, "--trainer.logger", "false",
            "--trainer.callbacks=[]", "--trainer.default_root_dir", str(tmp_path), RESET,
        )  # fmt: skip


@pytest.mark.parametrize("step", [6, 8])
def test_resume_with_optimizer_reset_is_exact_inside_a_task_and_at_its_boundary(step, tmp_path):
    """3 tasks x 4 steps with ResetOptimizerPerTask: a crash inside task 2 (step 6) or right at its end (step 8,
    saved on its last batch, before task 3 resets the optimiser; Lightning resumes straight into task 3 without
    calling on_train_epoch_start) resumes to the uninterrupted run's weights, matrix and optimiser state."""
    args = [*stream_args("si", tmp_path / "x", tasks=3, batches=4), RESET]
    full = run_cli(*args, "--trainer.default_root_dir", str(tmp_path / "full"))
    ckpt = crash_after_checkpoint(args, step, tmp_path / "ckpt")
    resumed = run_cli(*args, "--trainer.default_root_dir", str(tmp_path / "resumed"), "--ckpt_path", str(ckpt))
    assert state_dict_equal(resumed.model.state_dict(), full.model.state_dict())
    assert resumed.model.matrix == full.model.matrix
    a, b = (_flat(c.trainer.optimizers[0].state_dict()["state"]) for c in (resumed, full))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _flat(value, prefix: str = "") -> dict[str, torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return {prefix: value}
    items = value.items() if isinstance(value, dict) else enumerate(value)
    return {k: v for key, item in items for k, v in _flat(item, f"{prefix}/{key}").items()}


# ------------------------------------------------------------------ multi-process
def _si_omega(net: TaskNet, batches, world: int = 1, rank: int = 0) -> dict[str, torch.Tensor]:
    """SI's path integral over one SGD step per batch; with ``world`` > 1 the network is DDP-wrapped and every
    process trains on its part of each batch (gradients averaged by DDP, as in a Lightning DDP run)."""
    model = net if world == 1 else nn.parallel.DistributedDataParallel(net)
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    path = PathIntegral()
    path.begin_task(net.named_parameters())
    for x, y, t in batches:
        opt.zero_grad()
        F.cross_entropy(model(x[rank::world], t[rank::world]), y[rank::world]).backward()
        path.before_step(net.named_parameters())
        opt.step()
        path.after_step(net.named_parameters())
    return path.importance(net.named_parameters(), 0.1)


def _estimates(world: int = 1, rank: int = 0, all_reduce=None) -> dict[str, dict[str, torch.Tensor]]:
    net, batches = tiny_net(), tiny_batches(n=12, batch=4)
    shard = [(x[rank::world], y[rank::world], t[rank::world]) for x, y, t in batches]
    return {
        "empirical": fisher_diagonal(net, shard, "empirical", all_reduce),
        "true": fisher_diagonal(net, shard, "true", all_reduce),
        "mas": mas_importance(net, shard, all_reduce),
        "mas_batch": mas_importance(net, shard, all_reduce, per_sample=False),
        "scp": scp_importance(net, shard, 6, torch.Generator().manual_seed(0), all_reduce),
        "si": _si_omega(net, batches, world, rank),
    }


def _ddp_worker(rank: int, world: int, port: int, out_dir: str) -> None:
    import os

    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)

    def all_reduce(tensor: torch.Tensor) -> torch.Tensor:
        tensor = tensor.clone()
        dist.all_reduce(tensor)
        return tensor

    torch.save(_estimates(world, rank, all_reduce), f"{out_dir}/rank{rank}.pt")
    dist.destroy_process_group()


@pytest.mark.slow
def test_importances_from_two_processes_equal_the_single_process_ones(tmp_path):
    """Fisher (empirical and true), MAS (per sample and per batch) and SCP are reduced over processes; SI's path
    integral follows the DDP-averaged gradients: both processes end with the single-process importances of the same
    data."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_ddp_worker, args=(2, port, str(tmp_path)), nprocs=2, join=True)
    single = _estimates()
    for rank in (0, 1):
        got = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        for kind, values in single.items():
            for name, value in values.items():
                torch.testing.assert_close(got[kind][name], value, rtol=1e-5, atol=1e-8, msg=f"{kind} {name}")


def two_process_penalty(args: list[str], root) -> tuple[TaskNet, dict[str, torch.Tensor]]:
    """Run ``args`` (a ``fit``) on 2 CPU processes with a checkpoint; its one penalty: the network at the stored
    anchors and the importance."""
    from lecture_modules.nets import build_mlp
    from tests.helpers import run_cli_subprocess, with_checkpoints

    ddp = ["--trainer.strategy", "ddp", "--trainer.devices", "2"]
    fit = run_cli_subprocess(*args, *ddp, *with_checkpoints(root / "ckpt"), cwd=root)
    assert fit.returncode == 0, fit.stderr[-3000:]
    [ckpt] = (root / "ckpt").glob("*.ckpt")
    [[anchors, importance]] = torch.load(ckpt, weights_only=True)["lifelong"]["method"]["penalties"]
    net = TaskNet(build_mlp((1, 8, 8), 10, [32], False, 0.0))
    net.load_state_dict(anchors)
    return net, importance


@pytest.mark.slow
def test_ddp_ewc_fit_stores_the_fisher_of_the_whole_task(tmp_path):
    """A 2-process Lightning run: the Fisher in its checkpoint equals a single-process estimate on the whole of
    task 0's training data at the stored anchors (the processes' shards are all-reduced)."""
    net, fisher = two_process_penalty(stream_args("ewc", tmp_path / "fit", batches=2), tmp_path)
    expected = fisher_diagonal(net, TaskStreamDataModule(num_tasks=2).shard_batches(0, None, 64))
    for name, value in expected.items():
        torch.testing.assert_close(fisher[name], value, rtol=1e-4, atol=1e-9)
