"""Domain adaptation (lecture 11): target accuracy of source-only, DANN, MCD and the train-on-target oracle.

What is measured: each method is trained from its own config (``configs/<method>.yaml``, run through the same
``LectureCLI`` as ``python cli.py fit``; logger and checkpoint callbacks switched off) for ``--seeds`` seeds (the
seed drives initialisation, the source/target train/val/test split and the shuffling), then evaluated on the
held-out *test* split of both domains. The table shows target test accuracy (and source test accuracy) as
mean ± std over seeds, and, for networks with batch norm, the target test accuracy once the batch-norm statistics
are recomputed on target training images (AdaBN): the gap to the first column is what evaluating the target with
the training run's running statistics (a source/target mixture, or the source's alone) costs.

Label-free model selection: every validation epoch records ``val/label_free_score`` (source validation accuracy
minus the mean normalised entropy of target predictions; no target labels) and the true ``val/target_acc``. The
second table gives, for the adapting methods, the Spearman correlation between the two over epochs (mean over
seeds), and the target validation accuracy of the epoch that ``ModelCheckpoint(monitor="val/label_free_score")``
would keep, next to the last epoch's and the best possible epoch's.

Data: by default the embedded pair (scikit-learn digits -> the same digits re-rendered MNIST-M style, no download),
from ``configs/<method>.yaml``. ``--mnist DIR --mnistm PATH`` runs real MNIST (IDX files) -> MNIST-M (the
distributed ``mnist_m.tar.gz`` or its extracted folder) from ``configs/<method>_mnistm.yaml`` instead (28x28, the
paper's setting); ``--config`` names another config.

Long benchmarks run in pieces: ``--out-dir DIR`` writes one ``<method>-seed<seed>.json`` per run (test accuracies,
fit seconds, per-epoch validation history, the command line and the machine) as soon as it finishes, and
``--merge FILE...`` prints the tables of any set of such files without training.

Run: ``.venv/bin/python benchmarks/domain_adaptation.py`` (4 methods x 3 seeds; ~15 min on two busy CPU cores)
     ``.venv/bin/python benchmarks/domain_adaptation.py --mnist ../shared/data/mnist \
         --mnistm ../shared/data/mnist_m/mnist_m.tar.gz --methods dann --seeds 0 --out-dir results/da``
     ``.venv/bin/python benchmarks/domain_adaptation.py --merge results/da/*.json``
"""

from __future__ import annotations

import argparse
import copy
import json
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, so it runs from anywhere

from machine import cpu_name  # benchmarks/ is on sys.path when a script runs

import cli
from lecture_modules.domain_adaptation.core import recompute_batch_norm_statistics

REPO = Path(__file__).resolve().parents[1]
METHODS = ("source_only", "dann", "mcd", "target_oracle")
ADAPTING = ("dann", "mcd")
HISTORY_KEYS = ("val/label_free_score", "val/target_acc", "val/source_acc", "val/domain_acc", "val/proxy_a_distance")


class EpochHistory(L.Callback):
    """Records the label-free score and the true target accuracy after every validation epoch."""

    def __init__(self) -> None:
        self.rows: list[dict[str, float]] = []

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return
        metrics = trainer.callback_metrics
        row = {k: float(metrics[k]) for k in HISTORY_KEYS if k in metrics}
        self.rows.append({"epoch": trainer.current_epoch, "step": trainer.global_step, **row})
        progress = " ".join(f"{k.split('/')[1]} {v:.4f}" for k, v in row.items())
        print(f"  epoch {trainer.current_epoch} step {trainer.global_step}: {progress}", file=sys.stderr, flush=True)


def config_path(method: str, args: argparse.Namespace) -> Path:
    """The config a run starts from: ``--config``, else ``configs/<method>[_mnistm].yaml``."""
    if args.config:
        return Path(args.config)
    return REPO / "configs" / f"{method}{'_mnistm' if args.mnist else ''}.yaml"


def data_args(args: argparse.Namespace) -> list[str]:
    """The real-data configs take both data paths as required settings."""
    if args.mnist is None:
        return []
    return [
        f"--data.init_args.source.init_args.root={args.mnist}",
        f"--data.init_args.target.init_args.root={args.mnistm}",
    ]


def cli_args(method: str, seed: int, args: argparse.Namespace, workdir: Path) -> list[str]:
    """The ``cli.py fit`` arguments of one run (logger and checkpoints off, the seed everywhere)."""
    argv = [
        "fit",
        "--config",
        str(config_path(method, args)),
        "--trainer.accelerator=cpu",
        "--trainer.devices=1",
        "--trainer.logger=false",
        "--trainer.callbacks=[]",
        "--trainer.enable_checkpointing=false",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        f"--trainer.default_root_dir={workdir}",
        f"--seed_everything={seed}",
        f"--data.init_args.seed={seed}",
        "--model.init_args.embedding=none",
        *data_args(args),
    ]
    if args.epochs is not None:
        argv.append(f"--trainer.max_epochs={args.epochs}")
    if args.limit_train_samples is not None:
        argv.append(f"--data.init_args.limit_train_samples={args.limit_train_samples}")
    return argv + [f"--{item}" for item in args.override]


def run_one(method: str, seed: int, args: argparse.Namespace, workdir: Path) -> dict:
    """Fit one method with one seed from its config; return test accuracies and the per-epoch history."""
    history = EpochHistory()
    argv = cli_args(method, seed, args, workdir)
    sys.argv[1:] = []  # the CLI reads `argv` only; the script's own arguments are not for it
    start = time.perf_counter()
    lecture = cli.run(argv, trainer_defaults={"callbacks": [history]})
    fit_s = time.perf_counter() - start
    lecture.trainer.test(lecture.model, datamodule=lecture.datamodule, verbose=False)
    metrics = lecture.trainer.callback_metrics
    target_adabn = target_accuracy_with_target_statistics(lecture.model, lecture.datamodule)
    return {
        "method": method,
        "seed": seed,
        "target": float(metrics["test/target_acc"]),
        "source": float(metrics["test/source_acc"]),
        "target_adabn": target_adabn,
        "history": history.rows,
        "seconds": fit_s,
        "steps": int(lecture.trainer.global_step),
        "argv": argv,
        "machine": machine(args.threads),
    }


def target_accuracy_with_target_statistics(model: torch.nn.Module, datamodule, samples: int = 10000) -> float | None:
    """Target test accuracy after the batch-norm statistics are recomputed on (up to ``samples``) target training
    images (AdaBN): how much evaluating the target with the training run's mixed statistics costs. None without
    batch norm."""
    model = copy.deepcopy(model).cpu()
    if not recompute_batch_norm_statistics(model, datamodule.dataset("target", "train").tensors[0][:samples]):
        return None
    x, y = datamodule.dataset("target", "test").tensors
    with torch.no_grad():
        predicted = torch.cat([model(chunk).argmax(dim=1) for chunk in x.split(512)])
    return float((predicted == y).float().mean())


def machine(threads: int) -> str:
    return (
        f"{cpu_name()}, {os.cpu_count()} CPUs ({threads} torch thread(s)), torch {torch.__version__}, "
        f"Lightning {L.__version__}, Python {platform.python_version()}"
    )


def spearman(a: list[float], b: list[float]) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic) if len(a) > 2 else float("nan")


def mean_std(values: list[float]) -> str:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * statistics.mean(values):.2f} ± {100 * std:.2f}"


def selection_row(method: str, runs: list[dict]) -> str:
    rhos, chosen, last, best = [], [], [], []
    for run in runs:
        rows = [r for r in run["history"] if "val/target_acc" in r and "val/label_free_score" in r]
        score, acc = [r["val/label_free_score"] for r in rows], [r["val/target_acc"] for r in rows]
        rhos.append(spearman(score, acc))
        chosen.append(acc[max(range(len(score)), key=score.__getitem__)])  # first maximum, as ModelCheckpoint
        last.append(acc[-1])
        best.append(max(acc))
    rho = statistics.mean(rhos)
    return f"| `{method}` | {rho:+.2f} | {mean_std(chosen)} | {mean_std(last)} | {mean_std(best)} |"


def print_tables(results: dict[str, list[dict]], title: str) -> None:
    """The accuracy table (mean ± std over seeds) and, for adapting methods, the label-free selection table."""
    print(f"\n{title}\n")
    print("| method | seeds | target test acc % | source test acc % | target, target BN statistics % | fit s/run |")
    print("|---|---|---:|---:|---:|---:|")
    for method, runs in results.items():
        seconds = statistics.mean(r["seconds"] for r in runs)
        seeds = ",".join(str(r.get("seed", "?")) for r in runs)
        adabn = [r["target_adabn"] for r in runs if r.get("target_adabn") is not None]
        print(
            f"| `{method}` | {seeds} | {mean_std([r['target'] for r in runs])} | "
            f"{mean_std([r['source'] for r in runs])} | {mean_std(adabn) if adabn else '—'} | {seconds:.0f} |"
        )
    adapting = [m for m in results if m.split()[0] in ADAPTING and any(len(r["history"]) > 2 for r in results[m])]
    if adapting:
        print("\nLabel-free selection (`val/label_free_score`) vs true target accuracy, per validation epoch:\n")
        print("| method | Spearman rho | target val acc % at best score | at last epoch | at best epoch |")
        print("|---|---:|---:|---:|---:|")
        for method in adapting:
            print(selection_row(method, results[method]))


def merge(files: list[str]) -> None:
    """Print the tables of per-run JSON files (``--out-dir``), grouped by method and config."""
    results: dict[str, list[dict]] = {}
    machines = set()
    for name in files:
        run = json.loads(Path(name).read_text())
        argv = run.get("argv", [])
        config = Path(argv[argv.index("--config") + 1]).stem if "--config" in argv else "?"
        results.setdefault(f"{run['method']} {config}", []).append(run)
        machines.add(run.get("machine", "?"))
    print_tables(results, f"merged from {len(files)} run(s); {'; '.join(sorted(machines))}")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=None, help="override the configs' trainer.max_epochs")
    parser.add_argument("--limit-train-samples", type=int, default=None, help="per domain, for quick checks")
    parser.add_argument("--mnist", help="folder with MNIST IDX files (source); needs --mnistm")
    parser.add_argument("--mnistm", help="MNIST-M: mnist_m.tar.gz as distributed, or its extracted folder")
    parser.add_argument("--config", help="config to start from (default: configs/<method>[_mnistm].yaml)")
    parser.add_argument("--override", nargs="*", default=[], help="extra CLI settings, e.g. model.init_args.x=1")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (1 avoids oversubscription on a busy CPU)"
    )
    parser.add_argument("--json", help="also write all raw results to this file")
    parser.add_argument("--out-dir", help="write one <method>-seed<seed>.json per run here, as each finishes")
    parser.add_argument("--merge", nargs="+", metavar="FILE", help="print the tables of per-run JSON files, no runs")
    args = parser.parse_args()
    if (args.mnist is None) != (args.mnistm is None):
        parser.error("--mnist and --mnistm go together")
    return args


def main() -> None:
    args = parse_args()
    if args.merge:
        merge(args.merge)
        return
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    os.environ.setdefault("WANDB_MODE", "disabled")
    torch.set_num_threads(args.threads)
    out_dir = Path(args.out_dir) if args.out_dir else None
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for method in args.methods:
            for seed in args.seeds:
                run = run_one(method, seed, args, Path(tmp) / f"{method}-{seed}")
                results.setdefault(method, []).append(run)
                if out_dir is not None:
                    (out_dir / f"{method}-seed{seed}.json").write_text(json.dumps(run, indent=1))
                print(
                    f"{method} seed {seed}: target {run['target']:.4f} source {run['source']:.4f} "
                    f"({run['seconds']:.0f} s)",
                    file=sys.stderr,
                    flush=True,
                )
    data = "MNIST -> MNIST-M" if args.mnist else "digits -> MNIST-M-style digits (embedded)"
    print_tables(results, f"{data}; {len(args.seeds)} seeds; {machine(args.threads)}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
