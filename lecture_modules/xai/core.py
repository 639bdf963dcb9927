"""Pure pieces of the explainable-AI lecture (no Trainer): what captum does not provide.

* Activation maximisation (Erhan et al. 2009; Olah et al. 2017, "Feature Visualization"): gradient ascent on an
  image, from noise, for one unit of a layer, with the usual regularisers (random jitter, periodic Gaussian blur,
  L2 and total-variation penalties), in [0, 1] pixels.
* Deletion and insertion curves and their AUC (Petsiuk et al. 2018, arXiv 1806.07421): pixels are moved from a
  start image to an end image in the order of the saliency map; the curve is the target class probability.
* The sanity checks of Adebayo et al. 2018 (arXiv 1810.03292): cascading randomisation of the parameterised layers
  from the top, and the similarity of the maps before and after (Spearman rank correlation with and without
  absolute values, SSIM on maps scaled to [0, 1]).
* The completeness error of integrated gradients (Sundararajan et al. 2017, arXiv 1703.01365):
  |sum of attributions - (F(x) - F(baseline))| / |F(x) - F(baseline)|.

Images are (N, C, H, W); maps are (N, H, W) (channels summed); a model maps standardised inputs to logits.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "activation_maximisation",
    "auc",
    "cascade_randomisation",
    "completeness_error",
    "gaussian_blur",
    "insertion_deletion",
    "map_similarity",
    "parameterised_layers",
    "perturbation_curve",
    "randomise_layer",
    "scale01",
    "total_variation",
    "unit_activation",
]


# ------------------------------------------------------------------ small image operations
def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (N, C, H, W) with reflect padding; ``sigma <= 0`` returns ``x``."""
    if sigma <= 0:
        return x
    radius = max(1, round(3 * sigma))
    radius = min(radius, x.shape[-1] - 1, x.shape[-2] - 1)
    grid = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    kernel = torch.exp(-(grid**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    c = x.shape[1]
    padded = F.pad(x, (radius, radius, radius, radius), mode="reflect")
    out = F.conv2d(padded, kernel.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)  # along W
    return F.conv2d(out, kernel.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)  # along H


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference of neighbouring pixels, per image: (N,)."""
    dh = (x[..., 1:, :] - x[..., :-1, :]).abs().flatten(1).mean(1)
    dw = (x[..., :, 1:] - x[..., :, :-1]).abs().flatten(1).mean(1)
    return dh + dw


def scale01(maps: torch.Tensor) -> torch.Tensor:
    """Each map (N, H, W) min-max scaled to [0, 1] (a constant map becomes zeros)."""
    flat = maps.flatten(1)
    low, high = flat.min(1, keepdim=True).values, flat.max(1, keepdim=True).values
    return ((flat - low) / (high - low).clamp_min(1e-12)).view_as(maps)


# ------------------------------------------------------------------ activation maximisation
def unit_activation(output: torch.Tensor, unit: int) -> torch.Tensor:
    """The activation of ``unit`` per image: a channel's spatial mean for (N, C, H, W), a neuron for (N, F)."""
    if output.dim() == 4:
        return output[:, unit].mean(dim=(1, 2))
    return output.flatten(1)[:, unit]


def activation_maximisation(
    model: nn.Module,
    layer: nn.Module,
    unit: int,
    *,
    shape: tuple[int, int, int],
    normalize: Callable[[torch.Tensor], torch.Tensor],
    steps: int = 128,
    lr: float = 0.05,
    jitter: int = 1,
    blur_sigma: float = 0.5,
    blur_every: int = 4,
    l2: float = 1e-3,
    tv: float = 1e-2,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradient ascent on an image (from noise, seeded) that maximises ``unit`` of ``layer``'s output.

    Each step: roll the image by a random offset in [-jitter, jitter] (both axes), take the unit's activation on the
    standardised image, subtract ``l2`` * mean square and ``tv`` * total variation of the [0, 1] image, ascend with
    Adam, clamp to [0, 1]; every ``blur_every`` steps blur with ``blur_sigma``. The model's mode and gradients are
    left as they were (eval mode during the ascent).

    Returns:
        The image (1, C, H, W) in [0, 1] pixels and the unit's activation after each step (steps,).
    """
    generator = torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device
    image = (0.5 + 0.1 * torch.randn(1, *shape, generator=generator)).clamp(0, 1).to(device).requires_grad_(True)
    captured: dict[str, torch.Tensor] = {}
    handle = layer.register_forward_hook(lambda _m, _i, out: captured.__setitem__("out", out))
    was_training, trace = model.training, []
    model.eval()
    optimizer = torch.optim.Adam([image], lr=lr)
    try:
        for step in range(steps):
            shift = torch.randint(-jitter, jitter + 1, (2,), generator=generator).tolist() if jitter else [0, 0]
            model(normalize(torch.roll(image, shifts=shift, dims=(-2, -1))))
            activation = unit_activation(captured["out"], unit)  # (1,)
            objective = activation - l2 * image.pow(2).mean() - tv * total_variation(image)
            optimizer.zero_grad()
            (-objective.sum()).backward()
            optimizer.step()
            with torch.no_grad():
                image.clamp_(0, 1)
                if blur_every and (step + 1) % blur_every == 0:
                    image.copy_(gaussian_blur(image, blur_sigma))
            trace.append(float(activation.detach()))
    finally:
        handle.remove()
        model.train(was_training)
        for p in model.parameters():
            p.grad = None
    return image.detach(), torch.tensor(trace)


# ------------------------------------------------------------------ deletion and insertion (Petsiuk et al.)
def perturbation_curve(
    prob: Callable[[torch.Tensor], torch.Tensor],
    start: torch.Tensor,
    end: torch.Tensor,
    saliency: torch.Tensor,
    steps: int = 16,
) -> torch.Tensor:
    """Move pixels from ``start`` to ``end`` (both (N, C, H, W)) in decreasing order of ``saliency`` (N, H, W), in
    ``steps`` equal parts, and score each image with ``prob`` ((N, C, H, W) -> (N,)).

    Returns:
        (N, steps + 1): the score with 0, 1/steps, ..., all pixels moved.
    """
    n, _, h, w = start.shape
    order = saliency.flatten(1).argsort(dim=1, descending=True, stable=True)  # (N, H*W) most salient first
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(h * w, device=order.device).expand(n, -1))  # rank of every pixel
    scores = []
    with torch.no_grad():
        for k in range(steps + 1):
            moved = (rank < round(k * h * w / steps)).view(n, 1, h, w)  # (N, 1, H, W)
            scores.append(prob(torch.where(moved, end, start)))
    return torch.stack(scores, dim=1)


def auc(curve: torch.Tensor) -> torch.Tensor:
    """Area under curves (N, K) sampled at K equally spaced points of [0, 1] (trapezoid rule): (N,)."""
    return torch.trapezoid(curve, dx=1.0 / (curve.shape[-1] - 1), dim=-1)


def insertion_deletion(
    prob: Callable[[torch.Tensor], torch.Tensor],
    x01: torch.Tensor,
    saliency: torch.Tensor,
    *,
    steps: int = 16,
    blur_sigma: float = 2.0,
) -> dict[str, torch.Tensor]:
    """Petsiuk et al.'s two curves for images ``x01`` in [0, 1]: deletion moves the most salient pixels to black
    (lower AUC is better), insertion moves them from a blurred copy into place (higher AUC is better).

    Returns:
        ``deletion`` and ``insertion`` curves (N, steps + 1).
    """
    black = torch.zeros_like(x01)
    blurred = gaussian_blur(x01, blur_sigma)
    return {
        "deletion": perturbation_curve(prob, x01, black, saliency, steps),
        "insertion": perturbation_curve(prob, blurred, x01, saliency, steps),
    }


# ------------------------------------------------------------------ sanity checks (Adebayo et al.)
def parameterised_layers(model: nn.Module) -> list[str]:
    """Names of the modules with weights of their own (convolutions, linear layers, norms), input to output."""
    return [name for name, m in model.named_modules() if name and any(True for _ in m.parameters(recurse=False))]


def randomise_layer(module: nn.Module, seed: int) -> None:
    """Re-initialise a layer's own parameters as at construction (``reset_parameters``), from ``seed``. A norm
    layer's running statistics are reset too (``reset_parameters`` does both), as Adebayo et al. re-initialise a
    layer completely."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()
        else:
            for p in module.parameters(recurse=False):
                nn.init.normal_(p, std=0.02)


def cascade_randomisation(model: nn.Module, seed: int = 0) -> Iterator[tuple[str, nn.Module]]:
    """Adebayo et al.'s cascade: yield (layer name, a copy of ``model`` with that layer and every layer above it
    re-initialised), from the top (logits) layer down to the first. ``model`` itself is never changed."""
    randomised = copy.deepcopy(model)
    modules = dict(randomised.named_modules())
    for depth, name in enumerate(reversed(parameterised_layers(model))):
        randomise_layer(modules[name], seed + depth)
        yield name, randomised


def map_similarity(original: torch.Tensor, other: torch.Tensor) -> dict[str, torch.Tensor]:
    """Adebayo et al.'s similarity of two batches of maps (N, H, W), per image (N,): Spearman rank correlation of
    the signed maps (``spearman``) and of their absolute values (``spearman_abs``), and SSIM of the absolute maps
    scaled to [0, 1] (``ssim``)."""
    from torchmetrics.functional.image import structural_similarity_index_measure
    from torchmetrics.functional.regression import spearman_corrcoef

    a, b = original.flatten(1).double(), other.flatten(1).double()
    spearman = torch.stack([_safe(spearman_corrcoef, a[i], b[i]) for i in range(len(a))])
    spearman_abs = torch.stack([_safe(spearman_corrcoef, a[i].abs(), b[i].abs()) for i in range(len(a))])
    size = min(7, original.shape[-1], original.shape[-2])
    size -= 1 - size % 2  # an odd window that fits the map
    ssim = structural_similarity_index_measure(
        scale01(other.abs()).unsqueeze(1).double(), scale01(original.abs()).unsqueeze(1).double(),
        kernel_size=size, sigma=size / 6, data_range=1.0, reduction="none",
    )  # fmt: skip
    return {"spearman": spearman.float(), "spearman_abs": spearman_abs.float(), "ssim": ssim.float()}


def _safe(fn, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """A correlation that is 0 (not NaN) when either map is constant (a randomised map can be all zeros)."""
    if a.std() == 0 or b.std() == 0:
        return torch.zeros((), dtype=a.dtype, device=a.device)
    return fn(a, b)


# ------------------------------------------------------------------ integrated gradients
def completeness_error(attributions: torch.Tensor, f_input: torch.Tensor, f_baseline: torch.Tensor) -> torch.Tensor:
    """IG's completeness gap per image: |sum(attributions) - (F(x) - F(x'))| / |F(x) - F(x')| (N,)."""
    gap = f_input - f_baseline
    total = attributions.flatten(1).sum(1)
    return (total - gap).abs() / gap.abs().clamp_min(1e-12)
