"""Pure pieces of the meta-learning lecture, built on ``torch.func`` and testable without a Trainer.

* :class:`ConvNetSpec` — the network argument of every meta-learner (``model.init_args.net``): conv-4's width and
  depth, stored in the hyper-parameters as a plain dict so checkpoints stay ``weights_only``.
* :class:`ConvNet` — the conv-4 backbone of the MAML paper (4 x [conv3x3 -> BN -> ReLU -> max-pool 2]) plus a
  linear head. Batch norm keeps no running statistics (:class:`BatchStatNorm2d`): every forward pass, at
  meta-train and meta-test time alike, normalises with the statistics of the batch it sees (one task's support
  or query set), as in the MAML paper, so nothing leaks from one task to the next.
* :func:`task_objective` — one task's support loss, the parameters its inner loop adapts (all, or the head only
  for ANIL) and the logits at adapted weights.
* :func:`inner_loop` — gradient steps on the support loss, functionally: the meta-parameters are never modified;
  the fast weights are ``theta - lr * grad`` tensors that stay differentiable functions of ``theta`` (second
  order), or whose gradients are treated as constants (first order).
* :func:`over_tasks` maps a task function (``maml.maml_task``, ``reptile.reptile_task``) over a meta-batch with
  ``torch.func.vmap`` (one batched computation) or a plain Python loop; :func:`meta_gradient_per_task` takes the
  meta-gradient task by task, freeing each task's graph at once, and :func:`gradient_carrier` hands such
  precomputed gradients to a normal ``backward()``.
* :func:`adaptation_curve` — query loss and accuracy after 0..S inner steps (evaluation).
* :func:`mean_ci95` — mean and 95% confidence half-width over tasks, as few-shot papers report accuracy.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

from lecture_modules.base import bad_setting
from lecture_modules.nets import Spec

__all__ = [
    "BatchStatNorm2d",
    "ConvNet",
    "ConvNetSpec",
    "Params",
    "adaptation_curve",
    "gradient_carrier",
    "inner_loop",
    "inner_loop_steps",
    "mean_ci95",
    "meta_gradient_per_task",
    "over_tasks",
    "task_objective",
]

Params = dict[str, torch.Tensor]
HEAD = "head."


class BatchStatNorm2d(nn.Module):
    """Batch normalisation with the statistics of the current batch only (no running statistics), written with
    plain tensor ops: ``torch.func.vmap`` over tasks of the fused ``F.batch_norm`` gives wrong second-order
    gradients (found by this lecture's tests against a per-task loop and finite differences), these ops do not."""

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W)
        mean = x.mean(dim=(0, 2, 3), keepdim=True)
        var = (x - mean).pow(2).mean(dim=(0, 2, 3), keepdim=True)  # biased, as batch norm uses in training
        return (x - mean) * torch.rsqrt(var + self.eps) * self.weight[:, None, None] + self.bias[:, None, None]


class ConvNet(nn.Module):
    """conv-4: ``blocks`` x [Conv3x3(hidden) -> BN (batch statistics only) -> ReLU -> MaxPool2] -> flatten -> Linear."""

    def __init__(self, input_shape: tuple[int, int, int], num_classes: int, hidden: int = 64, blocks: int = 4) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_ch = input_shape[0]
        for _ in range(blocks):
            layers += [
                nn.Conv2d(in_ch, hidden, 3, padding=1, bias=False),  # (B, hidden, H, W); BN adds the bias
                BatchStatNorm2d(hidden),
                nn.ReLU(),
                nn.MaxPool2d(2),  # (B, hidden, H/2, W/2)
            ]
            in_ch = hidden
        self.features = nn.Sequential(*layers, nn.Flatten())  # (B, hidden * h * w)
        with torch.no_grad():
            dim = self.features(torch.zeros(2, *input_shape)).shape[1]
        self.head = nn.Linear(dim, num_classes)  # (B, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@dataclass(frozen=True)
class ConvNetSpec(Spec):
    """The meta-learners' network: conv-4 (:class:`ConvNet`), ``blocks`` x [Conv3x3(hidden) -> BN -> ReLU ->
    MaxPool2] -> Linear.

    Attributes:
        hidden: filters of each conv block (64 in the MAML paper).
        blocks: conv blocks (4 in the paper: conv-4), each halving the image size.
    """

    hidden: int = 64
    blocks: int = 4

    def validate(self, owner: str = "net") -> None:
        """Raise :class:`~datamodules.errors.SettingError` naming the setting (``model.init_args.net.hidden`` ...)
        when a field is out of range."""
        for name in ("hidden", "blocks"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise bad_setting(f"{owner}.{name}", value, "an integer >= 1")

    def build(self, input_shape: tuple[int, int, int], num_classes: int) -> ConvNet:
        """The network: (B, C, H, W) -> (B, num_classes)."""
        return ConvNet(tuple(input_shape), num_classes, hidden=self.hidden, blocks=self.blocks)


def _sub(params: Params, prefix: str) -> Params:
    return {k[len(prefix) :]: v for k, v in params.items() if k.startswith(prefix)}


def inner_loop_steps(
    loss_fn: Callable[[Params], torch.Tensor], params: Params, steps: int, lr: float, first_order: bool
) -> Iterator[Params]:
    """Yield the fast weights before and after each of ``steps`` SGD steps on ``loss_fn`` (``steps + 1`` dicts).

    Second order: the fast weights are differentiable functions of ``params`` through the gradients too, so an
    outer backward pass gets the full MAML meta-gradient (Hessian-vector products included). First order: the
    inner gradients are detached, so the outer gradient is the query gradient at the adapted weights.
    """
    grad_fn = grad(loss_fn)
    fast = params
    yield fast
    for _ in range(steps):
        grads = grad_fn(fast)
        fast = {k: w - lr * (grads[k].detach() if first_order else grads[k]) for k, w in fast.items()}
        yield fast


def inner_loop(
    loss_fn: Callable[[Params], torch.Tensor], params: Params, steps: int, lr: float, first_order: bool
) -> Params:
    """The fast weights after ``steps`` SGD steps on ``loss_fn`` from ``params`` (which stay untouched)."""
    *_, fast = inner_loop_steps(loss_fn, params, steps, lr, first_order)
    return fast


def task_objective(
    model: nn.Module, params: Params, x_support: torch.Tensor, y_support: torch.Tensor, head_only: bool
) -> tuple[Callable[[Params], torch.Tensor], Params, Callable[[Params, torch.Tensor], torch.Tensor]]:
    """(support loss of the adapted weights, the weights the inner loop adapts, logits of adapted weights)."""
    if not head_only:
        return (
            lambda p: F.cross_entropy(functional_call(model, p, (x_support,)), y_support),
            params,
            lambda p, x: functional_call(model, p, (x,)),
        )
    # ANIL: the body runs once per input set; only the head's weight and bias are adapted.
    body = _sub(params, "features.")
    support_features = functional_call(model.features, body, (x_support,))  # (N*K, D)
    return (
        lambda h: F.cross_entropy(F.linear(support_features, h["weight"], h["bias"]), y_support),
        _sub(params, HEAD),
        lambda h, x: F.linear(functional_call(model.features, body, (x,)), h["weight"], h["bias"]),
    )


def adaptation_curve(
    model: nn.Module,
    params: Params,
    x_support: torch.Tensor,
    y_support: torch.Tensor,
    x_query: torch.Tensor,
    y_query: torch.Tensor,
    steps: int,
    lr: float,
    head_only: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Query loss and accuracy after 0, 1, ..., ``steps`` inner steps: two ``(steps + 1,)`` tensors (evaluation;
    call it under ``torch.no_grad()`` so no graph is kept: the inner gradients are computed all the same)."""
    support_loss, adapted, logits_fn = task_objective(model, params, x_support, y_support, head_only)
    losses, accs = [], []
    for fast in inner_loop_steps(support_loss, adapted, steps, lr, first_order=True):
        logits = logits_fn(fast, x_query)
        losses.append(F.cross_entropy(logits, y_query))
        accs.append((logits.argmax(-1) == y_query).float().mean())
    return torch.stack(losses), torch.stack(accs)


def over_tasks(task_fn: Callable, params: Params, batch: tuple[torch.Tensor, ...], vectorize: bool = True):
    """Apply ``task_fn(params, x_s, y_s, x_q, y_q)`` to every task of a meta-batch ``(T, ...)`` tensors.

    ``vectorize`` runs all tasks as one batched computation with ``torch.func.vmap``; otherwise a Python loop.
    Either way the outputs are stacked along a new leading task dimension.
    """
    if vectorize:
        return vmap(task_fn, in_dims=(None, 0, 0, 0, 0))(params, *batch)
    outputs = [task_fn(params, *task) for task in zip(*batch, strict=True)]
    if isinstance(outputs[0], dict):
        return {k: torch.stack([o[k] for o in outputs]) for k in outputs[0]}
    return tuple(torch.stack(parts) for parts in zip(*outputs, strict=True))


def meta_gradient_per_task(
    task_fn: Callable, params: Params, batch: tuple[torch.Tensor, ...]
) -> tuple[torch.Tensor, torch.Tensor, Params]:
    """The mean-over-tasks meta-gradient, one task at a time: each task's graph (the second-order one included) is
    freed as soon as its gradient is taken, so memory does not grow with the meta-batch.

    Returns the per-task query losses (T,) and accuracies (T,), detached, and ``d mean(loss) / d params``.
    """
    tasks = len(batch[0])
    grads = {k: torch.zeros_like(v) for k, v in params.items()}
    losses, accs = [], []
    for task in zip(*batch, strict=True):
        loss, acc = task_fn(params, *task)
        for g, gi in zip(grads.values(), torch.autograd.grad(loss / tasks, list(params.values())), strict=True):
            g += gi
        losses.append(loss.detach())
        accs.append(acc.detach())
    return torch.stack(losses), torch.stack(accs), grads


def gradient_carrier(params: Params, grads: Params) -> torch.Tensor:
    """A scalar whose gradient with respect to ``params[k]`` is exactly ``grads[k]``: ``sum_k <params[k], grads[k]>``
    with the gradients detached. Backpropagating it hands precomputed gradients to the optimiser loop (and to DDP,
    which all-reduces them like any other gradient)."""
    return sum((params[k] * grads[k].detach()).sum() for k in params)


def mean_ci95(values: torch.Tensor) -> tuple[float, float]:
    """Mean and 95% confidence half-width (1.96 standard errors) of per-task values, as few-shot papers report."""
    values = values.double().flatten()
    if len(values) < 2:
        return float(values.mean()), float("nan")
    return float(values.mean()), 1.96 * float(values.std(unbiased=True)) / math.sqrt(len(values))
