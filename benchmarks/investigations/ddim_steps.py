"""Why is DDIM with 100 steps worse than with 50 on the digits DDPM (benchmarks/generative.py: FID 14.2 vs 8.8 in the
digits CNN's space, 3 seeds), when the DDIM paper (arXiv 2010.02502, Table 1, eta = 0) improves monotonically with
steps (CIFAR-10: 13.36 / 6.84 / 4.67 / 4.16 at 10 / 20 / 50 / 100)?

Hypothesis: the x0 clipping. Our sampler, like diffusers' DDIMScheduler by default, clips the predicted x0 to [-1, 1]
but keeps the network's eps for the direction term, so a clipped step leaves the deterministic (eta = 0) trajectory;
the DDIM paper's own sampler does not clip. More steps, more clipped corrections. If so, DDIM without clipping (or with
eps recomputed from the clipped x0, which keeps the step on a consistent trajectory) should improve monotonically.

For each benchmark DDPM checkpoint given (the runs benchmarks/generative.py leaves under its --out-dir), validated
through the CLI so the metric classifier and reference set are those of the benchmark, EMA weights swapped in, the
same 500 evaluation noises at 10 / 20 / 50 / 100 / 200 DDIM steps (eta 0) in three variants:

- ``clip`` (the default until this investigation; diffusers' default): x0 clipped, network eps kept;
- ``no-clip``: x0 not clipped (the DDIM paper's sampler);
- ``clip+eps`` (``clipped_eps``, the default since): x0 clipped and eps recomputed from it,
  eps = (x_t - sqrt(abar) x0) / sqrt(1 - abar).

The run recorded in benchmarks/results/generative-ddim_steps-digits-xeon2.md wrapped ``ddim_step`` with that same
line before the ``clipped_eps`` switch existed; the switch computes the identical update.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/investigations/ddim_steps.py \
        runs/bench/generative/runs/ddpm-seed1/checkpoints/last.ckpt \
        runs/bench/generative/runs/ddpm-seed2/checkpoints/last.ckpt
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]  # the repo root and the benchmark scripts

from generative import score  # noqa: E402 (benchmarks/generative.py: the benchmark's own scoring)

from callbacks.ema import EMA  # noqa: E402
from cli import run  # noqa: E402

STEPS = (10, 20, 50, 100, 200)
VARIANTS = {"clip": (True, False), "no-clip": (False, False), "clip+eps": (True, True)}  # clip_sample, clipped_eps


def checkpoint_rows(ckpt: str, samples: int) -> dict[str, dict[int, float]]:
    with tempfile.TemporaryDirectory() as tmp:
        cli = run(["validate", "--config", str(ROOT / "configs/ddpm.yaml"), "--ckpt_path", ckpt,
                   "--trainer.logger", "false", "--trainer.default_root_dir", tmp])  # fmt: skip
    model = cli.model.eval()
    next(c for c in cli.trainer.callbacks if isinstance(c, EMA))._swap_in(model)
    rows: dict[str, dict[int, float]] = {}
    for variant, (clip, clipped_eps) in VARIANTS.items():
        model.schedule.clip_sample, model.schedule.clipped_eps = clip, clipped_eps
        rows[variant] = {s: score(model, samples, sampler="ddim", steps=s)["fid"] for s in STEPS}
        print(variant, {s: round(f, 2) for s, f in rows[variant].items()}, flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoints", nargs="+")
    parser.add_argument("--samples", type=int, default=500)
    parser.add_argument("--out", type=Path, default=Path("runs/inv/ddim_steps.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    results = {ckpt: checkpoint_rows(ckpt, args.samples) for ckpt in args.checkpoints}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))
    print(f"\nFID (digits-cnn-128d, {args.samples} samples, eta 0), mean over {len(results)} checkpoint(s)\n")
    print("| sampler | " + " | ".join(f"{s} steps" for s in STEPS) + " |")
    print("|---|" + "---:|" * len(STEPS))
    for variant in VARIANTS:
        cells = []
        for s in STEPS:
            values = [rows[variant][s] for rows in results.values()]
            spread = f" ± {statistics.stdev(values):.1f}" if len(values) > 1 else ""
            cells.append(f"{statistics.mean(values):.1f}{spread}")
        print(f"| {variant} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
