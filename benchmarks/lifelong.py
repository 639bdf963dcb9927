"""Life-long learning benchmark: HW14's permuted-MNIST setting for every method, and importance-estimation speed.

Every method runs its own config (``configs/<method>.yaml``) with HW14's settings put on top: permuted MNIST from
``--mnist`` (5 tasks, a fresh pixel permutation per task and seed), the 784-1024-512-256-10 MLP, batch 128, Adam
with lr 1e-4, ``--epochs-per-task`` epochs per task (HW14: 10), the whole stream in one ``fit``, the accuracy
matrix measured on the 10,000 MNIST test images of every task after every epoch (HW14 plots test accuracy), and
the penalty weights of HW14 (the configs' defaults: EWC 100, MAS 0.1, SI 1, RWalk 100, SCP 100). ``joint``
trains on the union of the tasks seen so far (the upper bound), ``replay`` keeps 100 images per task.

It prints, per method over ``--seeds``, the final average accuracy over the 5 tasks and the backward transfer
(mean and standard deviation), next to the HW14 sample solutions' average accuracy, writes the raw numbers to
``--results`` (.json, plus a .md copy of the tables) and a figure of every method's accuracy matrix (first seed)
to ``--figure``.

``--timing`` also times the importance estimation on the HW14 MLP: the diagonal empirical Fisher and the MAS
importance of ``--timing-samples`` MNIST images with ``torch.func`` per-sample gradients (``vmap(grad)``, one call
per batch of 64, and ``grad`` in a per-sample loop) against a plain loop of one autograd backward pass per sample;
median CPU (process) time of ``--repeats`` runs after one warm-up run, and a check that all give the same numbers.
``--methods`` with no names skips the training runs (timing only).

Budget knobs (``--train-samples``, ``--epochs-per-task``, ``--eval-images``, ``--importance-samples``) shrink
HW14's setting when the full one does not fit; the tables say which budget they ran with. The MAS-vs-HW14
investigation's options (HW14's importance protocols, importances on the scored images) live in
``benchmarks/investigations/lifelong_hw14.py``, which runs this benchmark with them.

Run (HW14's full setting): ``.venv/bin/python benchmarks/lifelong.py --mnist ../shared/data/mnist --timing``
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, so it runs from anywhere

from machine import cpu_name  # benchmarks/ is on sys.path when a script runs
from runner import fit

from lecture_modules.lifelong.metrics import accuracy_matrix_figure, summary

METHODS = ["finetune", "ewc", "mas", "si", "rwalk", "scp", "replay", "joint"]
HW14 = {"finetune": 83.7, "ewc": 91.1, "mas": 95.1, "si": 90.4, "rwalk": 94.0, "scp": 92.6}  # sample solutions, %
ESTIMATED = ("ewc", "mas", "scp")  # methods whose importance is estimated from data at the task's end


def hw14_overrides(args, seed: int) -> list[str]:
    base = "--data.init_args.base.init_args."
    out = [
        "--seed_everything", str(seed),
        f"{base}source", "datamodules.sources.IDXSource",
        f"{base}source.root", args.mnist,
        f"{base}batch_size", "128",
        f"{base}eval_batch_size", "1000",
        f"{base}val_fraction", "0",  # HW14 trains on all 60,000 images and plots test accuracy
        f"{base}seed", str(seed),
        "--data.init_args.num_tasks", str(args.num_tasks),
        "--data.init_args.scenario", args.scenario,
        "--data.init_args.epochs_per_task", str(args.epochs_per_task),
        "--data.init_args.eval_split", "test",
        "--data.init_args.seed", str(seed),
        "--model.init_args.net.widths", "[1024, 512, 256]",
        "--optimizer.init_args.lr", "1e-4",
        "--trainer.max_epochs", str(args.num_tasks * args.epochs_per_task),
    ]  # fmt: skip
    if args.scenario == "rotated":  # HW14's rotated MNIST: 0, 20, 40, 60 and 80 degrees
        out += ["--data.init_args.angles", str([20 * k for k in range(args.num_tasks)])]
    if args.train_samples:
        out += [f"{base}limit_train_samples", str(args.train_samples)]
    if args.eval_images:
        out += ["--trainer.limit_val_batches", str(-(-args.eval_images // 1000))]  # batches of 1000 test images
    return out


Overrides = Callable[[str, argparse.Namespace], tuple[list[str], list[str]]]
Notes = Callable[[argparse.Namespace], list[str]]


def lecture_overrides(method: str, args) -> tuple[list[str], list[str]]:
    """The command-line overrides of one method's run: (those put before HW14's setting, such as another class;
    those put after it, the options of this script)."""
    extra = []
    if method in ESTIMATED and args.importance_samples:
        extra = ["--model.init_args.importance_samples", str(args.importance_samples)]
    if method in ("ewc", "mas"):
        extra += ["--model.init_args.vectorize", str(args.vectorize).lower()]
    if method in ("mas", "scp") and args.accumulate:
        extra += ["--model.init_args.accumulate", args.accumulate]
    for item in args.model_arg:
        key, _, value = item.partition("=")
        extra += [f"--model.init_args.{key}", value]
    if args.reset_optimizer:
        extra += ["--trainer.callbacks+=callbacks.ResetOptimizerPerTask"]
    if args.penalty_weight is not None and method in HW14 and method != "finetune":
        extra += ["--model.init_args.penalty_weight", str(args.penalty_weight)]
    return [], extra


def run(method: str, seed: int, args, tmp: Path, overrides: Overrides = lecture_overrides) -> dict:
    first, extra = overrides(method, args)
    start = time.perf_counter()
    cli = fit(f"{method}.yaml", *first, *hw14_overrides(args, seed), *extra, root=tmp / f"{method}-{seed}")
    seconds = time.perf_counter() - start
    model = cli.model
    values = summary(model.matrix, model.random_init_acc)
    # curves: every task's test accuracy after every epoch (HW14 prints the average over the seen tasks per epoch)
    result = {"method": method, "seed": seed, "seconds": seconds, "matrix": model.matrix, "curves": model.curves}
    return {**result, **values}


def lecture_notes(args) -> list[str]:
    """The options of this script a run was made with, for the budget line of the table."""
    notes = []
    if getattr(args, "penalty_weight", None):
        notes.append(f"penalty weight {args.penalty_weight} for every method (not HW14's)")
    if getattr(args, "accumulate", None) not in (None, "sum"):
        notes.append(f"MAS/SCP importances accumulated by {args.accumulate}")
    if getattr(args, "model_arg", None):
        notes.append(f"model arguments {' '.join(args.model_arg)}")
    if getattr(args, "reset_optimizer", False):
        notes.append("optimiser state cleared at every task")
    return notes


def report(results: list[dict], args, notes: Notes = lecture_notes) -> str:
    lines = [
        f"machine: {cpu_name()}, torch {torch.__version__}, {torch.get_num_threads()} thread(s)",
        f"stream: {getattr(args, 'scenario', 'permuted')} MNIST; "
        f"budget: {getattr(args, 'num_tasks', 5)} tasks x {args.epochs_per_task} epochs, "
        f"{args.train_samples or 60000} training images per task, accuracy matrix on "
        f"{f'the first {args.eval_images}' if args.eval_images else 'all 10000'} test images of every task (the first "
        "2000 are harder: benchmarks/results/mnist_test_halves-task1-epyc2.md), "
        f"seeds {args.seeds}, importance estimated on "
        f"{args.importance_samples or 'all'} training images (EWC, MAS, SCP; per-sample gradients "
        f"{'vmap' if args.vectorize else 'torch.func loop'})" + "".join(f", {note}" for note in notes(args)),
        "",
        "| method | seeds | final avg acc (%) | per seed (%) | BWT (points) | forgetting (points) "
        "| HW14 sample avg acc (%) | s / run |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for method in args.methods:
        rows = [r for r in results if r["method"] == method]
        if not rows:
            continue

        def stat(key: str, rows=rows) -> str:
            vals = [100 * r[key] for r in rows if key in r]
            sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
            return f"{statistics.mean(vals):.2f} ± {sd:.2f}"

        secs = statistics.mean(r["seconds"] for r in rows)
        hw = HW14.get(method)
        per_seed = ", ".join(f"{100 * r['cl/avg_acc']:.2f}" for r in sorted(rows, key=lambda r: r["seed"]))
        lines.append(
            f"| {method} | {len(rows)} | {stat('cl/avg_acc')} | {per_seed} | {stat('cl/bwt')} | "
            f"{stat('cl/forgetting')} | {hw if hw is not None else '-'} | {secs:.0f} |"
        )
    return "\n".join(lines)


def matrices_figure(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    first = {}
    for r in results:
        first.setdefault(r["method"], r)
    cols = 4
    rows = -(-len(first) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.9 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (method, r) in zip(axes.flat, first.items()):
        single = accuracy_matrix_figure(r["matrix"])
        single.canvas.draw()
        ax.imshow(single.canvas.buffer_rgba())
        ax.set_title(f"{method}: avg {100 * r['cl/avg_acc']:.1f}%, BWT {100 * r.get('cl/bwt', 0):.1f}", fontsize=9)
        plt.close(single)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


# ---------------------------------------------------------------------------------------------- timing
def loop_importance(net, x, y, t, kind: str) -> dict[str, torch.Tensor]:
    """The per-sample Python loop the torch.func estimators replace: one backward pass per sample."""
    params = dict(net.named_parameters())
    sums = {n: torch.zeros_like(p) for n, p in params.items()}
    for i in range(len(y)):
        net.zero_grad()
        out = net(x[i : i + 1], t[i : i + 1])
        loss = torch.nn.functional.cross_entropy(out, y[i : i + 1]) if kind == "fisher" else out.pow(2).sum()
        loss.backward()
        for n, p in params.items():
            sums[n] += p.grad.pow(2) if kind == "fisher" else p.grad.abs()
    return {n: s / len(y) for n, s in sums.items()}


def timing(args) -> str:
    from datamodules.sources import IDXSource
    from lecture_modules.lifelong.continual import TaskNet
    from lecture_modules.lifelong.importance import fisher_diagonal, mas_importance
    from lecture_modules.nets import build_mlp

    torch.manual_seed(0)
    images, labels = IDXSource(args.mnist).load().splits["train"]
    x = (images[: args.timing_samples].float() / 255 - 0.1307) / 0.3081  # (N, 1, 28, 28)
    y = labels[: args.timing_samples]
    t = torch.zeros_like(y)
    net = TaskNet(build_mlp((1, 28, 28), 10, [1024, 512, 256], False, 0.0))
    batches = [(x[i : i + 64], y[i : i + 64], t[i : i + 64]) for i in range(0, len(y), 64)]
    fns = {
        ("fisher", "vmap"): lambda: fisher_diagonal(net, batches, "empirical"),
        ("fisher", "func loop"): lambda: fisher_diagonal(net, batches, "empirical", vectorize=False),
        ("fisher", "loop"): lambda: loop_importance(net, x, y, t, "fisher"),
        ("mas", "vmap"): lambda: mas_importance(net, batches),
        ("mas", "func loop"): lambda: mas_importance(net, batches, vectorize=False),
        ("mas", "loop"): lambda: loop_importance(net, x, y, t, "mas"),
    }
    times, results = {}, {}
    for key, fn in fns.items():
        results[key] = fn()  # warm-up
        samples = []
        for _ in range(args.repeats):
            start = time.process_time()  # CPU time: robust to other jobs sharing the cores
            fn()
            samples.append(time.process_time() - start)
        times[key] = statistics.median(samples)
    lines = [
        f"importance of {len(y)} MNIST images on the HW14 MLP (1.46 M parameters), median CPU time (process time, "
        f"not wall time: the cores are shared) of {args.repeats} runs after a warm-up, {torch.get_num_threads()} "
        "thread(s)",
        "",
        "| importance | torch.func vmap(grad), batches of 64 (s) | torch.func grad, per-sample loop (s) | "
        "autograd backward, per-sample loop (s) | vmap speed-up over the autograd loop | max relative difference |",
        "|---|---|---|---|---|---|",
    ]
    for kind in ("fisher", "mas"):
        b = results[kind, "loop"]
        diff = max(
            float((results[kind, v][n] - b[n]).abs().max() / b[n].abs().max().clamp_min(1e-30))
            for v in ("vmap", "func loop")
            for n in b
        )
        lines.append(
            f"| {kind} | {times[kind, 'vmap']:.3f} | {times[kind, 'func loop']:.3f} | {times[kind, 'loop']:.3f} | "
            f"{times[kind, 'loop'] / times[kind, 'vmap']:.2f}x | {diff:.1e} |"
        )
    return "\n".join(lines)


def result_groups(spec: str) -> list[dict]:
    """The run groups of a results file: ``PATH`` (a file this script wrote, or a curated one with ``groups``) or
    ``PATH#PREFIX`` (only the curated groups whose source file name starts with ``PREFIX``)."""
    path, _, prefix = spec.partition("#")
    saved = json.loads(Path(path).read_text())
    groups = saved.get("groups", [saved])
    return [g for g in groups if not prefix or str(g.get("from", "")).startswith(prefix)]


def combine(args, notes: Notes = lecture_notes) -> None:
    runs: dict[tuple[str, int], dict] = {}
    for i, path in enumerate(args.combine):
        for j, group in enumerate(result_groups(path)):
            if i == 0 and j == 0:
                first = argparse.Namespace(**group["args"])
            runs.update({(r["method"], r["seed"]): r for r in group["runs"]})
    results = [runs[key] for key in sorted(runs, key=lambda k: (k[1], METHODS.index(k[0])))]
    first.seeds = sorted({seed for _, seed in runs})
    present = {method for method, _ in runs}
    first.methods = [m for m in METHODS if m in present]
    text = report(results, first, notes) + f"\n\ncombined from: {', '.join(args.combine)}"
    print(text)
    Path(args.results).with_suffix(".md").write_text(text + "\n")
    matrices_figure(results, Path(args.figure))


def build_parser(accumulate: Sequence[str] = ("sum", "mean")) -> argparse.ArgumentParser:
    """This script's options (``accumulate``: the choices of ``--accumulate``)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mnist", help="folder with MNIST's four IDX files (gzipped or not)")
    parser.add_argument("--methods", nargs="*", default=METHODS, choices=METHODS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument(
        "--scenario",
        choices=["permuted", "rotated"],
        default="permuted",
        help="permuted MNIST, or MNIST rotated by 0/20/40/60/80 degrees (the stream of HW14's published sample code)",
    )
    parser.add_argument("--epochs-per-task", type=int, default=10, help="HW14: 10")
    parser.add_argument("--train-samples", type=int, default=None, help="training images per task (HW14: all)")
    parser.add_argument("--eval-images", type=int, default=None, help="test images per task in the matrix (all)")
    parser.add_argument("--importance-samples", type=int, default=None, help="EWC/MAS/SCP estimation images")
    parser.add_argument("--penalty-weight", type=float, default=None, help="overrides HW14's lambda of every method")
    parser.add_argument(
        "--accumulate",
        choices=list(accumulate),
        default=None,
        help="how MAS and SCP add up the importances of successive tasks (default: their configs'; mean: the average "
        "over the tasks seen, as HW14 2021)",
    )
    parser.add_argument(
        "--model-arg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="one more model init argument for every method run (e.g. per_sample=false for MAS); repeatable",
    )
    parser.add_argument("--num-tasks", type=int, default=5, help="tasks in the stream (HW14: 5)")
    parser.add_argument(
        "--reset-optimizer",
        action="store_true",
        help="a fresh optimiser state at every task (callbacks.ResetOptimizerPerTask), as HW14 builds a new Adam",
    )
    parser.add_argument("--threads", type=int, default=1, help="intra-op CPU threads")
    parser.add_argument("--vectorize", action="store_true", help="EWC/MAS per-sample gradients with vmap (else loop)")
    parser.add_argument("--timing", action="store_true", help="also time the importance estimation")
    parser.add_argument("--timing-samples", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--combine",
        nargs="+",
        metavar="JSON",
        help="no training: the table and figure of every run in these results files (a later file's run replaces an "
        "earlier one of the same method and seed; the budget line is read from the first)",
    )
    parser.add_argument("--results", default="runs/bench/lifelong.json")
    parser.add_argument("--figure", default="runs/bench/lifelong.png")
    return parser


def main(
    argv: Sequence[str] | None = None,
    parser: argparse.ArgumentParser | None = None,
    overrides: Overrides = lecture_overrides,
    notes: Notes = lecture_notes,
) -> None:
    """Run the benchmark (``parser``, ``overrides`` and ``notes``: another script's options, as
    ``benchmarks/investigations/lifelong_hw14.py`` gives)."""
    parser = parser or build_parser()
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    logging.getLogger("lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning_utilities").setLevel(logging.WARNING)  # the per-task matrices
    warnings.filterwarnings("ignore", module="lightning")  # the script's own output is the table
    if args.combine:
        combine(args, notes)
        return
    if not args.mnist:
        parser.error("--mnist DIR is needed to train (or --combine to tabulate saved runs)")
    out: dict = {"args": vars(args)}
    texts = []
    if args.timing:
        texts.append(timing(args))
        print(texts[-1], flush=True)
    results = []
    with tempfile.TemporaryDirectory() as tmp_dir:
        for seed in args.seeds:
            for method in args.methods:
                results.append(run(method, seed, args, Path(tmp_dir), overrides))
                r = results[-1]
                print(f"{method} seed {seed}: avg acc {100 * r['cl/avg_acc']:.2f}, BWT {100 * r['cl/bwt']:.2f} "
                      f"({r['seconds']:.0f} s)", flush=True)  # fmt: skip
                out["runs"] = results
                Path(args.results).parent.mkdir(parents=True, exist_ok=True)
                Path(args.results).write_text(json.dumps(out, indent=1))
    if results:
        texts.append(report(results, args, notes))
        print("\n" + texts[-1])
        matrices_figure(results, Path(args.figure))
    Path(args.results).parent.mkdir(parents=True, exist_ok=True)
    Path(args.results).with_suffix(".md").write_text("\n\n".join(texts) + "\n")
    print(f"\nraw numbers: {args.results}; figure: {args.figure}")


if __name__ == "__main__":
    main()
