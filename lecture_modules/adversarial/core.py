"""Adversarial attacks as pure functions over any classifier ``f(x) -> logits`` (lecture 10 / HW10).

Every budget (``eps``) and step size (``alpha``) is stated in **pixel space**: images ``x`` in [0, 1]. The model
usually expects standardised inputs; pass ``normalize`` (for example :class:`Normalize` with the data's mean and
std) and the attack perturbs ``x`` in [0, 1], keeps ``x + delta`` in the box and the budget there, and feeds
``normalize(x + delta)`` to the model. Stating ``eps`` on standardised inputs instead (the common bug in attack
libraries) silently multiplies the budget by ``1 / std``.

All attacks:

* return ``x_adv`` in [0, 1] with ``||x_adv - x||_p <= eps`` (p = inf or 2; up to float32 rounding);
* are untargeted (raise the loss of the true label ``y``) or targeted (``targeted=True``: ``y`` holds the target
  classes and the attack lowers their loss);
* run the victim in eval mode and restore its train/eval mode afterwards; gradients are taken with respect to the
  input only (``torch.autograd.grad``), so the victim's parameters and their ``.grad`` are never touched;
* draw their randomness (random starts, input diversity) from ``generator`` when one is given.

Methods, in the lecture's order: FGSM (Goodfellow et al. 2015, arXiv 1412.6572), I-FGSM / BIM (Kurakin et al.
2017, arXiv 1607.02533), PGD with random start and restarts, L-inf and L2 (Madry et al. 2018, arXiv 1706.06083),
MI-FGSM (Dong et al. 2018, arXiv 1710.06081), DI2-FGSM (Xie et al. 2019, arXiv 1803.06978), ensemble attacks
(logit or loss averaging, Liu et al. 2017, arXiv 1611.02770) and C&W L2 (Carlini & Wagner 2017, arXiv 1608.04644).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "ATTACKS",
    "NORMS",
    "Ensemble",
    "Normalize",
    "attack_loss",
    "attack_success",
    "carlini_wagner_l2",
    "difgsm",
    "fgsm",
    "ifgsm",
    "input_diversity",
    "iterative_attack",
    "mifgsm",
    "perturbation_norm",
    "pgd",
    "project",
    "quantize_uint8",
    "to_uint8_within",
    "victim_mode",
    "within_budget",
]

Norm = Literal["linf", "l2"]
NORMS = ("linf", "l2")
Model = Callable[[torch.Tensor], torch.Tensor]
_TINY = 1e-12


# ---------------------------------------------------------------------------------------------- pixel space
class Normalize(nn.Module):
    """``(x - mean) / std`` per channel: [0, 1] pixels -> the model's inputs; :meth:`inverse` maps back."""

    def __init__(self, mean: torch.Tensor | Sequence[float], std: torch.Tensor | Sequence[float]) -> None:
        super().__init__()
        mean, std = torch.as_tensor(mean, dtype=torch.float32), torch.as_tensor(std, dtype=torch.float32)
        self.register_buffer("mean", mean.reshape(1, -1, 1, 1).clone())  # (1, C, 1, 1)
        self.register_buffer("std", std.reshape(1, -1, 1, 1).clone())  # (1, C, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        """Model inputs -> [0, 1] pixels (clamped: the round trip may leave the box by float rounding)."""
        return (z * self.std + self.mean).clamp(0.0, 1.0)


def quantize_uint8(x: torch.Tensor) -> torch.Tensor:
    """What survives saving ``x`` in [0, 1] as an 8-bit PNG: ``round(255 x) / 255``."""
    return torch.round(x.clamp(0.0, 1.0) * 255.0) / 255.0


def to_uint8_within(x_adv: torch.Tensor, source: torch.Tensor, eps: float) -> torch.Tensor:
    """``x_adv`` as 8-bit pixels that stay within ``eps`` (L-inf, [0, 1] units) of the 8-bit ``source`` image:
    ``round(255 x_adv)`` clipped to ``source +- floor(255 eps)``. Plain rounding can step over the budget (eps 0.1
    is 25.5 grey levels); a hand-in graded at eps must not. Returns uint8 (B, C, H, W)."""
    levels = math.floor(255.0 * eps + 1e-6)  # the grey levels the budget allows
    rounded = torch.round(x_adv.detach().clamp(0.0, 1.0) * 255.0)
    source = source.to(rounded.dtype)
    return torch.minimum(torch.maximum(rounded, source - levels), source + levels).clamp(0, 255).to(torch.uint8)


@contextlib.contextmanager
def victim_mode(*models: nn.Module | object) -> Iterator[None]:
    """Eval mode for every ``nn.Module`` in ``models`` and gradients enabled (also inside Lightning's
    ``inference_mode`` validation and test loops); each module's train/eval flags are restored on exit."""
    modes = [
        [(m, m.training) for m in model.modules()] for model in models if isinstance(model, nn.Module)
    ]  # per submodule: a model may hold some submodules in eval on purpose
    for model in models:
        if isinstance(model, nn.Module):
            model.eval()
    try:
        with torch.inference_mode(False), torch.enable_grad():
            yield
    finally:
        for flags in modes:
            for module, training in flags:
                module.training = training


# ------------------------------------------------------------------------------------------------ objective
class Ensemble(nn.Module):
    """Several models attacked as one (Liu et al. 2017): ``mode="logits"`` averages their logits (the ensemble's
    forward); ``mode="loss"`` averages their cross-entropy losses in :func:`attack_loss`."""

    def __init__(self, models: Sequence[nn.Module], mode: Literal["logits", "loss"] = "logits") -> None:
        super().__init__()
        if mode not in ("logits", "loss"):
            raise ValueError(f"Ensemble.mode must be 'logits' or 'loss', got {mode!r}")
        if not models:
            raise ValueError("Ensemble needs at least one model")
        self.members = nn.ModuleList(models)
        self.mode = mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([m(x) for m in self.members]).mean(dim=0)  # (B, K)


def attack_loss(
    model: Model,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    targeted: bool = False,
    normalize: Model | None = None,
) -> torch.Tensor:
    """The per-sample objective the attacks *ascend* (B,): CE(f(x), y), or -CE(f(x), t) when ``targeted``."""
    inputs = normalize(x) if normalize is not None else x
    if isinstance(model, Ensemble) and model.mode == "loss":
        loss = torch.stack([F.cross_entropy(m(inputs), y, reduction="none") for m in model.members]).mean(dim=0)
    else:
        loss = F.cross_entropy(model(inputs), y, reduction="none")
    return -loss if targeted else loss


def attack_success(
    clean_pred: torch.Tensor, adv_pred: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Which attacks succeeded, among the images the victim got right: the attack success rate is
    ``succeeded[eligible].float().mean()``.

    Args:
        clean_pred: the victim's predictions on the clean images (B,).
        adv_pred: its predictions on the adversarial images (B,).
        y: the true labels (B,).
        target: the target classes of a targeted attack (B,); None: untargeted.

    Returns:
        ``succeeded`` (B,): eligible and flipped away from ``y`` (untargeted) or onto ``target`` (targeted);
        ``eligible`` (B,): the victim classified the clean image correctly.
    """
    eligible = clean_pred == y
    hit = adv_pred != y if target is None else adv_pred == target
    return hit & eligible, eligible


def _input_gradient(objective: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """grad_x sum(objective(x)); zero where the objective does not depend on ``x`` (a masked defence)."""
    x = x.detach().requires_grad_(True)
    loss = objective(x).sum()
    if not loss.requires_grad:
        return torch.zeros_like(x)
    (grad,) = torch.autograd.grad(loss, x, allow_unused=True)
    return torch.zeros_like(x) if grad is None else grad


# ---------------------------------------------------------------------------------------------- the budget
def perturbation_norm(delta: torch.Tensor, norm: Norm) -> torch.Tensor:
    """||delta||_p per sample (B,)."""
    flat = delta.flatten(1)
    return flat.abs().amax(dim=1) if norm == "linf" else flat.norm(dim=1)


def _expand(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.reshape(-1, *([1] * (like.dim() - 1)))  # (B,) -> (B, 1, 1, 1)


def project(delta: torch.Tensor, eps: float, norm: Norm) -> torch.Tensor:
    """The closest point of the eps-ball of ``norm`` (L-inf: clamp; L2: rescale the samples outside)."""
    if norm == "linf":
        return delta.clamp(-eps, eps)
    scale = (eps / perturbation_norm(delta, "l2").clamp_min(_TINY)).clamp(max=1.0)
    return delta * _expand(scale, delta)


def _steepest_step(grad: torch.Tensor, alpha: float, norm: Norm) -> torch.Tensor:
    """The step of size ``alpha`` that raises a linear objective most: alpha sign(g) (L-inf) or alpha g/||g||_2."""
    if norm == "linf":
        return alpha * grad.sign()
    return alpha * grad / _expand(perturbation_norm(grad, "l2").clamp_min(_TINY), grad)


def _random_start(x: torch.Tensor, eps: float, norm: Norm, generator: torch.Generator | None) -> torch.Tensor:
    """delta uniform in the L-inf cube, or uniform in the L2 ball (Gaussian direction, radius eps u^(1/d))."""
    if norm == "linf":
        return (torch.rand(x.shape, generator=generator, device="cpu").to(x) * 2 - 1) * eps
    direction = torch.randn(x.shape, generator=generator, device="cpu").to(x)
    direction = direction / _expand(perturbation_norm(direction, "l2").clamp_min(_TINY), x)
    radius = torch.rand(len(x), generator=generator, device="cpu").to(x) ** (1.0 / x[0].numel()) * eps
    return direction * _expand(radius, x)


def _in_box(x: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """delta such that x + delta lies in [0, 1] (only ever shrinks |delta|, so the budget still holds)."""
    return (x + delta).clamp(0.0, 1.0) - x


def within_budget(x: torch.Tensor, x_adv: torch.Tensor, eps: float, norm: Norm) -> torch.Tensor:
    """``x_adv`` where ||x_adv - x||_p <= eps (a float32 margin of 1e-6 allowed), else ``x`` (the attack failed
    inside the budget); for minimum-norm attacks such as C&W evaluated at a budget."""
    ok = perturbation_norm(x_adv - x, norm) <= eps + 1e-6
    return torch.where(_expand(ok, x), x_adv, x)


def _check(eps: float, steps: int, norm: str) -> None:
    if eps < 0 or not math.isfinite(eps):
        raise ValueError(f"eps must be a finite number >= 0, got {eps}")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")


# --------------------------------------------------------------------------------------------------- attacks
def input_diversity(
    x: torch.Tensor, prob: float = 0.5, resize_rate: float = 0.9, generator: torch.Generator | None = None
) -> torch.Tensor:
    """DI2-FGSM's random transform (Xie et al. 2019): with probability ``prob``, resize the batch to a random side
    in [resize_rate H, H) and zero-pad it at a random offset back to H x W (differentiable; same size out)."""
    height, width = x.shape[-2:]
    if float(torch.rand((), generator=generator)) >= prob:
        return x
    low = max(1, int(height * resize_rate))
    side = int(torch.randint(low, height, (), generator=generator)) if low < height else height
    side_w = max(1, round(side * width / height))
    resized = F.interpolate(x, size=(side, side_w), mode="nearest")  # (B, C, side, side_w)
    top = int(torch.randint(0, height - side + 1, (), generator=generator))
    left = int(torch.randint(0, width - side_w + 1, (), generator=generator))
    return F.pad(resized, (left, width - side_w - left, top, height - side - top))  # (B, C, H, W)


def iterative_attack(
    model: Model,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    alpha: float,
    steps: int,
    norm: Norm = "linf",
    random_start: bool = False,
    restarts: int = 1,
    decay: float = 0.0,
    diversity_prob: float = 0.0,
    targeted: bool = False,
    normalize: Model | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The family every gradient attack here belongs to; the named attacks below fix its switches.

    For each of ``restarts`` runs: delta_0 = 0 or uniform in the ball (``random_start``); then ``steps`` times
    g = grad_x L(T(x + delta)) (T = input diversity with probability ``diversity_prob``), m = decay m + g/||g||_1
    (momentum when ``decay`` > 0, else m = g), delta = Proj_eps(delta + alpha step(m)) kept in the [0, 1] box.
    Across restarts each sample keeps the run with the highest final loss (Madry et al.).

    Returns:
        x_adv (B, C, H, W) in [0, 1], ||x_adv - x|| <= eps.
    """
    _check(eps, steps, norm)
    if restarts < 1:
        raise ValueError(f"restarts must be >= 1, got {restarts}")
    with victim_mode(model):
        x, y = x.detach().clone(), y.clone()  # normal tensors, also when made under inference mode

        def loss_of(inputs: torch.Tensor) -> torch.Tensor:
            return attack_loss(model, inputs, y, targeted=targeted, normalize=normalize)  # (B,)

        def diverse_loss(inputs: torch.Tensor) -> torch.Tensor:
            return loss_of(input_diversity(inputs, diversity_prob, generator=generator))

        objective = diverse_loss if diversity_prob > 0 else loss_of
        best, best_loss = x.clone(), torch.full((len(x),), -math.inf, device=x.device)
        for _ in range(restarts):
            delta = _in_box(x, _random_start(x, eps, norm, generator)) if random_start else torch.zeros_like(x)
            momentum = torch.zeros_like(x)
            for _ in range(steps):
                grad = _input_gradient(objective, x + delta)  # (B, C, H, W)
                if decay > 0:  # MI-FGSM: accumulate L1-normalised gradients
                    grad = decay * momentum + grad / _expand(grad.abs().flatten(1).sum(1).clamp_min(_TINY), grad)
                    momentum = grad
                delta = _in_box(x, project(delta + _steepest_step(grad, alpha, norm), eps, norm))
            x_adv = (x + delta).detach()
            if restarts == 1:
                return x_adv
            with torch.no_grad():
                loss = loss_of(x_adv)
            better = loss > best_loss
            best, best_loss = torch.where(_expand(better, x), x_adv, best), torch.where(better, loss, best_loss)
    return best


def fgsm(model: Model, x: torch.Tensor, y: torch.Tensor, *, eps: float, norm: Norm = "linf", **kw) -> torch.Tensor:
    """FGSM (Goodfellow et al. 2015): one step x + eps sign(grad_x L) (L2: eps g/||g||). ``kw``: ``targeted``,
    ``normalize``."""
    return iterative_attack(model, x, y, eps=eps, alpha=eps, steps=1, norm=norm, **kw)


def ifgsm(
    model: Model, x: torch.Tensor, y: torch.Tensor, *, eps: float, steps: int = 10, alpha: float | None = None, **kw
) -> torch.Tensor:
    """I-FGSM / BIM (Kurakin et al. 2017): ``steps`` FGSM steps of ``alpha`` (default eps / steps), clipped to the
    eps-ball after each, from delta = 0. ``kw``: ``norm``, ``targeted``, ``normalize``."""
    return iterative_attack(model, x, y, eps=eps, alpha=eps / steps if alpha is None else alpha, steps=steps, **kw)


def pgd(
    model: Model,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    steps: int = 10,
    alpha: float | None = None,
    restarts: int = 1,
    random_start: bool = True,
    **kw,
) -> torch.Tensor:
    """PGD (Madry et al. 2018): I-FGSM from a uniform random start, step ``alpha`` (default 2.5 eps / steps, the
    paper's rule), best of ``restarts`` per sample. ``kw``: ``norm``, ``targeted``, ``normalize``, ``generator``."""
    alpha = 2.5 * eps / steps if alpha is None else alpha
    return iterative_attack(
        model, x, y, eps=eps, alpha=alpha, steps=steps, random_start=random_start, restarts=restarts, **kw
    )


def mifgsm(
    model: Model, x: torch.Tensor, y: torch.Tensor, *, eps: float, steps: int = 10, decay: float = 1.0, **kw
) -> torch.Tensor:
    """MI-FGSM (Dong et al. 2018): I-FGSM on the momentum m = decay m + g/||g||_1, alpha = eps / steps.
    ``kw``: ``norm``, ``targeted``, ``normalize``."""
    return iterative_attack(model, x, y, eps=eps, alpha=eps / steps, steps=steps, decay=decay, **kw)


def difgsm(
    model: Model,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    steps: int = 10,
    decay: float = 1.0,
    diversity_prob: float = 0.5,
    **kw,
) -> torch.Tensor:
    """DI2-FGSM (Xie et al. 2019) with momentum (M-DI2-FGSM; ``decay=0`` gives plain DI2-FGSM): the gradient is
    taken through a random resize-and-pad of the input with probability ``diversity_prob``. ``kw``: ``norm``,
    ``targeted``, ``normalize``, ``generator``."""
    return iterative_attack(
        model, x, y, eps=eps, alpha=eps / steps, steps=steps, decay=decay, diversity_prob=diversity_prob, **kw
    )


def _cw_margin(logits: torch.Tensor, y: torch.Tensor, targeted: bool, kappa: float) -> torch.Tensor:
    """C&W's f6 (B,): max(Z_y - max_{i != y} Z_i, -kappa); targeted: max(max_{i != t} Z_i - Z_t, -kappa)."""
    own = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.masked_fill(F.one_hot(y, logits.shape[1]).bool(), -math.inf).amax(dim=1)
    return (other - own if targeted else own - other).clamp_min(-kappa)


def carlini_wagner_l2(
    model: Model,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    c: float = 1.0,
    kappa: float = 0.0,
    steps: int = 100,
    lr: float = 0.05,
    search_steps: int = 5,
    targeted: bool = False,
    normalize: Model | None = None,
) -> torch.Tensor:
    """C&W L2 (Carlini & Wagner 2017): minimise ||x' - x||_2^2 + c f6(x') over x' = (tanh(w) + 1) / 2 with Adam,
    with a per-sample binary search over ``c`` (``search_steps`` rounds of ``steps`` iterations). A minimum-norm
    attack: it returns, per sample, the successful x' of smallest L2 norm found, or ``x`` when none succeeded;
    evaluate it at a budget with :func:`within_budget`. The paper runs Adam at lr 0.01 for up to 10,000
    iterations; the default lr 0.05 suits the few hundred iterations a lecture can afford."""
    if steps < 1 or search_steps < 1:
        raise ValueError(f"steps and search_steps must be >= 1, got {steps} and {search_steps}")
    n = len(x)
    with victim_mode(model):
        x, y = x.detach().clone(), y.clone()  # normal tensors, also when made under inference mode
        const = torch.full((n,), float(c), device=x.device)
        lower, upper = torch.zeros_like(const), torch.full_like(const, math.inf)
        best, best_norm = x.clone(), torch.full((n,), math.inf, device=x.device)
        for _ in range(search_steps):
            w = torch.atanh((x * 2 - 1).clamp(-1 + 1e-6, 1 - 1e-6)).requires_grad_(True)  # (B, C, H, W)
            optimizer = torch.optim.Adam([w], lr=lr)
            succeeded = torch.zeros(n, dtype=torch.bool, device=x.device)
            for _ in range(steps):
                x_adv = (torch.tanh(w) + 1) / 2
                logits = model(normalize(x_adv) if normalize is not None else x_adv)  # (B, K)
                dist = (x_adv - x).flatten(1).pow(2).sum(1)  # (B,)
                margin = _cw_margin(logits, y, targeted, kappa)
                optimizer.zero_grad()
                (dist + const * margin).sum().backward(inputs=[w])
                optimizer.step()
                with torch.no_grad():  # the iterate just evaluated: success means its margin reached zero
                    hit = (margin <= 0) & (logits.argmax(1) == y if targeted else logits.argmax(1) != y)
                    closer = hit & (dist.sqrt() < best_norm)
                    best = torch.where(_expand(closer, x), x_adv.detach(), best)
                    best_norm = torch.where(closer, dist.sqrt(), best_norm)
                    succeeded |= hit
            upper = torch.where(succeeded, torch.minimum(upper, const), upper)
            lower = torch.where(succeeded, lower, torch.maximum(lower, const))
            const = torch.where(upper.isfinite(), (lower + upper) / 2, const * 10)
    return best.clamp(0.0, 1.0)


ATTACKS: dict[str, tuple[Callable[..., torch.Tensor], Norm]] = {
    "fgsm": (fgsm, "linf"),
    "ifgsm": (ifgsm, "linf"),
    "pgd": (pgd, "linf"),
    "mifgsm": (mifgsm, "linf"),
    "difgsm": (difgsm, "linf"),
    "pgd_l2": (pgd, "l2"),
    "cw": (carlini_wagner_l2, "l2"),
}
"""Attack name -> (function, the norm of its budget), as the lectures' settings name them."""
