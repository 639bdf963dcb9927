"""Parameter importance for regularisation-based continual learning, as plain functions of an ``nn.Module``.

Every method below penalises ``sum_i b_i (theta_i - theta*_i)^2`` (:func:`quadratic_penalty`) and differs only in
the importance ``b``:

* :func:`fisher_diagonal` — EWC (Kirkpatrick et al. 2017, arXiv 1612.00796): the diagonal Fisher information,
  ``empirical`` (squared per-sample gradients of the loss at the true label) or ``true`` (the expectation over the
  model's own predictive distribution, computed exactly over all classes: ``sum_c p_c (d log p_c / d theta)^2``).
* :func:`mas_importance` — MAS (Aljundi et al. 2018, arXiv 1711.09601): mean absolute per-sample gradient of the
  squared L2 norm of the network's output (label-free).
* :func:`scp_importance` — SCP (Kolouri et al. 2020, openreview BJge3TNKwH): the sliced Cramér distance of the
  mean output, ``1/L sum_l (d <xi_l, mean_x f(x)> / d theta)^2`` over random unit directions ``xi_l``, per batch.
* :class:`PathIntegral` — SI (Zenke et al. 2017, arXiv 1703.04200): ``omega = -sum_t g_t * delta_t`` along the
  training trajectory, ``b = omega / (Delta^2 + xi)`` at the end of a task.
* :class:`RiemannianWalk` — RWalk (Chaudhry et al. 2018, arXiv 1801.10112): an exponential moving average of the
  squared gradients (online empirical Fisher) plus the path score ``-g delta / (1/2 F delta^2 + eps)``.

:func:`copy_params` and :func:`add_params` copy and add such per-parameter dicts (anchors, running sums).

Per-sample gradients come from ``torch.func`` (``vmap(grad(functional_call))``); see ``benchmarks/lifelong.py``
for its speed against a per-sample Python loop. Batches are ``(x, y, task)`` tuples; the model is called as
``model(x, task)``. The data-dependent estimators take ``all_reduce`` (a sum over processes): each process passes
its own shard of the data and every process gets the importance of the whole data set.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad, jacrev, vmap

__all__ = [
    "PathIntegral",
    "RiemannianWalk",
    "add_params",
    "batch_mean_gradients",
    "copy_params",
    "finite",
    "fisher_diagonal",
    "mas_importance",
    "quadratic_penalty",
    "scp_importance",
]

Batch = tuple[Tensor, Tensor, Tensor]  # x (B, ...), y (B,), task (B,)
AllReduce = Callable[[Tensor], Tensor]
Params = dict[str, Tensor]


def copy_params(params: Mapping[str, Tensor]) -> Params:
    """A detached copy of every tensor."""
    return {n: p.detach().clone() for n, p in params.items()}


def add_params(running: Mapping[str, Tensor] | None, new: Mapping[str, Tensor]) -> Params:
    """``running + new`` per parameter; a copy of ``new`` when there is no running total yet."""
    return copy_params(new) if running is None else {n: running[n] + new[n] for n in new}


def quadratic_penalty(params: Mapping[str, Tensor], anchors: Mapping[str, Tensor], importance: Mapping[str, Tensor]):
    """``sum_i b_i (theta_i - theta*_i)^2`` over the parameters named in ``importance``; a scalar tensor."""
    terms = [(importance[n] * (params[n] - anchors[n]).pow(2)).sum() for n in importance]
    if not terms:
        return torch.zeros(())
    return torch.stack(terms).sum()


def finite(logits: Tensor) -> Tensor:
    """Masked (``-inf``) logits of a task-incremental head set to 0, so output norms only see the task's classes."""
    return torch.where(torch.isfinite(logits), logits, torch.zeros_like(logits))


def _state(model: nn.Module) -> tuple[Params, Params]:
    params = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
    buffers = {n: b.detach() for n, b in model.named_buffers()}
    return params, buffers


def _one_sample(model: nn.Module, buffers: Params) -> Callable[[Params, Tensor, Tensor], Tensor]:
    def logits(params: Params, x: Tensor, task: Tensor) -> Tensor:  # x (...), task () -> (C,)
        return functional_call(model, (params, buffers), (x.unsqueeze(0), task.unsqueeze(0))).squeeze(0)

    return logits


class _EvalMode:
    """Estimate in eval mode (no dropout, batch-norm running statistics), restore the mode afterwards."""

    def __init__(self, model: nn.Module) -> None:
        self.model, self.was_training = model, model.training

    def __enter__(self) -> None:
        self.model.eval()

    def __exit__(self, *exc) -> None:
        self.model.train(self.was_training)


def _mean(sums: Params, count: Tensor, all_reduce: AllReduce | None) -> Params:
    if all_reduce is not None:
        sums = {n: all_reduce(s) for n, s in sums.items()}
        count = all_reduce(count)
    if int(count) == 0:
        raise ValueError("importance estimation got no samples (empty task data or importance_samples = 0)")
    return {n: s / count for n, s in sums.items()}


def _accumulate(
    per_sample: Callable[[Params, Tensor, Tensor, Tensor], Params],
    params: Params,
    batches: Iterable[Batch],
    all_reduce: AllReduce | None,
    vectorize: bool,
    chunk_size: int | None,
) -> Params:
    """Mean over all samples of ``per_sample(params, x_i, y_i, task_i)`` (one dict of tensors per sample)."""
    batched = vmap(per_sample, in_dims=(None, 0, 0, 0), chunk_size=chunk_size)
    sums = {n: torch.zeros_like(p) for n, p in params.items()}
    count = torch.zeros((), dtype=torch.long, device=next(iter(params.values())).device)
    for x, y, t in batches:
        if len(y) == 0:
            continue
        if vectorize:
            for n, v in batched(params, x, y, t).items():
                sums[n] += v.sum(0)
        else:
            for i in range(len(y)):
                for n, v in per_sample(params, x[i], y[i], t[i]).items():
                    sums[n] += v
        count += len(y)
    return _mean(sums, count, all_reduce)


def fisher_diagonal(
    model: nn.Module,
    batches: Iterable[Batch],
    kind: Literal["empirical", "true"] = "empirical",
    all_reduce: AllReduce | None = None,
    vectorize: bool = True,
    chunk_size: int | None = None,
) -> Params:
    """Diagonal Fisher information per parameter, averaged over the samples of ``batches``.

    Args:
        model: called as ``model(x, task)`` and returning logits (B, C).
        batches: ``(x, y, task)`` batches (this process's shard).
        kind: ``empirical``: ``E_x (d CE(f(x), y) / d theta)^2`` at the true labels; ``true``:
            ``E_x sum_c p_c(x) (d log p_c(x) / d theta)^2``, the expectation over the model's predictions.
        all_reduce: sums a tensor over processes (None: single process).
        vectorize: per-sample gradients of a whole batch in one ``vmap`` call; False runs the same per-sample
            function in a Python loop (faster on CPUs for wide MLPs, where ``vmap`` materialises a
            (B, out, in) outer product per layer; see ``benchmarks/lifelong.py``).
        chunk_size: ``vmap`` computes this many samples at a time (bounds memory; ``true`` needs C gradients per
            sample).

    Returns:
        parameter name -> non-negative tensor of the parameter's shape.
    """
    if kind not in ("empirical", "true"):
        raise ValueError(f"fisher_diagonal: kind must be 'empirical' or 'true', got {kind!r}")
    params, buffers = _state(model)
    logits = _one_sample(model, buffers)
    if kind == "empirical":

        def squared(p: Params, x: Tensor, y: Tensor, t: Tensor) -> Params:
            g = grad(lambda q: F.cross_entropy(logits(q, x, t), y))(p)
            return {n: v.pow(2) for n, v in g.items()}

    else:

        def squared(p: Params, x: Tensor, y: Tensor, t: Tensor) -> Params:
            log_p = F.log_softmax(logits(p, x, t), dim=-1)  # (C,)
            jac = jacrev(lambda q: F.log_softmax(logits(q, x, t), dim=-1))(p)  # name -> (C, *shape)
            prob = log_p.detach().exp()
            return {n: torch.tensordot(prob, j.pow(2), dims=1) for n, j in jac.items()}

    with _EvalMode(model):
        return _accumulate(squared, params, batches, all_reduce, vectorize, chunk_size)


def mas_importance(
    model: nn.Module,
    batches: Iterable[Batch],
    all_reduce: AllReduce | None = None,
    vectorize: bool = True,
    chunk_size: int | None = None,
    per_sample: bool = True,
) -> Params:
    """MAS importance: ``E_x |d ||f(x)||_2^2 / d theta|`` per parameter (no labels needed); the arguments are
    those of :func:`fisher_diagonal`.

    ``per_sample=False`` takes the absolute gradient of each batch's mean instead, averaged over the batches:
    ``mean_batches |d mean_(x in batch) ||f(x)||_2^2 / d theta|`` (HW14's sample code, the official MAS code with
    batches larger than 1). Gradients that change sign from sample to sample cancel inside a batch, so the larger
    the batch, the more the importance keeps only directions in which the whole task's outputs move together.
    Under DDP a batch is the global one (see :func:`batch_mean_gradients`)."""
    if not per_sample:
        with _EvalMode(model):
            return batch_mean_gradients(model, batches, lambda out: out.pow(2).sum(), torch.abs, all_reduce)
    params, buffers = _state(model)
    logits = _one_sample(model, buffers)

    def absolute(p: Params, x: Tensor, t: Tensor) -> Params:
        g = grad(lambda q: finite(logits(q, x, t)).pow(2).sum())(p)
        return {n: v.abs() for n, v in g.items()}

    with _EvalMode(model):
        return _accumulate(lambda p, x, y, t: absolute(p, x, t), params, batches, all_reduce, vectorize, chunk_size)


def batch_mean_gradients(
    model: nn.Module,
    batches: Iterable[Batch],
    objective: Callable[[Tensor], Tensor],
    transform: Callable[[Tensor], Tensor],
    all_reduce: AllReduce | None = None,
) -> Params:
    """``mean_batches transform(d mean_(x in batch) objective(f(x)) / d theta)``: batch-level statistics.

    ``objective`` maps the logits of a batch (B, C) to the sum over its samples (a scalar). Under DDP each process
    passes its part of every global batch; the gradient sums and sample counts are all-reduced before ``transform``
    (which is nonlinear), so the result is the single-process one.
    """
    params, buffers = _state(model)

    def total(p: Params, x: Tensor, t: Tensor) -> Tensor:
        return objective(finite(functional_call(model, (p, buffers), (x, t))))

    sums = {n: torch.zeros_like(p) for n, p in params.items()}
    device = next(iter(params.values())).device
    num_batches = 0
    for x, _, t in batches:
        g = grad(total)(params, x, t)
        count = torch.tensor(float(len(x)), device=device)
        if all_reduce is not None:
            g = {n: all_reduce(v) for n, v in g.items()}
            count = all_reduce(count)
        for n, v in g.items():
            sums[n] += transform(v / count)
        num_batches += 1
    if num_batches == 0:
        raise ValueError("importance estimation got no batches (empty task data or importance_samples = 0)")
    return {n: s / num_batches for n, s in sums.items()}


def scp_importance(
    model: nn.Module,
    batches: Iterable[Batch],
    slices: int = 100,
    generator: torch.Generator | None = None,
    all_reduce: AllReduce | None = None,
) -> Params:
    """SCP importance: ``1/L sum_l (d <xi_l, mean_batch f(x)> / d theta)^2``, averaged over batches.

    With ``J = d mean_batch f / d theta`` (C, P) and ``M = 1/L sum_l xi_l xi_l^T`` (C, C), the sum over slices is
    ``diag(J^T M J)``, so the L slices cost C backward passes per batch, not L. Under DDP, every process passes its
    part of each (global) batch: the Jacobians of the output sums are all-reduced before squaring, so the result is
    the one of the whole batch. Every process must see the same number of batches.

    Args:
        model: called as ``model(x, task)`` and returning logits (B, C).
        batches: ``(x, y, task)`` batches (labels are not used).
        slices: number L of random directions on the unit sphere of the output space, drawn per batch.
        generator: draws the directions (on the CPU); the same seed on every process.
        all_reduce: sums a tensor over processes (None: single process).
    """
    if slices < 1:
        raise ValueError(f"scp_importance: slices must be >= 1, got {slices}")
    params, buffers = _state(model)

    def output_sum(p: Params, x: Tensor, t: Tensor) -> Tensor:  # (C,)
        return finite(functional_call(model, (p, buffers), (x, t))).sum(0)

    sums = {n: torch.zeros_like(p) for n, p in params.items()}
    device = next(iter(params.values())).device
    num_batches = 0
    with _EvalMode(model):
        for x, _, t in batches:
            jac = jacrev(output_sum)(params, x, t)  # name -> (C, *shape)
            count = torch.tensor(float(len(x)), device=device)
            if all_reduce is not None:
                jac = {n: all_reduce(j) for n, j in jac.items()}
                count = all_reduce(count)
            c = next(iter(jac.values())).shape[0]
            xi = torch.randn(slices, c, generator=generator)
            xi = xi / xi.norm(dim=1, keepdim=True)  # (L, C) unit directions
            m = (xi.T @ xi / slices).to(device)  # (C, C)
            for n, j in jac.items():
                jf = j.flatten(1) / count  # (C, P): Jacobian of the batch-mean output
                sums[n] += ((m @ jf) * jf).sum(0).view_as(sums[n])
            num_batches += 1
    if num_batches == 0:
        raise ValueError("scp_importance got no batches")
    return {n: s / num_batches for n, s in sums.items()}


class _StepTracker:
    """Remembers each parameter's gradient and value before an optimiser step."""

    def __init__(self) -> None:
        self._grad: Params = {}
        self._before: Params = {}

    def before_step(self, named: Iterable[tuple[str, Tensor]]) -> None:
        self._grad, self._before = {}, {}
        for n, p in named:
            if p.grad is not None:
                self._grad[n] = p.grad.detach().clone()
                self._before[n] = p.detach().clone()

    def steps(self, named: Iterable[tuple[str, Tensor]]):
        """(name, gradient, update) per parameter that had a gradient before the step."""
        for n, p in named:
            if n in self._grad:
                yield n, self._grad[n], p.detach() - self._before[n]
        self._grad, self._before = {}, {}


class PathIntegral(_StepTracker):
    """SI's running path integral. Call :meth:`begin_task`, then :meth:`before_step` / :meth:`after_step` around
    every optimiser step (the gradient is the one the optimiser used), then :meth:`importance` at the task's end."""

    def __init__(self) -> None:
        super().__init__()
        self.omega: Params = {}
        self.start: Params = {}

    def begin_task(self, named: Iterable[tuple[str, Tensor]]) -> None:
        self.start = {n: p.detach().clone() for n, p in named}
        self.omega = {n: torch.zeros_like(p) for n, p in self.start.items()}

    def after_step(self, named: Iterable[tuple[str, Tensor]]) -> None:
        for n, g, delta in self.steps(named):
            self.omega[n] -= g * delta

    def importance(self, named: Iterable[tuple[str, Tensor]], xi: float) -> Params:
        """``omega / (Delta^2 + xi)`` with ``Delta`` the parameter change over the task; clamped at 0."""
        out = {}
        for n, p in named:
            delta = p.detach() - self.start[n]
            out[n] = (self.omega[n] / (delta.pow(2) + xi)).clamp_min(0)
        return out

    def state_dict(self) -> dict[str, Params]:
        return {"omega": dict(self.omega), "start": dict(self.start)}

    def load_state_dict(self, state: Mapping[str, Params]) -> None:
        self.omega, self.start = dict(state["omega"]), dict(state["start"])


class RiemannianWalk(_StepTracker):
    """RWalk's online Fisher (EMA of squared gradients) and per-task path score."""

    def __init__(self, alpha: float = 0.9, eps: float = 0.1) -> None:
        super().__init__()
        self.alpha, self.eps = alpha, eps
        self.fisher: Params = {}
        self.score: Params = {}  # accumulated over the current task

    def begin_task(self, named: Iterable[tuple[str, Tensor]]) -> None:
        self.score = {n: torch.zeros_like(p) for n, p in named}

    def after_step(self, named: Iterable[tuple[str, Tensor]]) -> None:
        for n, g, delta in self.steps(named):
            g2 = g.pow(2)
            self.fisher[n] = g2 if n not in self.fisher else self.alpha * self.fisher[n] + (1 - self.alpha) * g2
            self.score[n] += -g * delta / (0.5 * self.fisher[n] * delta.pow(2) + self.eps)

    def state_dict(self) -> dict[str, Params]:
        return {"fisher": dict(self.fisher), "score": dict(self.score)}

    def load_state_dict(self, state: Mapping[str, Params]) -> None:
        self.fisher, self.score = dict(state["fisher"]), dict(state["score"])
