"""Knowledge distillation benchmark: teacher, student from scratch and distilled student, same parameter budget.

For each data set and training-set size ("regime") the script trains, per seed, the student of
``configs/distillation.yaml`` twice with identical settings except the loss: once from the labels alone
(``alpha: 0``, no teacher) and once distilled from the teacher (``alpha``/``temperature`` from the config). It
prints test accuracy as mean ± std over the seeds, the teacher's test accuracy, parameter counts and CPU latency
per batch (median of 30 calls after 5 warm-up calls, batch 1 and 64).

* ``digits`` (always): scikit-learn's digits at 16x16 with the shipped teacher (``builtin:digits_cnn``, trained by
  ``configs/classification.yaml`` on the same seeded split); regimes: the whole training split and 200 samples.
* ``mnist`` (``--mnist DIR`` with the four IDX files): a teacher is trained first with
  ``configs/classification.yaml`` at 28x28 (``--teacher-epochs``), then the students; regimes: all 54,000
  training images (``--mnist-epochs``) and 1,000 (``--mnist-small-epochs``). The distilled runs on all images use
  the teacher-logit cache (``cache_teacher_logits``).

Students are scored by the last epoch's weights (no checkpoint selection), so validation is switched off in the
student runs. Soft targets help most where labels are scarce and training is long: the 1,000-image regime runs
100 epochs (Beyer et al. 2022, arXiv 2106.05237, find distillation needs long schedules).

Reference (Hinton et al. 2015, arXiv 1503.02531, section 3): on MNIST a small net makes 146 test errors from the
labels and 74 when distilled from a teacher that makes 67. Their nets are far larger than this budget.

Both students of a seed in one run, on the same batches: ``benchmarks/investigations/distillation_scratch.py``.

Run: ``.venv/bin/python benchmarks/distillation.py [--mnist ../shared/data/mnist]``
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, so it runs from anywhere

from machine import cpu_name  # benchmarks/ is on sys.path when a script runs
from runner import fit_and_test, mnist_args

from lecture_modules.nets import measure_latency


def latency_ms(module: torch.nn.Module, shape: tuple[int, ...], batch: int) -> float:
    return 1000.0 * measure_latency(module.cpu(), torch.zeros(batch, *shape), repeats=30, warmup=5)


def fmt(values: list[float]) -> str:
    pct = [100 * v for v in values]
    return f"{statistics.mean(pct):.2f} ± {statistics.stdev(pct) if len(pct) > 1 else 0.0:.2f}"


def train_mnist_teacher(data: list[str], epochs: int, tmp: Path) -> str:
    ckpt_dir = tmp / "teacher"
    fit_and_test(
        "classification.yaml",
        *data,
        "--trainer.max_epochs",
        str(epochs),
        "--trainer.callbacks+=lightning.pytorch.callbacks.ModelCheckpoint",
        "--trainer.callbacks.dirpath",
        str(ckpt_dir),
        "--trainer.callbacks.monitor",
        "val/acc",
        "--trainer.callbacks.mode",
        "max",
        "--trainer.callbacks.filename",
        "best",
        root=tmp / "teacher-run",
    )
    return str(ckpt_dir / "best.ckpt")


def bench(name: str, data: list[str], teacher: str, regimes: dict[str, list[str]], seeds, tmp: Path) -> list:
    rows = []
    for regime, limit in regimes.items():
        accs: dict[str, list[float]] = {"scratch": [], "distilled": []}
        for seed in seeds:
            common = [*data, *limit, "--seed_everything", str(seed)]
            common += ["--trainer.limit_val_batches", "0"]  # scored by the last epoch's weights
            scratch = fit_and_test(
                "distillation.yaml",
                *common,
                "--model.init_args.alpha",
                "0",
                "--model.init_args.teachers",
                "[]",
                root=tmp / f"{name}-{regime}-s{seed}-scratch",
            )
            accs["scratch"].append(float(scratch.trainer.callback_metrics["test/acc"]))
            kd = fit_and_test(
                "distillation.yaml",
                *common,
                "--model.init_args.teachers",
                f"[{{path: {teacher}}}]",
                root=tmp / f"{name}-{regime}-s{seed}-kd",
            )
            metrics = kd.trainer.callback_metrics
            accs["distilled"].append(float(metrics["test/acc"]))
            teacher_acc = float(metrics["test/teacher_acc"])
            print(
                f"  {name} {regime} seed {seed}: scratch {accs['scratch'][-1]:.4f} distilled "
                f"{accs['distilled'][-1]:.4f} teacher {teacher_acc:.4f}",
                flush=True,
            )
        model = kd.model
        shape = tuple(model.example_input_array.shape[1:])
        rows.append(
            {
                "data": name,
                "regime": regime,
                "teacher": f"{100 * teacher_acc:.2f}",
                "scratch": fmt(accs["scratch"]),
                "distilled": fmt(accs["distilled"]),
                "gain": 100 * (statistics.mean(accs["distilled"]) - statistics.mean(accs["scratch"])),
                "student_params": model.student_params,
                "teacher_params": sum(p.numel() for p in model.teachers[0].parameters()),
                "ms": {
                    (who, b): latency_ms(net, shape, b)
                    for who, net in (("student", model.student), ("teacher", model.teachers[0]))
                    for b in (1, 64)
                },
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mnist", help="folder with MNIST's four IDX files (gzipped or not)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--digits-all-epochs", type=int, default=15, help="student epochs on all digits")
    parser.add_argument("--digits-epochs", type=int, default=80, help="student epochs on 200 digits")
    parser.add_argument("--teacher-epochs", type=int, default=4, help="MNIST teacher epochs")
    parser.add_argument("--mnist-epochs", type=int, default=15, help="MNIST student epochs on all images")
    parser.add_argument("--mnist-small-epochs", type=int, default=100, help="MNIST student epochs on 1,000 images")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    logging.getLogger("lightning").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="lightning")  # the script's own output is the table
    rows = []
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        regimes = {
            "all 1,258": ["--trainer.max_epochs", str(args.digits_all_epochs)],
            "200 samples": [
                "--data.init_args.limit_train_samples",
                "200",
                "--trainer.max_epochs",
                str(args.digits_epochs),
            ],
        }
        rows += bench("digits", [], "builtin:digits_cnn", regimes, args.seeds, tmp)
        if args.mnist:
            data = mnist_args(args.mnist)
            teacher = train_mnist_teacher(data, args.teacher_epochs, tmp)
            regimes = {
                "all 54,000": [
                    "--trainer.max_epochs",
                    str(args.mnist_epochs),
                    "--model.init_args.cache_teacher_logits",
                    "true",
                    "--data.init_args.indexed",
                    "true",
                ],
                "1,000 samples": [
                    "--data.init_args.limit_train_samples",
                    "1000",
                    "--trainer.max_epochs",
                    str(args.mnist_small_epochs),
                ],
            }
            rows += bench("mnist", data, teacher, regimes, args.seeds, tmp)
    print(f"\nmachine: {cpu_name()}, {args.threads} threads, torch {torch.__version__}; seeds {args.seeds}")
    print(
        "| data | training set | teacher acc % | scratch student % | distilled student % | gain (points) | "
        "student / teacher params | student / teacher CPU ms, batch 1 | batch 64 |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        ms = r["ms"]
        print(
            f"| {r['data']} | {r['regime']} | {r['teacher']} | {r['scratch']} | {r['distilled']} | "
            f"{r['gain']:+.2f} | {r['student_params']:,} / {r['teacher_params']:,} | "
            f"{ms['student', 1]:.3f} / {ms['teacher', 1]:.3f} | {ms['student', 64]:.2f} / {ms['teacher', 64]:.2f} |"
        )


if __name__ == "__main__":
    main()
