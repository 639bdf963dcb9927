"""Our per-epoch average accuracy next to the HW14 sample solution's, epoch by epoch.

HW14's figures (``benchmarks/lifelong.py``'s ``HW14``) are the last epoch of one run. Its 2021 sample notebook
(``HW14_lifelong_learning.ipynb`` of the course's ML2021 homework) also prints that run's whole curve: after every
epoch, the test accuracy averaged over the tasks seen so far (all 10,000 test images of each). ``HW14_CURVES``
holds the printed curve of MAS (lambda 0.1; rounded to 3 decimals), the one method whose final figure our seeds'
mean stays under.

This script reads result files whose runs kept their ``curves`` (every task's test accuracy after every epoch):
ours from ``benchmarks/lifelong.py`` (or ``benchmarks/investigations/lifelong_hw14.py``) and, with ``--plain``,
those of ``benchmarks/investigations/lifelong_plain_mas.py`` (HW14's
procedure as a plain PyTorch loop). It turns each run's curve into HW14's quantity and prints, per group, the final
average accuracy over all its runs (runs made before curves were kept count here too) and, at the end of every task
and for the last task's epochs together, the seeds' mean, standard deviation and range next to HW14's value and
how many runs reach it; with two groups, also the difference of their final means and its standard error
(``--paired``: and their seed-by-seed differences, for groups that share their draws). A single
run is one draw: whether HW14's run lies inside a group's spread says more than whether one number beats another.
It writes the tables to ``--results`` and a figure of each group's mean curve and range, with HW14's curve, to
``--figure``.

Run: ``.venv/bin/python benchmarks/investigations/lifelong_vs_hw14.py --machine ...
benchmarks/results/lifelong_mas_vs_hw14-full10k-epyc2.json#lifelong_full10k_mas_seen_s ...`` (``PATH#PREFIX``
reads the groups of a curated results file whose source file name starts with ``PREFIX``)
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import matplotlib

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: lifelong.py
from lifelong import result_groups

matplotlib.use("Agg")
import matplotlib.pyplot as plt

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


Run = tuple[int, float, "list[float] | None"]  # seed, final average accuracy (%), HW14-style curve if kept


def load_runs(files: list[str], method: str, epochs_per_task: int) -> list[Run]:
    """Every ``method`` run in ``files`` (a later file's seed wins); runs made before curves were kept give only
    their final average accuracy."""
    runs: dict[int, Run] = {}
    for name in files:
        path = Path(name.partition("#")[0])
        if not path.is_file():
            raise SystemExit(f"{path}: no such results file")
        for saved in result_groups(name):  # PATH, or PATH#PREFIX for some groups of a curated file
            if saved.get("args", {}).get("epochs_per_task") != epochs_per_task:
                raise SystemExit(f"{name}: not {epochs_per_task} epochs per task, HW14's curve cannot be compared")
            for run in saved.get("runs", []):
                if run.get("method") == method:
                    curve = seen_average(run["curves"], epochs_per_task) if "curves" in run else None
                    runs[run["seed"]] = (run["seed"], 100 * run["cl/avg_acc"], curve)
    if not runs:
        raise SystemExit(f"no {method} runs in {', '.join(files)}")
    return [runs[seed] for seed in sorted(runs)]


def mean_sd(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def describe(values: list[float], reference: float) -> str:
    mean, sd = mean_sd(values)
    reach = sum(v >= reference for v in values)
    return f"{mean:.2f} ± {sd:.2f} | {min(values):.2f} to {max(values):.2f} | {reach} of {len(values)}"


def report(
    groups: dict[str, list[Run]], reference: list[float], epochs: int, method: str, machine: str, paired: bool = False
) -> str:
    tasks = len(reference) // epochs
    lines = [
        f"machine: {machine}",
        f"{method}: average test accuracy (%) over the tasks seen so far, against the single run printed by the "
        "HW14 2021 sample notebook; 'reach': runs at or above HW14's value",
    ]
    for name, runs in groups.items():
        curves = [c for _, _, c in runs if c is not None]
        if any(len(c) != len(reference) for c in curves):
            raise SystemExit(f"{name}: every run must have HW14's {len(reference)} epochs to compare")
        finals = [final for _, final, _ in runs]
        mean, sd = mean_sd(finals)
        reach = sum(f >= reference[-1] for f in finals)
        lines += [
            "",
            f"**{name}**: final average accuracy {mean:.2f} ± {sd:.2f} (range {min(finals):.2f} to "
            f"{max(finals):.2f}; {reach} of {len(finals)} runs reach HW14's {reference[-1]:.2f}); per seed: "
            + ", ".join(f"{seed}: {final:.2f}" for seed, final, _ in runs),
        ]
        if not curves:
            continue
        seeds = [seed for seed, _, c in runs if c is not None]
        lines += [
            "",
            f"| after (seeds {', '.join(map(str, seeds))}) | mean ± sd | range | reach | HW14 |",
            "|---|---|---|---|---|",
        ]
        for task in range(tasks):
            end = (task + 1) * epochs - 1
            lines.append(
                f"| task {task + 1} (epoch {end + 1}) | {describe([c[end] for c in curves], reference[end])} "
                f"| {reference[end]:.2f} |"
            )
        last = slice((tasks - 1) * epochs, tasks * epochs)
        ref_last = statistics.mean(reference[last])
        row = describe([statistics.mean(c[last]) for c in curves], ref_last)
        lines.append(f"| task {tasks}, mean of its {epochs} epochs | {row} | {ref_last:.2f} |")
    if len(groups) == 2:
        (name_a, a), (name_b, b) = groups.items()
        (ma, sa), (mb, sb) = mean_sd([f for _, f, _ in a]), mean_sd([f for _, f, _ in b])
        se = (sa**2 / len(a) + sb**2 / len(b)) ** 0.5
        lines += [
            "",
            f"final average accuracy, {name_a} minus {name_b}: {ma - mb:+.2f} points "
            f"(standard error {se:.2f}; {len(a)} and {len(b)} seeds)",
        ]
        if paired:  # the same draws in both groups: compare seed by seed
            finals_b = {seed: final for seed, final, _ in b}
            diffs = [(seed, final - finals_b[seed]) for seed, final, _ in a if seed in finals_b]
            if not diffs:
                raise SystemExit("--paired: the two groups share no seed")
            dm, ds = mean_sd([d for _, d in diffs])
            lines.append(
                f"seed by seed, {name_a} minus {name_b}: {dm:+.2f} ± {ds:.2f} points over {len(diffs)} seeds ("
                + ", ".join(f"{seed}: {d:+.2f}" for seed, d in diffs)
                + ")"
            )
    return "\n".join(lines)


COLOURS = ["tab:blue", "tab:orange"]


def figure(groups: dict[str, list[Run]], reference: list[float], epochs: int, method: str, path: Path) -> None:
    x = list(range(1, len(reference) + 1))
    fig, ax = plt.subplots(figsize=(8, 4.5))
    low = min(reference)
    for colour, (name, runs) in zip(COLOURS, groups.items()):
        curves = [c for _, _, c in runs if c is not None]
        if not curves:
            continue
        lo = [min(c[i] for c in curves) for i in range(len(x))]
        hi = [max(c[i] for c in curves) for i in range(len(x))]
        ax.fill_between(x, lo, hi, color=colour, alpha=0.2, lw=0)
        mean = [statistics.mean(c[i] for c in curves) for i in range(len(x))]
        ax.plot(x, mean, color=colour, lw=1.8, label=f"{name}: mean and range of {len(curves)} seeds")
        low = min(low, min(lo))
    ax.plot(x, reference, "k--", lw=1.5, label="HW14 sample notebook (one run)")
    for boundary in range(epochs, len(reference), epochs):
        ax.axvline(boundary + 0.5, color="grey", lw=0.5)
    ax.set_xlabel(f"epoch ({epochs} per task)")
    ax.set_ylabel("average test accuracy over seen tasks (%)")
    ax.set_ylim(low - 0.3, 98.6)
    ax.set_title(f"{method.upper()} on permuted MNIST at HW14's budget")
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="+", metavar="JSON", help="results of lifelong.py (or lifelong_hw14.py)")
    parser.add_argument("--plain", nargs="+", default=[], metavar="JSON", help="results files of lifelong_plain_mas.py")
    parser.add_argument(
        "--plain-label",
        default="HW14's procedure, plain PyTorch (lifelong_plain_mas.py)",
        help="how the tables and the figure name the --plain runs",
    )
    parser.add_argument(
        "--paired",
        action="store_true",
        help="also compare the two groups seed by seed (for runs that share their draws, such as "
        "lifelong_plain_mas.py --draws ours against lifelong.py)",
    )
    parser.add_argument("--method", default="mas", choices=sorted(HW14_CURVES))
    parser.add_argument("--machine", required=True, help="the machine the runs ran on")
    parser.add_argument("--results", default="runs/bench/lifelong_mas_vs_hw14.md")
    parser.add_argument("--figure", default="runs/bench/lifelong_mas_vs_hw14.png")
    args = parser.parse_args()
    if args.paired and not args.plain:
        parser.error("--paired compares the runs with the --plain runs: give --plain files")
    reference, epochs = HW14_CURVES[args.method], 10
    groups = {"ours (lifelong.py)": load_runs(args.files, args.method, epochs)}
    if args.plain:
        groups[args.plain_label] = load_runs(args.plain, args.method, epochs)
    text = report(groups, reference, epochs, args.method, args.machine, args.paired)
    text += f"\n\nfrom: {', '.join(args.files + args.plain)}"
    print(text)
    Path(args.results).write_text(text + "\n")
    figure(groups, reference, epochs, args.method, Path(args.figure))


if __name__ == "__main__":
    main()
