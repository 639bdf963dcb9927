"""Generative models (lecture 6, issue 22): GANs vs DDPM/DDIM vs VAE, quality in our classifier's feature space.

For each method and seed, one piece: train the method's config through ``cli.run`` (the committed config, its epoch
budget unless ``--epochs`` overrides it, no logger), then generate ``--samples`` images and score them against the
training split with :func:`lecture_modules.generative.metrics.quality_scores` in the feature space of the shipped
digits CNN (``builtin:digits_cnn``, 128-d): FID, KID, precision/recall (k = 3), recognisability (confidence > 0.9)
and the share of classes covered, plus the time to sample 1,000 images. DDPM is sampled with DDIM at 10, 50 and 100
steps (eta 0) on ``--samples`` images and with all 1,000 ancestral steps on ``--ddpm-samples`` (fewer: it is the
slow one), using the EMA weights. The VAE adds its test ELBO and IWAE bound (k = 50) in nats on the test split.

FIDs here are in the digits CNN's space: they rank methods on this data, they do not compare with Inception-space
FIDs (Lucic et al. 2018, arXiv 1711.10337: best-case MNIST FIDs ~6-20) or with the DDIM paper's CIFAR-10 numbers
(4.67 at 50 steps vs 3.17 for DDPM-1000); compare the rankings and the DDIM quality/speed trend.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/generative.py --methods dcgan sngan --seeds 0 --threads 1
    .venv/bin/python benchmarks/generative.py --merge runs/bench/generative  # -> the results file

One JSON per (method, seed) under ``--out-dir``; ``--merge DIR`` prints the markdown table (mean ± std over seeds).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, so it runs from anywhere

from machine import cpu_name  # benchmarks/ is on sys.path when a script runs

from callbacks.ema import EMA
from cli import run
from lecture_modules.generative.metrics import quality_scores

ROOT = Path(__file__).resolve().parents[1]

METHODS = ["dcgan", "wgan", "wgan_gp", "sngan", "ddpm", "vae"]
DDIM_STEPS = [10, 50, 100]
REFERENCE = (
    "Lucic et al. 2018 (arXiv 1711.10337): best-case MNIST FIDs ~6-20 in Inception space across GAN losses, no loss "
    "consistently best; DDIM paper (arXiv 2010.02502), CIFAR-10: FID 4.67 with 50 DDIM steps vs 3.17 for DDPM-1000 "
    "(its stated variance); IWAE paper (arXiv 1509.00519, Table 1), binarised MNIST, one stochastic layer, test "
    "log-likelihood estimated with k = 5000: VAE -86.76 nats, IWAE (k = 50) -84.78. Ours: 16x16 digits (256 "
    "binarised pixels, not 784), digits CNN feature space: rankings and trends only."
)


def train(method: str, seed: int, epochs: int | None, root: Path):
    """The method's committed config, trained on one process, no logger; returns the LectureCLI."""
    configs = ROOT / "configs"
    args = ["fit", "--config", str(configs / f"{method}.yaml"), "--config", str(configs / "trainer" / "cpu.yaml"),
            "--trainer.logger", "false", "--trainer.enable_progress_bar", "false", "--seed_everything", str(seed),
            "--trainer.default_root_dir", str(root / f"{method}-seed{seed}")]  # fmt: skip
    if epochs is not None:
        args += ["--trainer.max_epochs", str(epochs)]
    return run(args)


def score(model, n: int, **sample_kwargs) -> dict[str, float]:
    """Quality of ``n`` samples (the evaluation noise of the lecture) and seconds per 1,000 images."""
    judge, reference = model._judge["judge"], model._reference
    gen = torch.Generator().manual_seed(4321)
    z = model.noise(n, gen)
    labels = torch.arange(n) % model.hparams.num_classes
    start = time.perf_counter()
    images = torch.cat([model.sample(zi, yi, **sample_kwargs) for zi, yi in zip(z.split(250), labels.split(250),
                                                                                 strict=True)])  # fmt: skip
    seconds = time.perf_counter() - start
    real, _ = judge.embed(reference)
    features, probs = judge.embed(images)
    scores = quality_scores(real, features, probs, tau=model.hparams.tau)
    return {**scores, "seconds_per_1000": 1000 * seconds / n, "samples": n}


def piece(method: str, seed: int, args) -> dict:
    cli = train(method, seed, args.epochs, args.out_dir / "runs")
    model = cli.model.eval()
    ema = next((c for c in cli.trainer.callbacks if isinstance(c, EMA)), None)
    if ema is not None:
        ema._swap_in(model)  # sample with the averaged weights, as validation and predict do
    rows: dict[str, dict[str, float]] = {}
    if method == "ddpm":
        for steps in DDIM_STEPS:
            rows[f"ddim-{steps}"] = score(model, args.samples, sampler="ddim", steps=steps)
        rows["ddpm-1000"] = score(model, args.ddpm_samples, sampler="ddpm")
    else:
        rows[method] = score(model, args.samples)
    if method == "vae":
        tested = cli.trainer.test(model, datamodule=cli.datamodule, verbose=False)[0]
        rows[method].update({"test_elbo_nats": tested["test/elbo"], "test_iwae50_nats": tested["test/iwae"]})
    machine = {"machine": cpu_name(), "threads": torch.get_num_threads(), "torch": torch.__version__}
    return {"method": method, "seed": seed, "epochs": cli.trainer.current_epoch, "space": model.feature_space,
            **machine, "rows": rows}  # fmt: skip


def fmt(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.3g}"
    return f"{statistics.mean(values):.3g} ± {statistics.stdev(values):.2g}"


KEYS = ["fid", "kid", "precision", "recall", "recognisable", "classes_covered", "seconds_per_1000"]


def merge(folder: Path) -> str:
    """One markdown table from the JSON pieces in ``folder``: a row per method (and sampler), mean ± std over seeds."""
    rows: dict[str, list[dict]] = {}
    meta = []
    for path in sorted(folder.glob("*.json")):
        p = json.loads(path.read_text())
        meta.append(f"{p['method']} seed {p['seed']}: {p['epochs']} epochs, {p['machine']}, {p['threads']} thread(s)")
        for name, row in p["rows"].items():
            rows.setdefault(name, []).append({**row, "space": p["space"], "seed": p["seed"]})
    spaces = sorted({r["space"] for runs in rows.values() for r in runs})
    lines = [
        f"Feature space: {', '.join(spaces)}. Samples per row as stated; seconds per 1,000 images on 1 thread.",
        "",
    ]
    lines += ["| method | seeds | samples | " + " | ".join(KEYS) + " |", "|---|---|---:|" + "---:|" * len(KEYS)]
    order = {m: i for i, m in enumerate(METHODS)}
    family = lambda name: "ddpm" if name.startswith(("ddim", "ddpm")) else name  # noqa: E731
    for name, runs in sorted(rows.items(), key=lambda item: (order.get(family(item[0]), 99), len(item[0]), item[0])):
        cells = [fmt([r[k] for r in runs]) for k in KEYS]
        lines.append(
            f"| {name} | {sorted(r['seed'] for r in runs)} | {runs[0]['samples']} | " + " | ".join(cells) + " |"
        )
    vae = rows.get("vae")
    if vae and "test_elbo_nats" in vae[0]:
        elbo, iwae = ([r[k] for r in vae] for k in ("test_elbo_nats", "test_iwae50_nats"))
        bounds = f"ELBO {statistics.mean(elbo):.2f}, IWAE k=50 {statistics.mean(iwae):.2f} (seeds: {len(vae)})"
        lines += ["", f"VAE test bounds (stochastically binarised 16x16 digits, nats per image): {bounds}"]
    return "\n".join([*lines, "", "Runs: " + "; ".join(meta), "", "Reference: " + REFERENCE, ""])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", choices=METHODS, nargs="+", default=METHODS)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--epochs", type=int, help="override every config's max_epochs")
    parser.add_argument("--samples", type=int, default=1000, help="samples scored per method / DDIM setting")
    parser.add_argument("--ddpm-samples", type=int, default=200, help="samples of the 1,000-step DDPM sampler")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out-dir", type=Path, default=Path("runs/bench/generative"), help="one JSON per piece")
    parser.add_argument("--merge", type=Path, help="only merge the JSON pieces in this folder into markdown")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.merge:
        print(merge(args.merge))
        return
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for seed in args.seeds:
        for method in args.methods:
            result = piece(method, seed, args)
            path = args.out_dir / f"{method}-seed{seed}.json"
            path.write_text(json.dumps(result, indent=1))
            print(f"wrote {path}", flush=True)


if __name__ == "__main__":
    main()
