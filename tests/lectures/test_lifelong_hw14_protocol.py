"""The MAS-vs-HW14 investigation's protocols (``benchmarks/investigations/hw14_protocol.py``): HW14's compounding
sum of importances, re-estimating every seen task at each boundary (also under DDP), and MAS with HW14's whole
protocol in one Lightning fit against a plain PyTorch loop, step for step."""

from __future__ import annotations

import copy

import lightning as L
import pytest
import torch
import torch.nn.functional as F

from benchmarks.investigations.hw14_protocol import MASHW14, SCPHW14
from callbacks.reset_optimizer import ResetOptimizerPerTask
from datamodules.samplers import ResumableSampler
from datamodules.streams import TaskStreamDataModule
from lecture_modules.lifelong.importance import mas_importance, quadratic_penalty, scp_importance
from lecture_modules.nets import NetSpec
from tests.helpers import run_cli
from tests.lectures.test_lifelong import assert_close, consolidate_four_tasks, stream_args, two_process_penalty

HW14 = {"mas": "--model=benchmarks.investigations.hw14_protocol.MASHW14",
        "scp": "--model=benchmarks.investigations.hw14_protocol.SCPHW14"}  # fmt: skip


def test_hw14_accumulation_compounds_old_tasks_and_survives_a_checkpoint():
    """After 4 tasks with importances m_k = k, HW14's compounding holds 4 m_1 + 2 m_2 + m_3 + m_4 = 15 in one pair
    anchored at the latest weights; the running totals were 1, 3, 7, 15, and their sum (26) carries on to the next
    task through the checkpoint."""
    net = NetSpec(kind="mlp", widths=[3], batch_norm=False)
    model = MASHW14(num_classes=2, input_shape=(1, 2, 2), net=net, accumulate="hw14")
    consolidate_four_tasks(model)
    [(anchors, importance)] = model.penalties
    assert all(torch.equal(anchors[n], p) for n, p in model.named_params())
    assert {float(v.unique()) for v in importance.values()} == {15.0}
    restored = MASHW14(num_classes=2, input_shape=(1, 2, 2), net=net, accumulate="hw14")
    restored.load_method_state(model.method_state())
    assert restored.penalties[0][1].keys() == importance.keys()
    assert {float(v.unique()) for v in restored.importance_sum.values()} == {1 + 3 + 7 + 15}


def test_with_the_lecture_settings_the_investigation_classes_are_the_lecture_methods():
    net = NetSpec(kind="mlp", widths=[3], batch_norm=False)
    from lecture_modules.lifelong.mas import MAS

    for accumulate in ("sum", "mean"):
        a = MAS(num_classes=2, input_shape=(1, 2, 2), net=net, accumulate=accumulate)
        b = MASHW14(num_classes=2, input_shape=(1, 2, 2), net=net, accumulate=accumulate)
        b.load_state_dict(a.state_dict())
        for model in (a, b):
            consolidate_four_tasks(model)
        assert_close(a.penalties[0][1], b.penalties[0][1])
    old = {"backbone": "mlp", "hidden": [3], "batch_norm": False, "dropout": 0.0, "estimate_on": "seen"}
    assert MASHW14.upgrade_hparams(old)["estimate_on"] == "seen"  # the investigation class still takes it


@pytest.mark.parametrize("method", ["mas", "scp"])
def test_estimate_on_seen_re_estimates_every_seen_task_at_the_current_weights(method, tmp_path):
    """estimate_on seen (HW14's 2021 protocol): after task 3 the one penalty holds the mean (sum) of the three
    tasks' importances, all estimated at the anchor (the current weights), not the ones of when each task ended."""

    def seen_estimates(model) -> list[dict[str, torch.Tensor]]:
        hp = model.hparams
        directions = torch.Generator().manual_seed(model.stream.seed * 7919 + 2)  # task 3's boundary generator
        out = []
        for k in range(3):
            batches = list(model.stream.shard_batches(k, 30, hp.importance_batch_size))
            if method == "mas":
                out.append(mas_importance(model.net, batches, per_sample=hp.per_sample))
            else:
                out.append(scp_importance(model.net, batches, hp.slices, directions))
        return out

    extra = [HW14[method], "--model.init_args.estimate_on", "seen", "--model.init_args.importance_samples", "30"]
    for accumulate in ("mean", "sum"):
        args = stream_args(method, tmp_path / accumulate, tasks=3, batches=2)
        model = run_cli(*args, *extra, "--model.init_args.accumulate", accumulate).model
        [(anchors, importance)] = model.penalties
        assert all(torch.equal(anchors[n], p) for n, p in model.named_params())
        estimates = seen_estimates(model)
        total = {n: sum(e[n] for e in estimates) for n in anchors}
        assert_close(importance, {n: v / 3 for n, v in total.items()} if accumulate == "mean" else total)
    current = run_cli(
        *stream_args(method, tmp_path / "current", tasks=3, batches=2), "--model.init_args.accumulate", "mean"
    ).model  # fmt: skip  (the lecture's own MAS / SCP)
    [(_, importance)] = current.penalties  # each task estimated when it ended: not the re-estimated mean
    mean_now = {n: sum(e[n] for e in seen_estimates(current)) / 3 for n in importance}
    assert any(not torch.allclose(importance[n], mean_now[n]) for n in importance)


def test_estimate_on_rejects_unknown_values_and_compounding():
    with pytest.raises(ValueError, match=r"MASHW14\.estimate_on"):
        MASHW14(estimate_on="all")
    with pytest.raises(ValueError, match=r"MASHW14\.accumulate"):
        MASHW14(accumulate="product")
    with pytest.raises(ValueError, match="accumulate 'hw14'"):
        SCPHW14(estimate_on="seen", accumulate="hw14")


def test_mas_with_hw14s_protocol_in_one_fit_equals_a_plain_loop_step_for_step(tmp_path):
    """HW14's MAS procedure written as a plain PyTorch loop (a new Adam per task; after each task the importance
    re-estimated at the current weights on every seen task, the mean of the batch-level estimates, anchored
    there) ends at the weights of one Lightning fit of MASHW14 (``estimate_on: seen``, ``accumulate: mean``,
    ``per_sample: false``, ResetOptimizerPerTask) fed the same initial weights and batches: 3 tasks x 2 epochs."""
    tasks, epochs, lam, lr, samples, ibs = 3, 2, 5.0, 1e-3, 200, 150
    L.seed_everything(0)
    stream = TaskStreamDataModule(num_tasks=tasks, epochs_per_task=epochs, seed=3)
    model = MASHW14(
        net=NetSpec(kind="mlp", widths=[32, 16], batch_norm=False), penalty_weight=lam, importance_samples=samples,
        importance_batch_size=ibs,
        accumulate="mean", per_sample=False, estimate_on="seen",
    )  # fmt: skip
    model.configure_optimizers = lambda: torch.optim.Adam(model.parameters(), lr=lr)
    net = copy.deepcopy(model.net)  # the plain loop's network, from the same initial weights
    trainer = L.Trainer(
        max_epochs=tasks * epochs, reload_dataloaders_every_n_epochs=1, num_sanity_val_steps=0, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        callbacks=[ResetOptimizerPerTask()], accelerator="cpu", devices=1, default_root_dir=tmp_path,
    )  # fmt: skip
    trainer.fit(model, datamodule=stream)

    def importance(task: int) -> dict[str, torch.Tensor]:
        grads = []
        for x, _, _ in stream.shard_batches(task, samples, ibs):
            net.zero_grad()
            net(x).pow(2).sum(1).mean().backward()
            grads.append({n: p.grad.abs() for n, p in net.named_parameters()})
        return {n: sum(g[n] for g in grads) / len(grads) for n in grads[0]}

    omega = anchor = None
    for task in range(tasks):
        optimizer = torch.optim.Adam(net.parameters(), lr=lr)
        x_all, y_all, t_all = stream.task_data(task, "train").tensors
        for epoch in range(task * epochs, (task + 1) * epochs):
            sampler = ResumableSampler(len(y_all), seed=stream.seed)  # the stream's per-epoch shuffling
            sampler.set_epoch(epoch)
            for idx in torch.tensor(list(sampler)).split(stream.base.batch_size):
                loss = F.cross_entropy(net(x_all[idx], t_all[idx]), y_all[idx])
                if omega is not None:
                    loss = loss + lam * quadratic_penalty(dict(net.named_parameters()), anchor, omega)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        seen = [importance(k) for k in range(task + 1)]
        omega = {n: sum(s[n] for s in seen) / len(seen) for n in seen[0]}
        anchor = {n: p.detach().clone() for n, p in net.named_parameters()}
    for (name, fitted), plain in zip(model.net.named_parameters(), net.parameters()):
        torch.testing.assert_close(fitted.detach(), plain.detach(), rtol=0, atol=1e-6, msg=name)


@pytest.mark.slow
def test_ddp_mas_estimate_on_seen_stores_the_mean_over_every_seen_task(tmp_path):
    """A 2-process run with estimate_on seen (HW14's 2021 protocol) over 3 tasks: the checkpoint of the last epoch
    (written before the last task is closed at the end of fit) holds one penalty, the mean of the first two tasks'
    batch-level MAS importances re-estimated at the stored anchors, equal to a single process's estimate on the
    whole of each batch (each process holds half of every batch)."""
    args = stream_args("mas", tmp_path / "fit", tasks=3, batches=2)
    args += [HW14["mas"], "--model.init_args.estimate_on", "seen", "--model.init_args.importance_samples", "120"]
    args += ["--model.init_args.importance_batch_size", "40"]  # 3 batches per task, 20 images per process each
    net, importance = two_process_penalty(args, tmp_path)
    stream = TaskStreamDataModule(num_tasks=3)
    first, second = (mas_importance(net, stream.shard_batches(k, 120, 40), per_sample=False) for k in range(2))
    for name, value in importance.items():
        torch.testing.assert_close(value, (first[name] + second[name]) / 2, rtol=1e-4, atol=1e-9)
