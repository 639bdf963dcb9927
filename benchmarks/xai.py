"""Explainable AI (lecture 9, issue 23): faithfulness, sanity checks, IG completeness and speed of each method.

On the embedded digits (16x16, the split of configs/classification.yaml, explaining the shipped digits CNN
``builtin:digits_cnn``) and, with ``--mnist DIR``, on MNIST IDX files (a CNN of the same architecture trained here for
``--epochs`` per seed), for each seed (which images: a seeded sample of the test split; the stochastic methods'
draws; the randomisation):

1. Faithfulness per method: deletion and insertion AUC (Petsiuk et al. 2018) on ``--images`` test images.
2. Sanity per method after re-initialising every layer (the end of Adebayo et al.'s cascade): Spearman rank
   correlation of the signed and absolute maps, SSIM of the absolute maps, with the original maps.
3. Integrated gradients' completeness error against the number of steps (Sundararajan et al. suggest 20-300).
4. Speed: images explained per second per method, through our wrapper (``lecture_modules.xai.methods.attribute``)
   and through the direct captum call, alternated within each repetition; medians and the ratio ours / captum.

Prints markdown tables (mean ± std over seeds) with Adebayo et al.'s findings next to ours, and writes them to
``--out``.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/xai.py --seeds 0 1 2                # digits
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/xai.py --mnist ../shared/data/mnist  # + MNIST
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, so it runs from anywhere

from machine import cpu_name  # benchmarks/ is on sys.path when a script runs

from datamodules.image import ImageDataModule
from datamodules.sources import IDXSource
from lecture_modules.checkpoints import load_lecture
from lecture_modules.nets import NetSpec
from lecture_modules.xai import core
from lecture_modules.xai.methods import METHODS, MethodSettings, attribute

# Adebayo et al. 2018 (arXiv 1810.03292), section 4 / figures 2-4, on Inception v3 (ImageNet) and a CNN on MNIST:
ADEBAYO = {
    "saliency": "decorrelates (passes)",
    "smoothgrad": "decorrelates (passes)",
    "integrated_gradients": "signed maps decorrelate; |maps| keep the input's structure (x - x' times the gradient)",
    "input_x_gradient": "signed maps decorrelate; |maps| keep the input's structure (x times the gradient)",
    "gradcam": "decorrelates (passes)",
    "guided_backprop": "stays similar after full randomisation (fails); not among our methods",
}
IG_STEPS = (4, 8, 16, 32, 64, 128, 256)


def _data(mnist: str | None) -> ImageDataModule:
    if mnist is None:
        data = ImageDataModule(image_size=16)
    else:
        data = ImageDataModule(source=IDXSource(root=mnist), val_fraction=0.0, batch_size=128)
    data.setup("test")
    return data


def _model(data: ImageDataModule, mnist: bool, seed: int, epochs: int) -> torch.nn.Module:
    """The shipped digits CNN, or the same architecture trained on MNIST here (Adam, ``epochs``)."""
    if not mnist:
        return load_lecture("builtin:digits_cnn").net.eval().requires_grad_(False)
    torch.manual_seed(seed)
    net = NetSpec(kind="cnn", widths=[32, 64, 128], batch_norm=True, dropout=0.1).build(data.input_shape, 10)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    for _ in range(epochs):
        for x, y in data.train_dataloader():
            optimizer.zero_grad()
            F.cross_entropy(net(x), y).backward()
            optimizer.step()
    return net.eval().requires_grad_(False)


def _settings(model, samples: int) -> MethodSettings:
    convolutions = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    return MethodSettings(gradcam_layer=convolutions[-1], surrogate_samples=samples)


def evaluate(model, x, y, mean, std, seed: int, samples: int) -> dict[str, float]:
    """Steps 1-3 on standardised images ``x`` (targets: the model's predictions)."""
    settings, base = _settings(model, samples), (0 - mean) / std  # black pixels in the model's input space
    with torch.no_grad():
        target = model(x).argmax(-1)

    def prob(images01):
        with torch.no_grad():
            return model((images01 - mean) / std).softmax(-1).gather(1, target[:, None])[:, 0]

    row: dict[str, float] = {"acc": float((target == y).float().mean())}
    randomised = list(core.cascade_randomisation(model, seed=seed))[-1][1]
    for method in METHODS:
        torch.manual_seed(seed)
        maps = attribute(method, model, x, target, settings=settings, baseline=base).sum(1)
        curves = core.insertion_deletion(prob, x * std + mean, maps)
        row[f"deletion {method}"] = float(core.auc(curves["deletion"]).mean())
        row[f"insertion {method}"] = float(core.auc(curves["insertion"]).mean())
        torch.manual_seed(seed)
        random_maps = attribute(method, randomised, x, target, settings=_settings(randomised, samples), baseline=base)
        for name, values in core.map_similarity(maps, random_maps.sum(1)).items():
            row[f"{name} {method}"] = float(values.mean())
    with torch.no_grad():
        f_x = model(x).gather(1, target[:, None])[:, 0]
        f_b = model(base.expand_as(x)).gather(1, target[:, None])[:, 0]
    for steps in IG_STEPS:
        ig = attribute("integrated_gradients", model, x, target, baseline=base,
                       settings=MethodSettings(ig_steps=steps, ig_internal_batch_size=256))  # fmt: skip
        row[f"ig completeness {steps}"] = float(core.completeness_error(ig, f_x, f_b).median())
    return row


def _direct(method: str, model, x, target, settings: MethodSettings, base) -> torch.Tensor:
    """The same attributions as :func:`attribute`, by calling captum directly (the reference for the overhead)."""
    from captum import attr

    if method == "saliency":
        return attr.Saliency(model).attribute(x.requires_grad_(), target=target)
    if method == "integrated_gradients":
        return attr.IntegratedGradients(model).attribute(
            x, baselines=base.expand_as(x), target=target, n_steps=settings.ig_steps,
            internal_batch_size=settings.ig_internal_batch_size,
        )  # fmt: skip
    if method == "gradcam":
        cam = attr.LayerGradCam(model, settings.gradcam_layer).attribute(x, target=target, relu_attributions=True)
        return attr.LayerAttribution.interpolate(cam, tuple(x.shape[-2:]), interpolate_mode="bilinear")
    c, k = x.shape[1], settings.window  # occlusion
    return attr.Occlusion(model).attribute(
        x, sliding_window_shapes=(c, k, k), strides=(c, k // 2, k // 2), baselines=base.expand_as(x), target=target
    )


def throughput(model, x, mean, std, reps: int) -> dict[str, tuple[float, float, float]]:
    """Images per second per method, (ours, captum direct, ours / captum time: the median of the back-to-back pairs'
    ratios); saliency, IG, Grad-CAM, occlusion for both, every method for ours."""
    settings, base = _settings(model, 200), (0 - mean) / std
    with torch.no_grad():
        target = model(x).argmax(-1)
    out = {}
    for method in METHODS:
        ours, direct = [], []
        for rep in range(reps + 2):  # the first two repetitions warm up; the order alternates
            t_ours, t_direct = float("nan"), float("nan")
            for turn in ("ours", "direct") if rep % 2 else ("direct", "ours"):
                start = time.perf_counter()
                if turn == "ours":
                    attribute(method, model, x, target, settings=settings, baseline=base)
                    t_ours = time.perf_counter() - start
                elif method in ("saliency", "integrated_gradients", "gradcam", "occlusion"):
                    _direct(method, model, x.clone(), target, settings, base)
                    t_direct = time.perf_counter() - start
            if rep >= 2:
                ours.append(t_ours)
                direct.append(t_direct)
        mo, md = statistics.median(ours), statistics.median(direct)
        paired = statistics.median(o / d for o, d in zip(ours, direct))  # each pair ran back to back: robust to load
        out[method] = (len(x) / mo, len(x) / md, paired)
    return out


def _mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def tables(name: str, rows: list[dict[str, float]], speed: dict) -> list[str]:
    def cell(key):
        return _mean_std([r[key] for r in rows])

    lines = [f"## {name}", "", f"model accuracy on the explained images: {cell('acc')}", ""]
    lines += [
        "| method | deletion AUC (lower better) | insertion AUC (higher better) | Spearman after full "
        "randomisation | Spearman abs | SSIM | Adebayo et al. |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for m in METHODS:
        lines.append(
            f"| {m} | {cell(f'deletion {m}')} | {cell(f'insertion {m}')} | {cell(f'spearman {m}')} | "
            f"{cell(f'spearman_abs {m}')} | {cell(f'ssim {m}')} | {ADEBAYO.get(m, 'not in the paper')} |"
        )
    lines += ["", "| IG steps | median completeness error |", "|---:|---:|"]
    lines += [f"| {s} | {cell(f'ig completeness {s}')} |" for s in IG_STEPS]
    lines += ["", "Adebayo et al. 2018 (arXiv 1810.03292) on Inception v3 and an MNIST CNN: " + "; ".join(
        f"{m}: {v}" for m, v in ADEBAYO.items())]  # fmt: skip
    return [*lines, "", *speed_table(speed)]


def speed_table(speed: dict) -> list[str]:
    lines = ["| method | images/s (ours) | images/s (captum direct) | time ours / captum |", "|---|---:|---:|---:|"]
    lines += [f"| {m} | {ours:.1f} | {direct:.1f} | {ratio:.3f} |" for m, (ours, direct, ratio) in speed.items()]
    return [*lines, ""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--images", type=int, default=32, help="test images explained per seed")
    parser.add_argument("--samples", type=int, default=100, help="LIME / KernelSHAP samples per image")
    parser.add_argument("--mnist", default=None, help="a folder of MNIST IDX files")
    parser.add_argument("--epochs", type=int, default=1, help="MNIST training epochs per seed")
    parser.add_argument("--reps", type=int, default=11, help="timed repetitions per method")
    parser.add_argument("--batch", type=int, default=32, help="images per timed call")
    parser.add_argument("--speed-only", action="store_true", help="only the speed table (first seed's model)")
    parser.add_argument("--out", default="runs/bench/xai/results.md")
    args = parser.parse_args()
    lines = [f"machine: {cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}; "
             f"seeds {args.seeds}, {args.images} images per seed", ""]  # fmt: skip
    for name, folder in (("digits", None), ("mnist", args.mnist)):
        if name == "mnist" and folder is None:
            continue
        data = _data(folder)
        mean, std = data.pixel_stats
        x_all, y_all = data.test_dataloader().dataset.tensors
        rows, speed = [], {}
        for seed in args.seeds[:1] if args.speed_only else args.seeds:
            model = _model(data, folder is not None, seed, args.epochs)
            pick = torch.randperm(len(y_all), generator=torch.Generator().manual_seed(seed))[: args.images]
            if not args.speed_only:
                rows.append(evaluate(model, x_all[pick], y_all[pick], mean, std, seed, args.samples))
            if seed == args.seeds[0]:
                speed = throughput(model, x_all[: args.batch], mean, std, args.reps)
        lines += tables(name, rows, speed) if rows else [f"## {name}", "", *speed_table(speed)]
    text = "\n".join(lines)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n")
    sys.stdout.write(text + "\n")


if __name__ == "__main__":
    main()
