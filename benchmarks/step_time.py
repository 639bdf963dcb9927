"""Per-step training time: ``Trainer.fit`` on the Classification lecture versus a plain PyTorch loop.

What is measured: wall-clock time per optimiser step (data fetch, forward, backward, AdamW step and, on the Lightning
side, everything the Trainer and the lecture do around them: ``self.log``, the torchmetrics accuracy update, the
finite-loss check, hooks). Both sides use the same model class and seed (the CNN of ``configs/classification.yaml``:
channels [32, 64, 128], batch norm, dropout 0.1), the same data and batch size, the same train DataLoader
(``ImageDataModule.train_dataloader()``) and AdamW with lr 1e-3.

How: a step ends when ``on_train_batch_end`` fires (Lightning) or after ``optimizer.step()`` (plain loop); the
time of a step is the difference between consecutive ends, so it includes fetching the step's batch on both sides.
The first ``--warmup`` steps are dropped and the median of the next ``--steps`` is taken. The two sides run
``--repeats`` times, alternating, in one process with ``torch.set_num_threads(--threads)`` and re-seeded before
each run; the table shows each run's medians and the median of the medians. Runs cross epoch boundaries (the
digits train split is 10 batches of 128); the median keeps those few slower steps from dominating.

Default workload: 28x28 single-channel images (scikit-learn's 8x8 digits upsampled to MNIST's size, so the step
costs what a real MNIST step costs, with no download) in batches of 128, a common MNIST setting. The lecture's own
config uses 16x16 and batch 64, where the step is so small that fixed per-step costs weigh more; run with
``--image-size 16 --batch-size 64`` to see that case. ``--idx-root /work/shared/data/mnist`` uses real MNIST.

Run: ``.venv/bin/python benchmarks/step_time.py`` (about a minute on two idle CPU cores).
"""

from __future__ import annotations

import argparse
import functools
import itertools
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, so it runs from anywhere

from machine import cpu_name  # benchmarks/ is on sys.path when a script runs

from datamodules.image import ImageDataModule
from datamodules.sources import DigitsSource, IDXSource, ImageSource
from lecture_modules.classification import Classification

LR = 1e-3
SEED = 0
TARGET_RATIO = 1.10
NOISY_SPREAD = 1.25  # run medians of one side further apart than this mean the CPU was shared
CNN = {
    "net": {"kind": "cnn", "widths": [32, 64, 128], "batch_norm": True, "dropout": 0.1}
}  # configs/classification.yaml


class BenchClassification(Classification):
    """The Classification lecture with the optimiser the CLI would inject from YAML, fixed here."""

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.parameters(), lr=LR)


class StepClock(L.Callback):
    """Records ``time.perf_counter()`` at the end of every training batch."""

    def __init__(self) -> None:
        self.stamps: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.stamps.append(time.perf_counter())


def build(source: ImageSource, args: argparse.Namespace) -> tuple[ImageDataModule, BenchClassification]:
    """A fresh, seeded DataModule and model, as ``configs/classification.yaml`` builds them."""
    L.seed_everything(SEED, verbose=False)
    dm = ImageDataModule(source=source, image_size=args.image_size, batch_size=args.batch_size, seed=SEED)
    dm.setup("fit")
    model = BenchClassification(num_classes=dm.num_classes, input_shape=dm.input_shape, **CNN)
    return dm, model


def step_medians(stamps: list[float], warmup: int) -> float:
    """Median step time in ms of the steps after ``warmup``, from end-of-step time stamps."""
    durations = [b - a for a, b in itertools.pairwise(stamps)][warmup:]
    return 1000.0 * statistics.median(durations)


def run_lightning(source: ImageSource, args: argparse.Namespace) -> float:
    dm, model = build(source, args)
    clock = StepClock()
    with tempfile.TemporaryDirectory() as root:
        trainer = L.Trainer(
            accelerator="cpu",
            devices=1,
            max_steps=args.warmup + args.steps + 1,
            max_epochs=-1,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            limit_val_batches=0,
            callbacks=[clock],
            default_root_dir=root,
        )
        trainer.fit(model, datamodule=dm)
    return step_medians(clock.stamps, args.warmup)


def run_plain(source: ImageSource, args: argparse.Namespace) -> float:
    dm, model = build(source, args)
    loader = dm.train_dataloader()
    opt = torch.optim.AdamW(model.parameters(), lr=LR)
    total = args.warmup + args.steps + 1
    stamps: list[float] = []
    model.train()
    while len(stamps) < total:  # crosses epochs like the Trainer does
        for x, y in loader:
            opt.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            stamps.append(time.perf_counter())
            if len(stamps) == total:
                break
    return step_medians(stamps, args.warmup)


def machine_line() -> str:
    load = f", 1-min load average now {os.getloadavg()[0]:.2f}" if hasattr(os, "getloadavg") else ""
    return (
        f"Machine: {cpu_name()} ({platform.machine()}), os.cpu_count()={os.cpu_count()}{load}, "
        f"torch {torch.__version__}, lightning {L.__version__}, Python {platform.python_version()}"
    )


def report(args: argparse.Namespace, source: ImageSource, light: list[float], plain: list[float]) -> None:
    setting = f"{source.describe()}, {args.image_size}x{args.image_size}, batch {args.batch_size}"
    print(machine_line())
    print(
        f"Threads: {args.threads}; {args.steps} timed steps after {args.warmup} warm-up steps per run; "
        f"{args.repeats} runs per side, alternating.\n"
    )
    print("| setting | median ms/step (Lightning) | median ms/step (plain) | ratio |")
    print("|---|---:|---:|---:|")
    for i, (lt, pt) in enumerate(zip(light, plain), start=1):
        print(f"| {setting}, run {i} | {lt:.2f} | {pt:.2f} | {lt / pt:.3f} |")
    lm, pm = statistics.median(light), statistics.median(plain)
    ratio = lm / pm
    print(f"| **{setting}, median of {args.repeats} runs** | **{lm:.2f}** | **{pm:.2f}** | **{ratio:.3f}** |")
    print(
        f"| {setting}, fastest run of each side | {min(light):.2f} | {min(plain):.2f} | {min(light) / min(plain):.3f} |"
    )
    print(f"\nOverhead (median of medians): {lm - pm:+.2f} ms/step.")
    spread = max(max(light) / min(light), max(plain) / min(plain))
    if spread > NOISY_SPREAD:
        print(
            f"Warning: run medians of one side differ up to {spread:.1f}x; the CPU was busy with other work during "
            "some runs. Rerun on an idle machine (or with --threads 1) before quoting these numbers."
        )
    print(f"target ratio <= {TARGET_RATIO:.2f}: {'met' if ratio <= TARGET_RATIO else 'not met'}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n", 1)[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--batch-size", type=int, default=128, help="training batch size")
    parser.add_argument("--image-size", type=int, default=28, help="square image size the images are resized to")
    parser.add_argument("--steps", type=int, default=100, help="timed steps per run")
    parser.add_argument("--warmup", type=int, default=5, help="steps dropped at the start of each run")
    parser.add_argument("--repeats", type=int, default=5, help="runs per side, alternating Lightning/plain")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument(
        "--idx-root",
        type=Path,
        default=None,
        help="folder of MNIST-format IDX files (e.g. /work/shared/data/mnist) instead of digits",
    )
    args = parser.parse_args(argv)
    for name in ("batch_size", "image_size", "steps", "repeats", "threads"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.warmup < 0:
        parser.error(f"--warmup must be >= 0, got {args.warmup}")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # no "GPU available" banners per run
    torch.set_num_threads(args.threads)
    source = IDXSource(root=str(args.idx_root)) if args.idx_root else DigitsSource()
    source.load = functools.cache(source.load)  # read the files once; every run gets the same tensors
    light: list[float] = []
    plain: list[float] = []
    for i in range(args.repeats):
        light.append(run_lightning(source, args))
        plain.append(run_plain(source, args))
        print(f"run {i + 1}/{args.repeats}: Lightning {light[-1]:.2f} ms, plain {plain[-1]:.2f} ms", file=sys.stderr)
    report(args, source, light, plain)


if __name__ == "__main__":
    main()
