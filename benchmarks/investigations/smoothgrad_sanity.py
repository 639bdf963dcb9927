"""Why does SmoothGrad keep a Spearman correlation of ~0.5 with the trained model's maps after every layer is
re-initialised (benchmarks/xai.py, digits), when Adebayo et al. (arXiv 1810.03292) report that it decorrelates?

Hypothesis: what survives is the architecture's prior, not the trained weights. With zero padding a pixel near the
border is seen by fewer receptive fields, so |gradient| maps of *any* CNN of this architecture share a
centre-versus-border profile; averaging noisy gradients (SmoothGrad) removes the high-frequency part that differs
between networks and leaves that shared profile. If so, two *independently* randomised networks should be as
correlated with each other as each is with the trained one, and the correlation should not depend on the images.

For each noise level (SmoothGrad's std as a fraction of the image range) and for plain saliency, on the seeded
test images of benchmarks/xai.py's digits split, per seed:

- ``trained vs random``: Adebayo's number (the trained model against the fully randomised copy);
- ``random vs random``: two full randomisations from different seeds (architecture prior alone);
- ``trained vs blank``: the trained model's map of an image against its map of a blank (all-background) image
  (structure that does not come from the image at all);
- ``trained vs random, centre``: the first number on the central 8x8 pixels only (the border profile removed).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/investigations/smoothgrad_sanity.py --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root

from datamodules.image import ImageDataModule
from lecture_modules.checkpoints import load_lecture
from lecture_modules.xai import core
from lecture_modules.xai.methods import MethodSettings, attribute

NOISES = (0.05, 0.15, 0.3, 0.5)


def _maps(model, x, target, noise: float | None, seed: int) -> torch.Tensor:
    """|gradient| maps (N, H, W): saliency when ``noise`` is None, else SmoothGrad with that noise level."""
    torch.manual_seed(seed)
    black = x.new_zeros(()) + x.min()  # unused by these two methods; attribute() takes one for every method
    if noise is None:
        return attribute("saliency", model, x, target, settings=MethodSettings(), baseline=black).sum(1)
    settings = MethodSettings(smoothgrad_noise=noise, smoothgrad_samples=32)
    return attribute("smoothgrad", model, x, target, settings=settings, baseline=black).sum(1)


def _spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(core.map_similarity(a, b)["spearman"].mean())


def measure(model, x, target, noise: float | None, seed: int) -> dict[str, float]:
    randomised = list(core.cascade_randomisation(model, seed=seed))[-1][1]
    other = list(core.cascade_randomisation(model, seed=seed + 1000))[-1][1]
    trained = _maps(model, x, target, noise, seed)
    random_a = _maps(randomised, x, target, noise, seed)
    random_b = _maps(other, x, target, noise, seed)
    blank = _maps(model, torch.full_like(x, float(x.min())), target, noise, seed)
    h, w = x.shape[-2:]
    centre = (slice(None), slice(h // 4, h - h // 4), slice(w // 4, w - w // 4))
    return {
        "trained vs random": _spearman(trained, random_a),
        "random vs random": _spearman(random_a, random_b),
        "trained vs blank": _spearman(trained, blank),
        "trained vs random, centre": _spearman(trained[centre], random_a[centre]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--out", type=Path, default=None, help="also write the markdown table here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = ImageDataModule(image_size=16)
    data.setup("test")
    x_all = torch.cat([x for x, _ in data.test_dataloader()])
    model = load_lecture("builtin:digits_cnn").net.eval().requires_grad_(False)
    rows: dict[str, list[dict[str, float]]] = {}
    for seed in args.seeds:
        pick = torch.randperm(len(x_all), generator=torch.Generator().manual_seed(seed))[: args.images]
        x = x_all[pick]
        with torch.no_grad():
            target = model(x).argmax(-1)
        for noise in (None, *NOISES):
            label = "saliency" if noise is None else f"smoothgrad, noise {noise:.2f}"
            rows.setdefault(label, []).append(measure(model, x, target, noise, seed))
    columns = list(next(iter(rows.values()))[0])
    lines = [
        f"Spearman rank correlation of |gradient| maps, mean ± std over seeds {args.seeds} "
        f"({args.images} digits test images each; 32 SmoothGrad samples)",
        "",
        "| maps | " + " | ".join(columns) + " |",
        "|---|" + "---:|" * len(columns),
    ]
    for label, per_seed in rows.items():
        cells = []
        for column in columns:
            values = [r[column] for r in per_seed]
            spread = statistics.stdev(values) if len(values) > 1 else 0.0
            cells.append(f"{statistics.mean(values):.3f} ± {spread:.3f}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    text = "\n".join(lines)
    sys.stdout.write(text + "\n")
    if args.out is not None:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
