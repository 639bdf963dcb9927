"""Our per-epoch average accuracy next to the HW14 sample solution's, epoch by epoch.

HW14's figures (``benchmarks/lifelong.py``'s ``HW14``) are the last epoch of one run. Its 2021 sample notebook
(``HW14_lifelong_learning.ipynb`` of the course's ML2021 homework) also prints that run's whole curve: after every
epoch, the test accuracy averaged over the tasks seen so far (all 10,000 test images of each). ``HW14_CURVES``
holds the printed curve of MAS (lambda 0.1; rounded to 3 decimals), the one method whose final figure our seeds'
mean stays under.

This script reads result files of ``benchmarks/lifelong.py`` whose runs kept their ``curves`` (every task's test
accuracy after every epoch), turns each run's curve into HW14's quantity and prints, at the end of every task and
for the last task's epochs together, our seeds' mean, standard deviation and range next to HW14's value and how
many of our seeds reach it. A single run is one draw: whether HW14's run lies inside our seeds' spread says more
than whether one number beats another. It writes the table to ``--results`` and a figure of the curves
(ours per seed, their mean, HW14's) to ``--figure``.

Run: ``.venv/bin/python benchmarks/lifelong_vs_hw14.py benchmarks/results/lifelong_full10k_mas_seen_s3.json ...``
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, so it runs from anywhere

# HW14 2021 sample notebook, MAS (lambda 0.1, 5 permuted-MNIST tasks x 10 epochs): the printed average test accuracy
# over the tasks seen so far after every epoch, in %.
HW14_CURVES = {
    "mas": [
        93.87, 96.02, 96.71, 97.09, 97.53, 97.72, 97.76, 97.84, 98.05, 98.0,
        95.845, 96.29, 96.685, 96.58, 96.61, 97.01, 97.005, 96.975, 96.825, 97.02,
        95.523, 96.127, 96.017, 96.203, 96.217, 96.12, 96.417, 96.22, 96.477, 96.15,
        95.13, 95.468, 95.763, 95.795, 95.52, 95.668, 96.008, 95.838, 95.503, 95.745,
        94.696, 94.584, 94.804, 94.85, 94.894, 94.92, 95.16, 95.144, 94.952, 95.094,
    ],
}  # fmt: skip


def seen_average(curves: list[list[float]], epochs_per_task: int) -> list[float]:
    """Per epoch, the mean accuracy (%) over the tasks trained so far: HW14's printed quantity.

    ``curves[e][j]`` is task j's accuracy (a fraction) after epoch e; during task t (epochs t*E .. t*E+E-1) the
    tasks 0..t are seen.
    """
    out = []
    for epoch, accs in enumerate(curves):
        seen = epoch // epochs_per_task + 1
        if seen > len(accs):
            raise ValueError(f"epoch {epoch + 1} falls in task {seen}, but the run scored only {len(accs)} tasks")
        out.append(100 * sum(accs[:seen]) / seen)
    return out


def load_runs(files: list[str], method: str) -> list[tuple[int, int, list[float]]]:
    """(seed, epochs per task, HW14-style curve) of every ``method`` run in ``files``; a later file's seed wins."""
    runs: dict[int, tuple[int, list[float]]] = {}
    for name in files:
        path = Path(name)
        if not path.is_file():
            raise SystemExit(f"{path}: no such results file")
        saved = json.loads(path.read_text())
        for run in saved.get("runs", []):
            if run.get("method") != method:
                continue
            if "curves" not in run:
                seed = run["seed"]
                raise SystemExit(f"{path}: run {method} seed {seed} has no 'curves' (made before runs kept them)")
            epochs = saved["args"]["epochs_per_task"]
            runs[run["seed"]] = (epochs, seen_average(run["curves"], epochs))
    if not runs:
        raise SystemExit(f"no {method} runs in {', '.join(files)}")
    return [(seed, *runs[seed]) for seed in sorted(runs)]


def describe(values: list[float], reference: float) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    reach = sum(v >= reference for v in values)
    return (
        f"{statistics.mean(values):.2f} ± {sd:.2f} | {min(values):.2f} to {max(values):.2f} | {reference:.2f} "
        f"| {reach} of {len(values)}"
    )


def report(runs: list[tuple[int, int, list[float]]], method: str, reference: list[float], machine: str) -> str:
    epochs = runs[0][1]
    if any(e != epochs or len(c) != len(reference) for _, e, c in runs):
        raise SystemExit(f"every run must have HW14's {len(reference)} epochs ({epochs} per task) to compare")
    tasks = len(reference) // epochs
    seeds = [seed for seed, _, _ in runs]
    lines = [
        f"machine: {machine}",
        f"{method}: average test accuracy (%) over the tasks seen so far, our seeds {seeds} against the HW14 2021 "
        f"sample notebook's single run; 'reach' counts our seeds at or above HW14's value",
        "",
        "| after | ours: mean ± sd | ours: range | HW14 | seeds that reach HW14 |",
        "|---|---|---|---|---|",
    ]
    for task in range(tasks):
        end = (task + 1) * epochs - 1
        row = describe([c[end] for _, _, c in runs], reference[end])
        lines.append(f"| task {task + 1} (epoch {end + 1}) | {row} |")
    last = slice((tasks - 1) * epochs, tasks * epochs)
    lines.append(
        f"| task {tasks}, mean of its {epochs} epochs | "
        + describe([statistics.mean(c[last]) for _, _, c in runs], statistics.mean(reference[last]))
        + " |"
    )
    ours_final = [c[-1] for _, _, c in runs]
    per_seed = ", ".join(f"{s}: {v:.2f}" for s, v in zip(seeds, ours_final))
    lines += ["", f"final average accuracy per seed: {per_seed}"]
    return "\n".join(lines)


def figure(runs: list[tuple[int, int, list[float]]], method: str, reference: list[float], path: Path) -> None:
    epochs = runs[0][1]
    x = list(range(1, len(reference) + 1))
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for seed, _, curve in runs:
        ax.plot(x, curve, color="tab:blue", lw=0.8, alpha=0.35, label="ours, one seed" if seed == runs[0][0] else None)
    mean = [statistics.mean(c[i] for _, _, c in runs) for i in range(len(reference))]
    ax.plot(x, mean, color="tab:blue", lw=2, label=f"ours, mean of {len(runs)} seeds")
    ax.plot(x, reference, "k--", lw=1.5, label="HW14 sample solution (one run)")
    for boundary in range(epochs, len(reference), epochs):
        ax.axvline(boundary + 0.5, color="grey", lw=0.5)
    ax.set_xlabel("epoch (10 per task)")
    ax.set_ylabel("average test accuracy over seen tasks (%)")
    ax.set_ylim(min(min(reference), min(min(c) for _, _, c in runs)) - 0.5, 99)
    ax.set_title(f"{method.upper()} on permuted MNIST, HW14's budget and protocol")
    ax.legend(loc="lower left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="+", metavar="JSON", help="results files of benchmarks/lifelong.py")
    parser.add_argument("--method", default="mas", choices=sorted(HW14_CURVES))
    parser.add_argument("--machine", required=True, help="the machine the runs ran on (the files' budget line)")
    parser.add_argument("--results", default="benchmarks/results/lifelong_mas_vs_hw14.md")
    parser.add_argument("--figure", default="benchmarks/lifelong_mas_vs_hw14.png")
    args = parser.parse_args()
    runs = load_runs(args.files, args.method)
    text = report(runs, args.method, HW14_CURVES[args.method], args.machine)
    text += f"\n\nfrom: {', '.join(args.files)}"
    print(text)
    Path(args.results).write_text(text + "\n")
    figure(runs, args.method, HW14_CURVES[args.method], Path(args.figure))


if __name__ == "__main__":
    main()
