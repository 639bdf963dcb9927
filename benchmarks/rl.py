"""Reinforcement learning (lecture 12, issue 25): greedy return against environment steps on CartPole-v1.

Each method is its shipped config at that config's step budget, run through the CLI in this process:
``configs/policy_gradient.yaml`` with each of the lecture's five advantage versions as written (advantages not
standardised; version 4 with short rollouts, see ``SHORT_ROLLOUTS``) and as shipped (``pg_shipped``: version 3,
standardised), ``configs/a2c.yaml``, ``configs/ppo.yaml``, ``configs/dqn.yaml`` (``dqn``) and the same with
``double: true`` (``dqn_double``). For every (method, seed) piece it records, at each
epoch's end, the environment steps so far and ``val/return`` (5 greedy episodes at fixed seeds), then runs
``test`` on the final weights: HW12's protocol (one environment seeded once with 543, 5 greedy episodes), mean
total reward and its bracket. One JSON per piece; the merge prints one markdown table (mean ± std over seeds)
with the reference figures next to ours.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/rl.py --seeds 0                     # every method, 1 seed
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/rl.py --methods ppo a2c --seeds 1 2 # more pieces
    .venv/bin/python benchmarks/rl.py --merge runs/bench/rl --out benchmarks/results/rl-cartpole-xeon2.md
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import lightning as L

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, so it runs from anywhere

from machine import cpu_name  # benchmarks/ is on sys.path when a script runs
from runner import QUIET, REPO

from cli import run
from lecture_modules.rl.core import hw12_bracket

RAW = ["--model.init_args.normalize_advantage", "false"]  # the lecture's estimators as written
SHORT_ROLLOUTS = [  # version 4 bootstraps from its own critic: many small updates, as A2C makes them
    "--data.init_args.rollout_steps", "8", "--data.init_args.rollouts_per_epoch", "500", "--trainer.max_epochs", "8",
    "--optimizer.init_args.lr", "0.001",
]  # fmt: skip
METHODS = {  # name -> (config, overrides)
    **{
        f"pg_{version}": ("policy_gradient.yaml", ["--model.init_args.advantage", version, *RAW])
        for version in ("cumulative", "discounted", "baseline", "mc_critic")
    },
    "pg_td_critic": ("policy_gradient.yaml", ["--model.init_args.advantage", "td_critic", *RAW, *SHORT_ROLLOUTS]),
    "pg_shipped": ("policy_gradient.yaml", []),  # the config as shipped: version 3, advantages standardised
    "a2c": ("a2c.yaml", []),
    "ppo": ("ppo.yaml", []),
    "dqn": ("dqn.yaml", []),
    "dqn_double": ("dqn.yaml", ["--model.init_args.double", "true"]),
}
SOLVED = 475.0  # CartPole-v1's "solved" threshold (its reward_threshold)
REFERENCE = (
    "CleanRL ppo.py on CartPole-v1: 492.4 ± 13.1 (500k steps, 3 seeds, episodic return during training); "
    "RL Baselines3 Zoo DQN on CartPole-v1: 500 ± 0 (50k steps, one run, ± over evaluation episodes). "
    "CartPole-v1 caps an episode at 500 steps; 475 is its solved threshold."
)


class Curve(L.Callback):
    """Environment steps (all ranks) and ``val/return`` at every validation after the sanity check."""

    def __init__(self) -> None:
        self.points: list[tuple[int, float]] = []

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking and "val/return" in trainer.callback_metrics:
            steps = trainer.datamodule.env_steps * trainer.world_size
            self.points.append((steps, float(trainer.callback_metrics["val/return"])))


def run_piece(method: str, seed: int, root: Path) -> dict:
    config, overrides = METHODS[method]
    curve = Curve()
    start = time.perf_counter()
    args = ["--config", str(REPO / "configs" / config), *QUIET, *overrides, "--seed_everything", str(seed)]
    cli = run([*args, "--trainer.default_root_dir", str(root / f"{method}-seed{seed}")], run=False)
    cli.trainer.callbacks.append(curve)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    seconds = time.perf_counter() - start
    last_epoch_rollout = float(cli.trainer.callback_metrics.get("rollout/return", float("nan")))
    cli.trainer.test(cli.model, datamodule=cli.datamodule, verbose=False)
    hw12 = float(cli.trainer.callback_metrics["test/return"])
    solved_at = next((steps for steps, value in curve.points if value >= SOLVED), None)
    return {
        "method": method, "seed": seed, "config": config, "overrides": overrides,
        "env_steps": cli.datamodule.env_steps, "seconds": round(seconds, 1),
        "curve": curve.points, "final_val_return": curve.points[-1][1],
        "last_epoch_rollout_return": last_epoch_rollout, "solved_at": solved_at,
        "hw12_mean": hw12, "hw12_bracket": hw12_bracket(hw12),
    }  # fmt: skip


def _mean_std(values: list[float], fmt: str = "{:.1f}") -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return fmt.format(values[0])
    return f"{fmt.format(statistics.mean(values))} ± {fmt.format(statistics.stdev(values))}"


def merge(folder: Path) -> str:
    """One markdown table from the JSON pieces in ``folder``: mean ± std over seeds per method."""
    pieces: dict[str, list[dict]] = {}
    for path in sorted(folder.glob("*.json")):
        piece = json.loads(path.read_text())
        pieces.setdefault(piece["method"], []).append(piece)
    lines = [
        "| method | seeds | env steps | first greedy val/return >= 475 at (steps) | final val/return | last epoch's "
        "training episodes | HW12 test mean (bracket) | wall s | env steps/s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for method in [m for m in METHODS if m in pieces]:
        runs = pieces[method]
        solved = [r["solved_at"] for r in runs if r["solved_at"] is not None]
        solved_text = _mean_std(solved, "{:.0f}")
        solved_text += "" if len(solved) == len(runs) else f" ({len(solved)}/{len(runs)} seeds)"
        hw12 = _mean_std([r["hw12_mean"] for r in runs]) + " (" + ", ".join(r["hw12_bracket"] for r in runs) + ")"
        lines.append(
            f"| {method} | {', '.join(str(r['seed']) for r in runs)} | {runs[0]['env_steps']} | {solved_text} | "
            f"{_mean_std([r['final_val_return'] for r in runs])} | "
            f"{_mean_std([r['last_epoch_rollout_return'] for r in runs])} | {hw12} | "
            f"{_mean_std([r['seconds'] for r in runs])} | "
            f"{_mean_std([r['env_steps'] / r['seconds'] for r in runs], '{:.0f}')} |"
        )
    curves = ["", "Greedy val/return (5 episodes) at each epoch's end, per piece: (env steps, return)", ""]
    for method in [m for m in METHODS if m in pieces]:
        for r in pieces[method]:
            points = ", ".join(f"({s}, {v:.0f})" for s, v in r["curve"])
            curves.append(f"- {method} seed {r['seed']}: {points}")
    machine = f"Machine: {cpu_name()}. Reference: {REFERENCE}"
    return "\n".join([*lines, "", machine, *curves]) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", choices=sorted(METHODS), default=list(METHODS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--out-dir", type=Path, default=Path("runs/bench/rl"), help="one JSON per piece")
    parser.add_argument("--merge", type=Path, help="only merge the JSON pieces in this folder into markdown")
    parser.add_argument("--out", type=Path, help="also write the merged markdown here")
    args = parser.parse_args()
    if not args.merge:
        args.out_dir.mkdir(parents=True, exist_ok=True)
        for method in args.methods:
            for seed in args.seeds:
                piece = run_piece(method, seed, args.out_dir / "runs")
                (args.out_dir / f"{method}-seed{seed}.json").write_text(json.dumps(piece, indent=1))
                print(f"{method} seed {seed}: {piece['hw12_mean']:.1f} ({piece['seconds']} s)", flush=True)
    table = merge(args.merge or args.out_dir)
    print(table)
    if args.out:
        args.out.write_text(table)


if __name__ == "__main__":
    main()
