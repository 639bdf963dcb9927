"""Where MCD's time goes, against source-only's, on real MNIST -> MNIST-M (issue 21, item 4).

The expectation: a source-only batch passes 64 source images through G forward and backward once. An MCD batch
(num_k = 4) passes 1 batch through G in step A, 2 in step B and 4 in step C: 7 forward passes; step B holds G fixed,
so only 5 of them need a backward pass. With a backward costing about twice a forward, the algorithm needs about
(7 + 2 x 5) / 3 = 5.7 source-only batches of work, and the issue's count of 7 passes is the upper bound.

Measured here, in one process, on the networks of ``configs/{source_only,mcd}_mnistm.yaml``, through Lightning's
``fit`` (the same data loaders, hooks and optimisers as a real run; no logger, no checkpoints, no validation):

* per batch, the median wall time after ``--warmup`` batches, for source-only, MCD as shipped (G without autograd in
  step B, F1 and F2 frozen in step C) and MCD with full backward passes (what DDP's gradient reducer needs, and what
  every run did before);
* for MCD, the median time of steps A, B and C and the rest of the batch (data, hooks, logging), per batch;
* one G+F forward-backward pass on 64 images outside Lightning (the unit the expectation counts in).

Run: ``.venv/bin/python benchmarks/mcd_cost.py --mnist ../shared/data/mnist \
        --mnistm ../shared/data/mnist_m/mnist_m.tar.gz --threads 2 --out-dir runs/bench/mcd_cost``
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, so it runs from anywhere

from machine import cpu_name  # benchmarks/ is on sys.path when a script runs

import cli
from lecture_modules.domain_adaptation.mcd import MCD

REPO = Path(__file__).resolve().parents[1]


class MCDFullBackward(MCD):
    """MCD with a backward pass through every part in every step (as under DDP, and as before item 4)."""

    def _reducer_wants_every_parameter(self) -> bool:
        return True


class BatchTimer(L.Callback):
    """Wall time of every training batch, from one batch's start to the next one's (data fetch included)."""

    def __init__(self) -> None:
        self.starts: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.starts.append(time.perf_counter())

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.starts.append(time.perf_counter())

    def per_batch(self, warmup: int) -> list[float]:
        return [b - a for a, b in zip(self.starts[warmup:], self.starts[warmup + 1 :])]


def timed_steps(model: MCD) -> dict[str, list[float]]:
    """Wrap steps A, B and C of ``model`` with timers; returns the lists they fill."""
    times: dict[str, list[float]] = {"step_a": [], "step_b": [], "step_c": []}
    for name in times:
        step = getattr(model, name)

        def timed(*args, _step=step, _name=name):
            start = time.perf_counter()
            out = _step(*args)
            times[_name].append(time.perf_counter() - start)
            return out

        setattr(model, name, timed)
    return times


def build(config: str, args: argparse.Namespace, model_class: str | None = None) -> tuple:
    argv = [
        "--config", str(REPO / "configs" / config),
        "--trainer.logger=false", "--trainer.callbacks=[]", "--trainer.enable_checkpointing=false",
        "--model.init_args.embedding=none",
        f"--data.init_args.source.init_args.root={args.mnist}",
        f"--data.init_args.target.init_args.root={args.mnistm}",
    ]  # fmt: skip
    if model_class:
        argv += [f"--model.class_path={model_class}"]
    built = cli.run(argv, run=False)
    return built.model, built.datamodule


def time_fit(model, datamodule, batches: int) -> BatchTimer:
    timer = BatchTimer()
    trainer = L.Trainer(
        accelerator="cpu", devices=1, max_epochs=1, limit_train_batches=batches, limit_val_batches=0,
        num_sanity_val_steps=0, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, callbacks=[timer],
    )  # fmt: skip
    trainer.fit(model, datamodule)
    return timer


def one_pass(model, datamodule, reps: int = 30) -> float:
    """Median time of one G+F forward and backward pass on one training batch of source images, outside Lightning."""
    datamodule.setup("fit")
    batch = next(iter(datamodule.train_dataloader()))  # CombinedLoader: (batch, batch_idx, dataloader_idx)
    x, y = batch[0]["source"]
    model.train()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        F.cross_entropy(model.classifier(model.features(x)), y).backward()
        times.append(time.perf_counter() - start)
        model.zero_grad(set_to_none=True)
    return statistics.median(times[5:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mnist", required=True)
    parser.add_argument("--mnistm", required=True)
    parser.add_argument("--batches", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out-dir", type=Path, default=REPO / "runs" / "bench" / "mcd_cost")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    L.seed_everything(0, verbose=False)

    results: dict[str, dict] = {}
    model, data = build("source_only_mnistm.yaml", args)
    unit = one_pass(model, data)
    results["source_only"] = {"batch_s": statistics.median(time_fit(model, data, args.batches).per_batch(args.warmup))}
    for label, model_class in (("mcd", None), ("mcd_full_backward", f"{__name__}.MCDFullBackward")):
        model, data = build("mcd_mnistm.yaml", args, model_class=model_class)
        steps = timed_steps(model)
        per_batch = time_fit(model, data, args.batches).per_batch(args.warmup)
        row = {"batch_s": statistics.median(per_batch)}
        row.update({k: statistics.median(v[args.warmup :]) for k, v in steps.items()})
        parts = zip(per_batch, *(v[args.warmup :] for v in steps.values()))
        row["rest"] = statistics.median(total - sum(inside) for total, *inside in parts)  # data, hooks, logging
        results[label] = row

    base = results["source_only"]["batch_s"]
    lines = [
        f"# MCD's cost per batch vs source-only's (MNIST -> MNIST-M networks), {cpu_name()}, "
        f"{args.threads} torch thread(s), torch {torch.__version__}, Lightning {L.__version__}",
        "",
        f"Median of {args.batches - args.warmup} batches of 64 (+ 64) after {args.warmup} warm-up batches; one G+F "
        f"forward-backward pass on 64 source images outside Lightning: {unit * 1e3:.1f} ms.",
        "",
        "| run | ms / batch | x source-only | step A ms | step B ms | step C ms (num_k 4) | rest ms |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for label, row in results.items():
        cells = [f"{row[k] * 1e3:.1f}" if k in row else "" for k in ("step_a", "step_b", "step_c", "rest")]
        head = f"| {label} | {row['batch_s'] * 1e3:.1f} | {row['batch_s'] / base:.2f} | "
        lines.append(head + " | ".join(cells) + " |")
    lines += ["", "Expected from the algorithm: about 5.7x (7 forward, 5 backward passes through G); at most 7x."]
    report = "\n".join(lines)
    print(report)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    machine = {"cpu": cpu_name(), "threads": args.threads, "torch": torch.__version__}
    machine["python"] = platform.python_version()
    (args.out_dir / "mcd_cost.json").write_text(json.dumps({"unit_pass_s": unit, "runs": results, "machine": machine}))
    (args.out_dir / "mcd_cost.md").write_text(report + "\n")


if __name__ == "__main__":
    main()
