"""Network pruning benchmark: accuracy against sparsity, and what masks versus removed channels do to CPU latency.

Per data set, three runs of the pruning lecture on the classification lecture's CNN ([32, 64, 128] channels), all
with the same number of epochs and the same optimiser and schedule:

* ``dense``: ``configs/pruning.yaml`` with ``target_sparsity: 0`` (no pruning): the reference accuracy.
* ``unstructured``: ``configs/pruning.yaml``: global magnitude pruning, 30% of the remaining weights per round with
  one fine-tuning epoch after each, to 90%, then the final fine-tuning epochs.
* ``structured``: ``configs/pruning_structured.yaml``: 20% of the remaining channels of every convolution per
  round (filter L1 norm), to 50% of the channels, then fine-tuning.

It prints the validation accuracy after each round's fine-tuning (the accuracy-vs-sparsity curves), the final test
accuracies, and in one table the CPU latency (median of ``--repeats`` calls after 10 warm-up calls, the fastest
of ``--passes`` passes that alternate between the models, batch 1 and 64, ``--threads`` intra-op threads) of the
dense network, the unstructured one with its masks (as trained: the ``torch.nn.utils.prune`` hook multiplies
weight by mask on every call), the same with the masks folded into the weights (dense kernels over zeros), and
the structurally pruned, smaller network. A figure
(``pruning.png``: accuracy vs sparsity, accuracy vs latency) is written to ``--out``.

All three runs of a data set train for the same number of epochs (structured pruning has fewer rounds, so it gets
more final fine-tuning epochs).

* ``digits`` (always): scikit-learn's digits at 16x16, the whole training split (1,258 images), 15 epochs.
* ``mnist`` (``--mnist DIR`` with the four IDX files): 28x28, ``--mnist-samples`` training images, shorter schedule
  (2 dense epochs, ``--mnist-final`` final epochs).

Run: ``.venv/bin/python benchmarks/pruning.py [--mnist ../shared/data/mnist] [--out runs/bench_pruning]``
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import sys
import tempfile
import warnings
from pathlib import Path

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, so it runs from anywhere

from machine import cpu_name  # benchmarks/ is on sys.path when a script runs
from runner import REPO, fit_and_test, mnist_args

from callbacks.iterative_pruning import IterativePruning
from cli import LectureCLI
from lecture_modules.nets import measure_latency
from lecture_modules.pruning.core import count_macs, count_params, make_permanent, sparsity, widths_of

CALLBACK = "callbacks.iterative_pruning.IterativePruning"
# the per-round timing in the run is skipped; this script times all models together below
NO_ROUND_TIMING = ["--trainer.callbacks.latency_repeats", "0"]


def pruning_callback(config: str) -> list[str]:
    """The config's IterativePruning (the runner drops the config's callbacks), added back as the last callback, so
    later ``--trainer.callbacks.<arg>`` overrides reach it."""
    callbacks = yaml.safe_load((REPO / "configs" / config).read_text())["trainer"]["callbacks"]
    [entry] = [c for c in callbacks if c["class_path"] == CALLBACK]
    return [f"--trainer.callbacks+={json.dumps(entry)}"]


def run(config: str, *overrides: str, root: Path) -> LectureCLI:
    return fit_and_test(config, *pruning_callback(config), *NO_ROUND_TIMING, *overrides, root=root)


def history(cli: LectureCLI) -> list[dict]:
    """The per-round rows the run's IterativePruning recorded."""
    [callback] = [c for c in cli.trainer.callbacks if isinstance(c, IterativePruning)]
    return callback.history


def latency_ms(module: torch.nn.Module, shape: tuple[int, ...], batch: int, repeats: int) -> float:
    return 1000.0 * measure_latency(module.cpu(), torch.zeros(batch, *shape), repeats=repeats, warmup=10)


def latencies(nets: dict, shape: tuple[int, ...], repeats: int, passes: int) -> dict[tuple[str, int], float]:
    """Median ms per call, timed in ``passes`` alternating passes over all models; the fastest pass is kept (the
    least disturbed by other processes on a shared machine)."""
    times: dict[tuple[str, int], list[float]] = {}
    for _ in range(passes):
        for label, net in nets.items():
            for b in (1, 64):
                times.setdefault((label, b), []).append(latency_ms(net, shape, b, repeats))
    return {k: min(v) for k, v in times.items()}


def bench(name: str, data: list[str], schedule: dict[str, list[str]], tmp: Path, args) -> dict:
    runs = {
        "dense": run("pruning.yaml", *data, *schedule["unstructured"], "--trainer.callbacks.target_sparsity", "0",
                     root=tmp / f"{name}-dense"),
        "unstructured": run("pruning.yaml", *data, *schedule["unstructured"], root=tmp / f"{name}-unstructured"),
        "structured": run("pruning_structured.yaml", *data, *schedule["structured"], root=tmp / f"{name}-structured"),
    }  # fmt: skip
    shape = tuple(runs["dense"].model.hparams.input_shape)
    nets = {
        "dense": runs["dense"].model.net,
        "unstructured, masks (as trained)": runs["unstructured"].model.net,
        "unstructured, masks folded in": make_permanent(copy.deepcopy(runs["unstructured"].model.net)),
        "structured (channels removed)": runs["structured"].model.net,
    }
    ms = latencies(nets, shape, args.repeats, args.passes)
    rows = []
    for label, net in nets.items():
        key = label.split(",")[0].split(" ")[0]
        rows.append(
            {
                "model": label,
                "test_acc": float(runs[key].trainer.callback_metrics["test/acc"]),
                "sparsity": sparsity(net),
                "params": count_params(net),
                "nonzero": count_params(net, nonzero=True),
                "macs": count_macs(net, shape),
                "widths": widths_of(net),
                "ms": {b: ms[label, b] for b in (1, 64)},
            }
        )
    curves = {k: history(runs[k]) for k in ("unstructured", "structured")}
    return {"name": name, "rows": rows, "curves": curves}


def print_report(result: dict) -> None:
    rows, base = result["rows"], result["rows"][0]
    print(f"\n### {result['name']}\n")
    print("| model | test acc (%) | Δ acc (points) | weight sparsity | params (non-zero) | MACs | widths | "
          "CPU ms b1 | CPU ms b64 | speed-up b64 |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['model']} | {100 * r['test_acc']:.2f} | {100 * (r['test_acc'] - base['test_acc']):+.2f} | "
            f"{100 * r['sparsity']:.1f}% | {r['params']:,} ({r['nonzero']:,}) | {r['macs']:,} | {r['widths']} | "
            f"{r['ms'][1]:.3f} | {r['ms'][64]:.2f} | {base['ms'][64] / r['ms'][64]:.2f}x |"
        )
    for method, history in result["curves"].items():
        points = ", ".join(
            f"{100 * h['sparsity']:.0f}%: {100 * h['val_acc']:.1f}" for h in history if h["val_acc"] is not None
        )
        print(f"\n{method}, validation accuracy after each round's fine-tuning (sparsity: acc %): {points}")


def figure(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    for result in results:
        for method, history in result["curves"].items():
            pts = [(100 * h["sparsity"], 100 * h["val_acc"]) for h in history if h["val_acc"] is not None]
            left.plot(*zip(*pts), "o-", label=f"{result['name']}, {method}")
        for r in result["rows"]:
            right.scatter(r["ms"][64], 100 * r["test_acc"], label=f"{result['name']}: {r['model']}")
    left.set_xlabel("parameters removed / weights zeroed (%)")
    left.set_ylabel("validation accuracy after the round (%)")
    left.legend(fontsize=7)
    right.set_xlabel("CPU latency, batch 64 (ms)")
    right.set_ylabel("test accuracy (%)")
    right.legend(fontsize=6)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mnist", help="folder with MNIST's four IDX files (gzipped or not)")
    parser.add_argument("--mnist-samples", type=int, default=10000, help="MNIST training images used")
    parser.add_argument("--mnist-final", type=int, default=1, help="MNIST final fine-tuning epochs")
    parser.add_argument("--repeats", type=int, default=30, help="timed calls per model, batch size and pass")
    parser.add_argument("--passes", type=int, default=5, help="alternating timing passes over the models")
    parser.add_argument("--threads", type=int, default=1, help="intra-op CPU threads while timing and training")
    parser.add_argument("--out", default="runs/bench_pruning", help="where the figure goes")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    logging.getLogger("lightning").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="lightning")  # the script's own output is the table
    results = []
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        same_budget = ["--trainer.max_epochs", "15"]  # structured gets the dense run's 15 epochs (its config: 13)
        results.append(bench("digits", [], {"unstructured": [], "structured": same_budget}, tmp, args))
        print_report(results[-1])
        if args.mnist:
            data = [
                *mnist_args(args.mnist),
                "--data.init_args.limit_train_samples",
                str(args.mnist_samples),
                "--trainer.callbacks.pretrain_epochs",
                "2",
            ]
            # 2 dense epochs, one per round (7 unstructured / 4 structured), then the final ones; every run (dense
            # included) trains for the same number of epochs, so structured pruning gets 3 more final epochs
            epochs = ["--trainer.max_epochs", str(2 + 7 + args.mnist_final)]
            schedule = {"unstructured": epochs, "structured": epochs}
            results.append(bench("mnist", data, schedule, tmp, args))
            print_report(results[-1])
    figure(results, Path(args.out) / "pruning.png")
    print(
        f"\nmachine: {cpu_name()}, torch {torch.__version__}, {args.threads} thread(s); figure: {args.out}/pruning.png"
    )


if __name__ == "__main__":
    main()
