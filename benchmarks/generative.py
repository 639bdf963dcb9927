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

**MNIST** (``--dataset mnist``, IDX files in ``--data-dir``, 28x28, 54,000 training images after the 10% validation
split, the 10,000 test images as the test split). The metric classifier is trained once, by command, into the file
``--judge`` names (configs/classification.yaml's CNN, 128-d features, its input standardisation stated in the file;
feature space ``mnist-cnn-128d``); every piece then scores in its space. Each (method, seed) is its own piece with a
stated budget of training batches (:data:`MNIST_BUDGETS`: epochs of :data:`MNIST_EPOCH_BATCHES` batches of 64), so
the long runs split across sessions; each piece records its training wall time and sampling time per 1,000 images::

    export OMP_NUM_THREADS=1; G="benchmarks/generative.py --dataset mnist --data-dir ../shared/data/mnist"
    B=runs/bench/generative-mnist; M="$G --judge $B/mnist_cnn.ckpt --out-dir $B"
    .venv/bin/python $M --part judge                            # once: the metric classifier
    .venv/bin/python $M --methods sngan --seeds 0               # one piece (each method and seed likewise)
    .venv/bin/python $M --methods ddpm --samples 500 --ddpm-samples 200
    .venv/bin/python $M --part vae_binarized --iwae-k 5000 --test-images 1000
    .venv/bin/python $M --part step_time --out-dir $B/probe     # seconds per batch of each method
    .venv/bin/python benchmarks/generative.py --merge $B

``--part vae_binarized``: the VAE (50-d code, the IWAE paper's one-stochastic-layer size, our conv networks) on
dynamically binarised MNIST (a fresh Bernoulli draw of every pixel per batch, as the IWAE paper trained), then on a
test set binarised once (seed 0): the k-sample ELBO and the IWAE bound log (1/k) sum w_i (k = ``--iwae-k``, 5000 in
the IWAE paper) in nats per image, next to the published numbers (:data:`PUBLISHED_NLL`).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import lightning as L
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, so it runs from anywhere

from machine import cpu_name  # benchmarks/ is on sys.path when a script runs

from callbacks.ema import EMA
from cli import run
from lecture_modules.generative.metrics import quality_scores, save_metric_classifier

ROOT = Path(__file__).resolve().parents[1]

METHODS = ["dcgan", "wgan", "wgan_gp", "sngan", "ddpm", "vae"]
DDIM_STEPS = [10, 50, 100]
REFERENCE = (
    "Lucic et al. 2018 (arXiv 1711.10337): best-case MNIST FIDs ~6-20 in Inception space across GAN losses, no loss "
    "consistently best; DDIM paper (arXiv 2010.02502), CIFAR-10: FID 4.67 with 50 DDIM steps vs 3.17 for DDPM-1000 "
    "(its stated variance); IWAE paper (arXiv 1509.00519, Table 1), binarised MNIST, one stochastic layer, test "
    "log-likelihood estimated with k = 5000: VAE -86.76 nats, IWAE (k = 50) -84.78. Ours: FIDs in our classifier's "
    "feature space (named above): rankings and trends only; the digits VAE bounds are on 256 binarised pixels, "
    "MNIST's on 784."
)


MNIST_EPOCH_BATCHES = 200  # an MNIST "epoch" here: 200 batches of 64 (12,800 images), then validation (FID curve)
# Epochs of MNIST_EPOCH_BATCHES batches per piece, from the step-time probe (--part step_time, 1 thread on the shared
# 2-core Xeon, load 3-4: s/batch DCGAN 0.68, WGAN 0.22, WGAN-GP 0.17, SN-GAN 0.32, DDPM 0.42, VAE 0.09): each GAN
# piece trains for 15-25 minutes there (DCGAN 2,000 generator steps, SN-GAN 3,000, WGAN/WGAN-GP 1,000 with 5,000
# critic steps), DDPM ~28 minutes (4,000 steps) plus ~20 minutes of sampling, the VAE ~10, the binarised VAE ~15
# plus ~25 minutes for k = 5000 bounds on 1,000 test images.
MNIST_BUDGETS = {
    "dcgan": 10, "wgan": 25, "wgan_gp": 25, "sngan": 15, "ddpm": 20, "vae": 25, "vae_binarized": 50,
}  # fmt: skip
JUDGE_EPOCHS = 3  # the MNIST metric classifier: 3 full epochs (2,532 batches, ~4 minutes)
PUBLISHED_NLL = (
    "IWAE paper (Burda et al. 2016, arXiv 1509.00519, Table 1), MNIST binarised dynamically in training, one "
    "stochastic layer (50-d), MLP 784-200-200, log p(x) estimated with the k = 5000 bound: VAE -86.76 nats, IWAE "
    "(k = 50 training) -84.78; Kingma & Welling 2014 (arXiv 1312.6114) show the test ELBO only as curves (Fig. 2)."
)


def base_args(method: str, seed: int, root: Path, config: str | None = None) -> list[str]:
    """Fit the method's committed config on one process, no logger, no progress bar."""
    configs = ROOT / "configs"
    config_file, cpu = str(configs / f"{config or method}.yaml"), str(configs / "trainer" / "cpu.yaml")
    return ["fit", "--config", config_file, "--config", cpu,
            "--trainer.logger", "false", "--trainer.enable_progress_bar", "false", "--seed_everything", str(seed),
            "--trainer.default_root_dir", str(root / f"{method}-seed{seed}")]  # fmt: skip


def mnist_data(data_dir: Path) -> list[str]:
    """The data section for MNIST IDX files at their 28x28 size."""
    return ["--data.init_args.source", "datamodules.sources.IDXSource",
            "--data.init_args.source.init_args.root", str(data_dir), "--data.init_args.image_size", "28"]  # fmt: skip


def mnist_budget(method: str, judge: Path, epochs: int | None) -> list[str]:
    """MNIST: ``epochs`` (default :data:`MNIST_BUDGETS`) epochs of :data:`MNIST_EPOCH_BATCHES` batches, validation
    on 5 batches (the VAE's IWAE bound, k = 50) and the metrics in the MNIST classifier's space."""
    epochs = epochs or MNIST_BUDGETS[method]
    args = ["--model.init_args.metric_classifier", str(judge), "--trainer.max_epochs", str(epochs),
            "--trainer.limit_train_batches", str(MNIST_EPOCH_BATCHES), "--trainer.limit_val_batches", "5"]  # fmt: skip
    if method == "ddpm":  # sampling in training would cost minutes per epoch: the piece scores once, at the end
        args += ["--model.init_args.metrics_every_n_epochs", "1000"]
    return args


def train(method: str, seed: int, args, extra: list[str] = ()):
    """The method's committed config (its epoch budget, or ``--epochs``; on MNIST the batch budget), trained on one
    process, no logger; returns the LectureCLI and the training wall time in seconds."""
    config = "vae" if method == "vae_binarized" else method
    argv = base_args(method, seed, args.out_dir / "runs", config)
    if args.dataset == "mnist":
        argv += mnist_data(args.data_dir) + mnist_budget(method, args.judge, args.epochs)
    elif args.epochs is not None:
        argv += ["--trainer.max_epochs", str(args.epochs)]
    start = time.perf_counter()
    cli = run([*argv, *extra])
    return cli, time.perf_counter() - start


def score(model, n: int, noise_seed: int = 4321, **sample_kwargs) -> dict[str, float]:
    """Quality of ``n`` samples (noise from a generator seeded with ``noise_seed``) and seconds per 1,000 images."""
    judge, reference = model._judge["judge"], model._reference
    gen = torch.Generator().manual_seed(noise_seed)
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
    cli, train_seconds = train(method, seed, args)
    model = cli.model.eval()
    ema = next((c for c in cli.trainer.callbacks if isinstance(c, EMA)), None)
    if ema is not None:
        ema._swap_in(model)  # sample with the averaged weights, as validation and predict do
    rows: dict[str, dict[str, float]] = {}
    if method == "ddpm":
        for steps in DDIM_STEPS:  # the config's DDIM, and DDIM with the eps of the clipped x0_hat
            rows[f"ddim-{steps}"] = score(model, args.samples, sampler="ddim", steps=steps)
        model.schedule.clipped_eps = not model.schedule.clipped_eps
        for steps in DDIM_STEPS:
            rows[f"ddim-{steps}-{'clipped_eps' if model.schedule.clipped_eps else 'model_eps'}"] = score(
                model, args.samples, sampler="ddim", steps=steps
            )
        model.schedule.clipped_eps = not model.schedule.clipped_eps
        rows["ddpm-1000"] = score(model, args.ddpm_samples, sampler="ddpm")
    else:
        rows[method] = score(model, args.samples)
    if method == "vae":
        tested = cli.trainer.test(model, datamodule=cli.datamodule, verbose=False)[0]
        rows[method].update({"test_elbo_nats": tested["test/elbo"], "test_iwae50_nats": tested["test/iwae"]})
    return {"method": method, "seed": seed, "dataset": args.dataset, "epochs": cli.trainer.current_epoch,
            "train_batches": int(cli.trainer.fit_loop.total_batch_idx) + 1, "global_steps": cli.trainer.global_step,
            "train_seconds": train_seconds, "space": model.feature_space, **machine(), "rows": rows}  # fmt: skip


def machine() -> dict:
    return {"machine": cpu_name(), "threads": torch.get_num_threads(), "torch": torch.__version__}


def train_judge(args) -> dict:
    """Train the MNIST metric classifier once (configs/classification.yaml's CNN on the IDX files at 28x28, the
    same split as the generation data module) and write it to ``args.judge`` with its input standardisation and
    feature-space name stated in the file; returns its test accuracy and training time."""
    argv = base_args("judge", 0, args.out_dir / "runs", "classification") + mnist_data(args.data_dir)
    argv += ["--trainer.max_epochs", str(args.epochs or JUDGE_EPOCHS)]
    start = time.perf_counter()
    cli = run(argv)
    seconds = time.perf_counter() - start
    best = cli.trainer.checkpoint_callback.best_model_path
    save_metric_classifier(best, args.judge, cli.datamodule.pixel_stats, name="mnist-cnn")
    tested = cli.trainer.test(ckpt_path=best, datamodule=cli.datamodule, verbose=False)[0]
    return {"judge": str(args.judge), "space": "mnist-cnn-128d", "test_acc": tested["test/acc"],
            "train_seconds": seconds, "epochs": cli.trainer.current_epoch, **machine()}  # fmt: skip


def vae_binarized(seed: int, args) -> dict:
    """The VAE on dynamically binarised MNIST (50-d code), then its test bounds in nats on ``--test-images`` test
    images binarised once: the k-sample ELBO and IWAE_k (k = ``--iwae-k``), timed."""
    cli, train_seconds = train("vae_binarized", seed, args, ["--model.init_args.latent_dim", "50"])
    model = cli.model.eval()
    x, _ = cli.datamodule._data["test"].tensors  # MNIST's 10,000 test images in [-1, 1]
    x01 = model.pixels(x[: args.test_images], torch.Generator().manual_seed(0))  # one stochastic binarisation
    start = time.perf_counter()
    elbo, iwae = model.test_bounds(x01, k=args.iwae_k, seed=seed)
    seconds = time.perf_counter() - start
    bounds = {"test_elbo_nats": float(elbo.mean()), "test_iwae_nats": float(iwae.mean()), "iwae_k": args.iwae_k,
              "test_images": len(x01), "pixels": int(x01[0].numel()), "eval_seconds": seconds}  # fmt: skip
    return {"method": "vae_binarized", "seed": seed, "dataset": args.dataset, "epochs": cli.trainer.current_epoch,
            "train_seconds": train_seconds, "bounds": bounds, "reference": PUBLISHED_NLL, **machine()}  # fmt: skip


class _BatchTimer(L.Callback):
    """Wall-clock time of each training batch (forward, backward and every optimiser step of it)."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self._start = 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.seconds.append(time.perf_counter() - self._start)


def _probe(method: str, args) -> dict:
    """Seconds per training batch (median of ``--probe-batches`` after 3 warm-up batches) of one method, and its
    sampling seconds per 1,000 images (measured on a few, scaled)."""
    config = "classification" if method == "judge" else "vae" if method == "vae_binarized" else method
    argv = base_args(method, 0, args.out_dir / "runs" / "probe", config)[1:]  # run=False: no subcommand
    argv += mnist_data(args.data_dir) if args.dataset == "mnist" else []
    if method != "judge":  # timing needs no metrics (validation is off)
        argv += ["--model.init_args.metric_classifier", "null"]
    if method == "vae_binarized":
        argv += ["--model.init_args.latent_dim", "50"]
    argv += ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", str(args.probe_batches + 3),
             "--trainer.limit_val_batches", "0", "--trainer.num_sanity_val_steps", "0"]  # fmt: skip
    cli = run(argv, run=False)
    timer = _BatchTimer()
    cli.trainer.callbacks.append(timer)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    row = {"seconds_per_batch": statistics.median(timer.seconds[3:]), "batches_timed": len(timer.seconds[3:]),
           "global_steps_per_batch": cli.trainer.global_step / len(timer.seconds)}  # fmt: skip
    model = cli.model.eval()
    if method == "judge":
        return row
    if method == "vae_binarized":  # the test bounds: seconds per image per importance sample
        x01 = model.pixels(cli.datamodule._data["test"].tensors[0][:10], torch.Generator().manual_seed(0))
        start = time.perf_counter()
        model.test_bounds(x01, k=500)
        return {**row, "bound_seconds_per_image_sample": (time.perf_counter() - start) / (10 * 500)}
    samplers = {"ddim-10": (50, {"sampler": "ddim", "steps": 10}), "ddim-50": (20, {"sampler": "ddim", "steps": 50}),
                "ddim-100": (20, {"sampler": "ddim", "steps": 100}), "ddpm-1000": (5, {"sampler": "ddpm"})}  # fmt: skip
    for name, (n, kwargs) in (samplers if method == "ddpm" else {"sample": (1000, {})}).items():
        start = time.perf_counter()
        model.sample(model.noise(n), torch.arange(n) % model.hparams.num_classes, **kwargs)
        row[f"{name}_seconds_per_1000"] = 1000 * (time.perf_counter() - start) / n
    return row


def step_time(args) -> dict:
    """The step-time probe of every method (and the MNIST metric classifier), to plan the pieces' budgets."""
    methods = [*args.methods, "vae_binarized"] + (["judge"] if args.dataset == "mnist" else [])
    rows = {method: _probe(method, args) for method in methods}
    return {"dataset": args.dataset, "epoch_batches": MNIST_EPOCH_BATCHES, "budgets": MNIST_BUDGETS, "rows": rows,
            **machine()}  # fmt: skip


def ddim_steps(seed: int, args) -> dict:
    """Why did DDIM-100 score worse than DDIM-50 on the digits (FID 15.2 vs 9.6, one seed)? The digits DDPM of the
    benchmark (its config and seed, validation off: sampling never touches the training RNG), sampled with its EMA
    weights by DDIM (eta 0) at 10, 50 and 100 steps on ``--samples`` images, from two noise sets, with x0_hat
    clipped to [-1, 1] in every step and the network's eps kept (the default, diffusers' ``clip_sample``), without
    clipping, and clipped with the eps implied by the clipped x0_hat (``clipped_eps``)."""
    cli, train_seconds = train("ddpm", seed, args, ["--trainer.limit_val_batches", "0"])
    model = cli.model.eval()
    next(c for c in cli.trainer.callbacks if isinstance(c, EMA))._swap_in(model)
    rows = {}
    for variant, clip, clipped_eps in (("clip", True, False), ("noclip", False, False), ("clipped_eps", True, True)):
        model.schedule.clip_sample, model.schedule.clipped_eps = clip, clipped_eps
        for steps in DDIM_STEPS:
            for noise_seed in (4321, 8765):
                name = f"ddim-{steps}-{variant}-z{noise_seed}"
                rows[name] = score(model, args.samples, noise_seed=noise_seed, sampler="ddim", steps=steps)
                print(name, {k: round(v, 3) for k, v in rows[name].items()}, flush=True)
    return {"method": "ddpm", "seed": seed, "dataset": args.dataset, "epochs": cli.trainer.current_epoch,
            "train_seconds": train_seconds, "space": model.feature_space, "ddim_steps": rows, **machine()}  # fmt: skip


def fmt(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.3g}"
    return f"{statistics.mean(values):.3g} ± {statistics.stdev(values):.2g}"


KEYS = ["fid", "kid", "precision", "recall", "recognisable", "classes_covered", "seconds_per_1000"]


def merge(folder: Path) -> str:
    """One markdown table from the JSON pieces in ``folder``: a row per method (and sampler), mean ± std over seeds."""
    rows: dict[str, list[dict]] = {}
    meta = []
    binarized: list[dict] = []
    for path in sorted(folder.glob("*.json")):
        p = json.loads(path.read_text())
        if "bounds" in p:
            binarized.append(p)
        if "rows" not in p or "method" not in p:  # the judge's, the probe's and the other parts' files
            continue
        took = f", {p['train_seconds'] / 60:.1f} min training" if "train_seconds" in p else ""
        meta.append(
            f"{p['method']} seed {p['seed']}: {p['epochs']} epochs{took}, {p['machine']}, {p['threads']} thread(s)"
        )
        for name, row in p["rows"].items():
            rows.setdefault(name, []).append({**row, "space": p["space"], "seed": p["seed"],
                                              "dataset": p.get("dataset", "digits")})  # fmt: skip
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
    lines += _bound_lines(rows.get("vae"), binarized)
    return "\n".join([*lines, "", "Runs: " + "; ".join(meta), "", "Reference: " + REFERENCE, ""])


def _bound_lines(vae: list[dict] | None, binarized: list[dict]) -> list[str]:
    """The VAE pieces' test bounds, and each binarised-MNIST piece's, as lines under the table."""
    lines = []
    if vae and "test_elbo_nats" in vae[0]:
        elbo, iwae = ([r[k] for r in vae] for k in ("test_elbo_nats", "test_iwae50_nats"))
        text = f"ELBO {statistics.mean(elbo):.2f}, IWAE k=50 {statistics.mean(iwae):.2f} (seeds: {len(vae)})"
        data = "28x28 MNIST" if vae[0]["dataset"] == "mnist" else "16x16 digits"
        lines += ["", f"VAE test bounds (stochastically binarised {data}, nats per image): {text}"]
    for b in binarized:
        v = b["bounds"]
        took = f"{b['epochs']} epochs, {b['train_seconds'] / 60:.1f} min"
        lines += ["", f"VAE on binarised MNIST, seed {b['seed']} ({took}): "
                  f"test ELBO {v['test_elbo_nats']:.2f}, IWAE k={v['iwae_k']} {v['test_iwae_nats']:.2f} nats per image "
                  f"({v['test_images']} test images, {v['pixels']} pixels; {b['reference']})"]  # fmt: skip
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=["pieces", "judge", "vae_binarized", "step_time", "ddim_steps"],
                        default="pieces")  # fmt: skip
    parser.add_argument("--dataset", choices=["digits", "mnist"], default="digits")
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data/mnist"), help="MNIST IDX folder")
    parser.add_argument("--judge", type=Path, default=Path("runs/bench/generative-mnist/mnist_cnn.ckpt"),
                        help="MNIST: the metric classifier file (--part judge writes it)")  # fmt: skip
    parser.add_argument("--iwae-k", type=int, default=5000, help="vae_binarized: importance samples per test image")
    parser.add_argument("--test-images", type=int, default=1000, help="vae_binarized: test images evaluated")
    parser.add_argument("--probe-batches", type=int, default=12, help="step_time: batches timed per method")
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
    if args.dataset == "mnist" and args.part not in ("judge", "step_time") and not args.judge.is_file():
        parser.error(f"--judge {args.judge}: no such file; train it first with --part judge")
    if args.part == "judge":
        write(args.out_dir / "judge.json", train_judge(args))
        return
    if args.part == "step_time":
        write(args.out_dir / f"step_time-{args.dataset}.json", step_time(args))
        return
    for seed in args.seeds:
        if args.part in ("vae_binarized", "ddim_steps"):
            part = vae_binarized if args.part == "vae_binarized" else ddim_steps
            write(args.out_dir / f"{args.part}-seed{seed}.json", part(seed, args))
            continue
        for method in args.methods:
            write(args.out_dir / f"{method}-seed{seed}.json", piece(method, seed, args))


def write(path: Path, result: dict) -> None:
    """One JSON file per piece; an existing one is kept (a piece is never run twice into the same file)."""
    if path.exists():
        path = path.with_name(f"{path.stem}-{time.strftime('%Y%m%d-%H%M%S')}.json")
    path.write_text(json.dumps(result, indent=1))
    print(f"wrote {path}", flush=True)


if __name__ == "__main__":
    main()
