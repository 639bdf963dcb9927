"""Reinforcement learning (lecture 12, issue 25): greedy return against environment steps, CartPole-v1 and LunarLander.

Each method is its shipped config at that config's step budget, run through the CLI in this process:
``configs/policy_gradient.yaml`` with each of the lecture's five advantage versions as written (advantages not
standardised; version 4 with short rollouts, see ``SHORT_ROLLOUTS``) and as shipped (``pg_shipped``: version 3,
standardised), ``configs/a2c.yaml``, ``configs/ppo.yaml``, ``configs/dqn.yaml`` (``dqn``) and the same with
``double: true`` (``dqn_double``), ``dqn_anneal`` / ``dqn_double_anneal`` (the same with the learning rate falling
linearly to 0); on LunarLander-v3 the shipped ``*_lunarlander`` configs, the lecture's five versions as written at
200k steps (``pg_<version>_lunarlander``) and ``a2c_lunarlander_value05`` (the A2C config before its value-weight
fix). For every (method, seed) piece it records, at each epoch's end, the environment steps so far and
``val/return`` (5 greedy episodes at fixed seeds), keeps the weights of the best epoch (highest ``val/return``, as
``ModelCheckpoint(monitor="val/return")`` does), then runs HW12's test (one environment seeded once with 543, 5
episodes; mean total reward and its bracket) four times: final and best weights, each with greedy actions and with
actions sampled from a generator seeded with 543 (``hw12_sample_actions``, as HW12's notebook samples). One JSON per
piece; the merge prints one markdown table (mean ± std over seeds) with the reference figures next to ours.
``--sb3-a2c`` runs Stable-Baselines3's own A2C with the zoo's LunarLander settings through the same test protocols.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/rl.py --seeds 0                     # every method, 1 seed
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/rl.py --methods ppo a2c --seeds 1 2 # more pieces
    .venv/bin/python benchmarks/rl.py --merge runs/bench/rl --out benchmarks/results/rl-cartpole-xeon2.md
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/rl.py --sb3-a2c --seeds 0 1 2 --out-dir runs/bench/rl-sb3
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
# LunarLander, version 4: 5 envs x 8 steps x 500 rollouts x 10 epochs = 200k steps (the other versions: 20 epochs
# x 2 batches x 5 envs x 1000 steps = 200k)
LUNAR_SHORT_ROLLOUTS = [
    "--data.init_args.rollout_steps", "8", "--data.init_args.rollouts_per_epoch", "500", "--trainer.max_epochs", "10",
    "--optimizer.init_args.lr", "0.001",
]  # fmt: skip
METHODS = {  # name -> (config, overrides)
    **{
        f"pg_{version}": ("policy_gradient.yaml", ["--model.init_args.advantage", version, *RAW])
        for version in ("cumulative", "discounted", "baseline", "mc_critic")
    },
    "pg_td_critic": ("policy_gradient.yaml", ["--model.init_args.advantage", "td_critic", *RAW, *SHORT_ROLLOUTS]),
    "pg_td_critic_256k": (  # the same at twice the budget: does the seed that had not solved at 128k solve?
        "policy_gradient.yaml",
        ["--model.init_args.advantage", "td_critic", *RAW, *SHORT_ROLLOUTS, "--trainer.max_epochs", "16"],
    ),
    "pg_shipped": ("policy_gradient.yaml", []),  # the config as shipped: version 3, advantages standardised
    "a2c": ("a2c.yaml", []),
    "ppo": ("ppo.yaml", []),
    "dqn": ("dqn.yaml", []),
    "dqn_double": ("dqn.yaml", ["--model.init_args.double", "true"]),
    "dqn_anneal": ("dqn.yaml", ["--model.init_args.anneal_lr", "true"]),
    "dqn_double_anneal": ("dqn.yaml", ["--model.init_args.double", "true", "--model.init_args.anneal_lr", "true"]),
    "ppo_lunarlander": ("ppo_lunarlander.yaml", []),
    "pg_lunarlander": ("policy_gradient_lunarlander.yaml", []),
    "a2c_lunarlander": ("a2c_lunarlander.yaml", []),
    "a2c_lunarlander_value05": ("a2c_lunarlander.yaml", ["--model.init_args.value_coef", "0.5"]),  # before the fix
    # the lecture's five versions on LunarLander as written (advantages not standardised), 200k steps each
    **{
        f"pg_{version}_lunarlander": (
            "policy_gradient_lunarlander.yaml",
            ["--model.init_args.advantage", version, *RAW, "--trainer.max_epochs", "20"],
        )
        for version in ("cumulative", "discounted", "baseline", "mc_critic")
    },
    "pg_td_critic_lunarlander": (
        "policy_gradient_lunarlander.yaml",
        ["--model.init_args.advantage", "td_critic", *RAW, *LUNAR_SHORT_ROLLOUTS],
    ),
    "dqn_lunarlander": ("dqn_lunarlander.yaml", []),
    "dqn_double_lunarlander": ("dqn_lunarlander.yaml", ["--model.init_args.double", "true"]),
}
SOLVED = {"CartPole-v1": 475.0, "LunarLander-v3": 200.0}  # the environments' reward_threshold ("solved")
REFERENCE = (
    "CleanRL ppo.py on CartPole-v1: 492.4 ± 13.1 (500k steps, 3 seeds, episodic return during training); "
    "RL Baselines3 Zoo DQN on CartPole-v1: 500 ± 0 (50k steps, one run, ± over evaluation episodes). "
    "CartPole-v1 caps an episode at 500 steps; 475 is its solved threshold."
)
REFERENCE_LUNAR = (
    "RL Baselines3 Zoo on LunarLander-v2 (v3 fixes bugs of v2, the task is the same): PPO 242 ± 32 at 1M steps, "
    "A2C 156 ± 80 at 200k, DQN 154 ± 79 at 100k (single runs, ± over evaluation episodes, not seeds). 200 is "
    "LunarLander's solved threshold; HW12's brackets: < 0, 0-99, 100-199, 200-240, >= 241."
)


NO_VIDEO = ["--model.init_args.video_episodes", "0"]
# The speed comparison: the same PPO in both libraries (separate 64-64 tanh actor and critic, orthogonal init, Adam,
# GAE, clipped surrogate, entropy bonus, gradient-norm clipping, advantages normalised per minibatch).
SPEED_SETTINGS = {  # name -> (config, env_id, num_envs, rollout_steps, minibatch, epochs, rollouts per timed run)
    "cartpole": ("ppo.yaml", "CartPole-v1", 4, 128, 128, 4, 40),
    "lunarlander": ("ppo_lunarlander.yaml", "LunarLander-v3", 16, 1024, 64, 4, 2),
}


def time_ours(setting: str, seed: int) -> float:
    """Seconds of ``trainer.fit`` (no validation, checkpoints, logger or videos) for the setting's rollouts."""
    config, _env_id, envs, steps, minibatch, epochs, rollouts = SPEED_SETTINGS[setting]
    args = [
        "--config", str(REPO / "configs" / config), *QUIET, *NO_VIDEO, "--seed_everything", str(seed),
        "--data.init_args.num_envs", str(envs), "--data.init_args.rollout_steps", str(steps),
        "--data.init_args.rollouts_per_epoch", str(rollouts), "--trainer.max_epochs", "1",
        "--model.init_args.num_minibatches", str(envs * steps // minibatch),
        "--model.init_args.update_epochs", str(epochs), "--trainer.limit_val_batches", "0",
        "--trainer.num_sanity_val_steps", "0", "--trainer.default_root_dir", "runs/bench/rl-speed",
    ]  # fmt: skip
    cli = run(args, run=False)
    start = time.perf_counter()
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    return time.perf_counter() - start


def time_sb3(setting: str, seed: int) -> float:
    """Seconds of Stable-Baselines3's ``PPO.learn`` with the same network, environments, rollout and updates."""
    import torch
    from stable_baselines3 import PPO as SB3PPO
    from stable_baselines3.common.env_util import make_vec_env

    _config, env_id, envs, steps, minibatch, epochs, rollouts = SPEED_SETTINGS[setting]
    gamma, lam = (0.999, 0.98) if setting == "lunarlander" else (0.99, 0.95)
    vec = make_vec_env(env_id, n_envs=envs, seed=seed)  # DummyVecEnv: stepped in this process, as ours
    model = SB3PPO(
        "MlpPolicy", vec, n_steps=steps, batch_size=minibatch, n_epochs=epochs, gamma=gamma, gae_lambda=lam,
        ent_coef=0.01, learning_rate=3e-4, seed=seed, device="cpu", verbose=0,
        policy_kwargs={"net_arch": {"pi": [64, 64], "vf": [64, 64]}, "activation_fn": torch.nn.Tanh},
    )  # fmt: skip
    start = time.perf_counter()
    model.learn(total_timesteps=envs * steps * rollouts)
    seconds = time.perf_counter() - start
    vec.close()
    return seconds


def speed(setting: str, repeats: int) -> dict:
    """Environment steps per second of both, alternating, after one warm-up run of each; medians over repeats."""
    *_, envs, steps, _, _, rollouts = SPEED_SETTINGS[setting]
    total = envs * steps * rollouts
    time_ours(setting, 0), time_sb3(setting, 0)  # warm-up: imports, allocator, first-call overheads
    ours, sb3 = [], []
    for repeat in range(repeats):
        ours.append(total / time_ours(setting, repeat + 1))
        sb3.append(total / time_sb3(setting, repeat + 1))
    ratio = statistics.median(ours) / statistics.median(sb3)
    return {"setting": setting, "env_steps": total, "ours": ours, "sb3": sb3, "ratio": ratio}


def profile_ours(setting: str, top: int = 25) -> str:
    """cProfile of one of our timed runs: the functions with the most cumulative time."""
    import cProfile
    import io
    import pstats

    profiler = cProfile.Profile()
    profiler.enable()
    time_ours(setting, 99)
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(top)
    return out.getvalue()


def sb3_a2c_piece(seed: int, steps: int = 200_000) -> dict:
    """Stable-Baselines3's own A2C with RL Baselines3 Zoo's LunarLander-v2 settings, on LunarLander-v3 (8
    environments x 5 steps, gamma 0.995, entropy 1e-5, lr 8.3e-4 falling linearly to 0; SB3's defaults otherwise:
    RMSprop alpha 0.99 eps 1e-5, GAE lambda 1, value 0.5 x MSE, gradient norm 0.5, orthogonal init), then our
    protocols on it: HW12 greedy and sampled, and the greedy validation episodes (seeds 10000-10004)."""
    import torch
    from stable_baselines3 import A2C as SB3A2C
    from stable_baselines3.common.env_util import make_vec_env

    from datamodules.rollouts import make_env, run_episodes

    vec = make_vec_env("LunarLander-v3", n_envs=8, seed=seed)
    model = SB3A2C(
        "MlpPolicy", vec, n_steps=5, gamma=0.995, ent_coef=1e-5, learning_rate=lambda remaining: 8.3e-4 * remaining,
        seed=seed, device="cpu", verbose=0,
    )  # fmt: skip
    start = time.perf_counter()
    model.learn(total_timesteps=steps)
    seconds = time.perf_counter() - start
    vec.close()

    def play(seeds: list[int | None], deterministic: bool) -> float:
        def policy(obs: torch.Tensor) -> torch.Tensor:
            return torch.as_tensor(model.predict(obs.numpy(), deterministic=deterministic)[0])

        env = make_env("LunarLander-v3")
        try:
            return statistics.mean(total for total, _ in run_episodes(env, policy, seeds))
        finally:
            env.close()

    hw12 = [543, None, None, None, None]
    greedy, sampled = play(hw12, True), play(hw12, False)
    val = play([10_000 + i for i in range(5)], True)
    return {
        "method": "sb3_a2c_lunarlander", "seed": seed, "config": "stable-baselines3 A2C, zoo settings",
        "overrides": [], "env_id": "LunarLander-v3", "env_steps": steps, "seconds": round(seconds, 1),
        "curve": [(steps, val)], "final_val_return": val, "last_epoch_rollout_return": float("nan"),
        "solved_at": steps if val >= SOLVED["LunarLander-v3"] else None,
        "hw12_mean": greedy, "hw12_bracket": hw12_bracket(greedy),
        "hw12": {"final_greedy": greedy, "final_sampled": sampled},
    }  # fmt: skip


class Curve(L.Callback):
    """Environment steps (all ranks) and ``val/return`` at every validation after the sanity check."""

    def __init__(self) -> None:
        self.points: list[tuple[int, float]] = []

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking and "val/return" in trainer.callback_metrics:
            steps = trainer.datamodule.env_steps * trainer.world_size
            self.points.append((steps, float(trainer.callback_metrics["val/return"])))


class BestWeights(L.Callback):
    """The weights of the epoch with the highest ``val/return`` (the first of equals), kept in memory: what
    ``ModelCheckpoint(monitor="val/return", mode="max")`` keeps as the best checkpoint, without writing files."""

    def __init__(self) -> None:
        self.best, self.state = float("-inf"), None

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        value = trainer.callback_metrics.get("val/return")
        if not trainer.sanity_checking and value is not None and float(value) > self.best:
            self.best = float(value)
            self.state = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}


def hw12_tests(cli, best: BestWeights) -> dict[str, float]:
    """HW12's test (seed 543, 5 episodes) on the final weights and on the best epoch's, each with greedy and with
    sampled actions (``hw12_sample_actions``: a generator seeded with 543)."""
    results = {}
    final = {k: v.detach().clone() for k, v in cli.model.state_dict().items()}
    for weights, state in (("final", final), ("best", best.state or final)):
        cli.model.load_state_dict(state)
        for mode in ("greedy", "sampled"):
            cli.datamodule.hw12_sample_actions = mode == "sampled"
            cli.trainer.test(cli.model, datamodule=cli.datamodule, verbose=False)
            results[f"{weights}_{mode}"] = float(cli.trainer.callback_metrics["test/return"])
    cli.model.load_state_dict(final)
    cli.datamodule.hw12_sample_actions = False
    return results


def run_piece(method: str, seed: int, root: Path) -> dict:
    config, overrides = METHODS[method]
    curve, best = Curve(), BestWeights()
    start = time.perf_counter()
    args = ["--config", str(REPO / "configs" / config), *QUIET, *NO_VIDEO, *overrides, "--seed_everything", str(seed)]
    cli = run([*args, "--trainer.default_root_dir", str(root / f"{method}-seed{seed}")], run=False)
    cli.trainer.callbacks += [curve, best]
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    seconds = time.perf_counter() - start
    last_epoch_rollout = float(cli.trainer.callback_metrics.get("rollout/return", float("nan")))
    env_steps = cli.datamodule.env_steps
    tests = hw12_tests(cli, best)
    hw12 = tests["final_greedy"]
    env_id = cli.datamodule.env_id
    solved_at = next((steps for steps, value in curve.points if value >= SOLVED.get(env_id, float("inf"))), None)
    return {
        "method": method, "seed": seed, "config": config, "overrides": overrides, "env_id": env_id,
        "env_steps": env_steps, "seconds": round(seconds, 1),
        "curve": curve.points, "final_val_return": curve.points[-1][1],
        "last_epoch_rollout_return": last_epoch_rollout, "solved_at": solved_at,
        "hw12_mean": hw12, "hw12_bracket": hw12_bracket(hw12), "hw12": tests, "best_val_return": best.best,
    }  # fmt: skip


def _mean_std(values: list[float], fmt: str = "{:.1f}") -> str:
    values = [v for v in values if v == v]  # NaN: not recorded (SB3's pieces have no training-episode mean)
    if not values:
        return "-"
    if len(values) == 1:
        return fmt.format(values[0])
    return f"{fmt.format(statistics.mean(values))} ± {fmt.format(statistics.stdev(values))}"


def _hw12_more(runs: list[dict]) -> str:
    """The sampled and best-epoch HW12 tests (mean ± std over the seeds that have them; "-" for pieces run before)."""
    cells = []
    for key in ("final_sampled", "best_greedy", "best_sampled"):
        values = [r["hw12"][key] for r in runs if key in r.get("hw12", {})]
        text = _mean_std(values)
        cells.append(text if len(values) in (0, len(runs)) else f"{text} ({len(values)}/{len(runs)} seeds)")
    return " | ".join(cells)


def merge(folder: Path) -> str:
    """One markdown table from the JSON pieces in ``folder``: mean ± std over seeds per method."""
    pieces: dict[str, list[dict]] = {}
    for path in sorted(folder.glob("*.json")):
        piece = json.loads(path.read_text())
        pieces.setdefault(piece["method"], []).append(piece)
    env_id = next(iter(pieces.values()))[0].get("env_id", "CartPole-v1")  # pieces before LunarLander: CartPole
    lines = [
        f"| method | seeds | env steps | first greedy val/return >= {SOLVED[env_id]:.0f} at (steps) | final val/return "
        "| last epoch's training episodes | HW12 test, final weights, greedy (bracket) | final, sampled | best "
        "epoch, greedy | best epoch, sampled | wall s | env steps/s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    order = [m for m in METHODS if m in pieces] + sorted(m for m in pieces if m not in METHODS)
    for method in order:
        runs = pieces[method]
        solved = [r["solved_at"] for r in runs if r["solved_at"] is not None]
        solved_text = _mean_std(solved, "{:.0f}")
        solved_text += "" if len(solved) == len(runs) else f" ({len(solved)}/{len(runs)} seeds)"
        hw12 = _mean_std([r["hw12_mean"] for r in runs]) + " (" + ", ".join(r["hw12_bracket"] for r in runs) + ")"
        lines.append(
            f"| {method} | {', '.join(str(r['seed']) for r in runs)} | {runs[0]['env_steps']} | {solved_text} | "
            f"{_mean_std([r['final_val_return'] for r in runs])} | "
            f"{_mean_std([r['last_epoch_rollout_return'] for r in runs])} | {hw12} | {_hw12_more(runs)} | "
            f"{_mean_std([r['seconds'] for r in runs])} | "
            f"{_mean_std([r['env_steps'] / r['seconds'] for r in runs], '{:.0f}')} |"
        )
    curves = ["", "Greedy val/return (5 episodes) at each epoch's end, per piece: (env steps, return)", ""]
    for method in order:
        for r in pieces[method]:
            points = ", ".join(f"({s}, {v:.0f})" for s, v in r["curve"])
            curves.append(f"- {method} seed {r['seed']}: {points}")
    machine = f"Machine: {cpu_name()}. Reference: {REFERENCE_LUNAR if env_id.startswith('Lunar') else REFERENCE}"
    return "\n".join([*lines, "", machine, *curves]) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", choices=sorted(METHODS), default=list(METHODS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--out-dir", type=Path, default=Path("runs/bench/rl"), help="one JSON per piece")
    parser.add_argument("--merge", type=Path, help="only merge the JSON pieces in this folder into markdown")
    parser.add_argument("--out", type=Path, help="also write the merged markdown here")
    parser.add_argument("--speed", choices=sorted(SPEED_SETTINGS), help="only the speed comparison against SB3")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each library (speed)")
    parser.add_argument("--profile", action="store_true", help="also cProfile one of our runs (speed)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--sb3-a2c", action="store_true", help="only SB3's own A2C on LunarLander-v3 (--seeds)")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    if args.speed:
        result = speed(args.speed, args.repeats)
        result |= {"machine": cpu_name(), "threads": args.threads}
        print(json.dumps(result, indent=1))
        if args.profile:
            print(profile_ours(args.speed))
        if args.out:
            args.out.write_text(json.dumps(result, indent=1))
        return
    if args.sb3_a2c:
        args.out_dir.mkdir(parents=True, exist_ok=True)
        for seed in args.seeds:
            piece = sb3_a2c_piece(seed)
            (args.out_dir / f"sb3_a2c_lunarlander-seed{seed}.json").write_text(json.dumps(piece, indent=1))
            print(f"sb3 a2c seed {seed}: {piece['hw12']} val {piece['final_val_return']:.1f} ({piece['seconds']} s)",
                  flush=True)  # fmt: skip
        return
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
