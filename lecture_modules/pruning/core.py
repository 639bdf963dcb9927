"""Pure pruning pieces, usable and testable without a Trainer.

* Unstructured magnitude pruning through :mod:`torch.nn.utils.prune` (masks as ``weight_mask`` buffers, the
  trained tensor kept as ``weight_orig``): :func:`unstructured_round`, :func:`sparsity`, :func:`make_permanent`.
* Structured pruning of the ``build_cnn`` layout: channel scores (:func:`channel_scores`: L1/L2 filter norms; the
  Taylor score is accumulated during training by :class:`TaylorAccumulator`), :func:`keep_indices` and
  :func:`prune_channels`, which rebuilds a smaller dense ``nn.Sequential``.
* Cost: :func:`count_params`, :func:`count_macs` (``torch.utils.flop_counter``; MACs = FLOPs / 2).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn
from torch.nn.utils import prune

__all__ = [
    "TaylorAccumulator",
    "channel_scores",
    "conv_indices",
    "count_macs",
    "count_params",
    "keep_indices",
    "make_permanent",
    "masks_applied",
    "prunable",
    "prune_channels",
    "reapply_masks",
    "sparsity",
    "unstructured_round",
    "widths_of",
]


# ---------------------------------------------------------------------------------------------- unstructured
def prunable(model: nn.Module) -> list[tuple[nn.Module, str]]:
    """The (module, "weight") pairs that magnitude pruning acts on: every Conv2d and Linear weight."""
    return [(m, "weight") for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]


def _masked(module: nn.Module) -> bool:
    """Whether ``module`` itself carries a pruning mask (``prune.is_pruned`` also looks into submodules)."""
    return isinstance(getattr(module, "weight_mask", None), torch.Tensor)


def _weight(module: nn.Module) -> torch.Tensor:
    return module.weight_orig * module.weight_mask if _masked(module) else module.weight


def sparsity(model: nn.Module) -> float:
    """Fraction of zero entries over all prunable weights (masked or permanently zero)."""
    tensors = [_weight(m).detach() for m, _ in prunable(model)]
    total = sum(t.numel() for t in tensors)
    return sum(int((t == 0).sum()) for t in tensors) / max(1, total)


def _weight_orig_first(model: nn.Module) -> None:
    """``torch.nn.utils.prune`` re-registers the weight as ``weight_orig`` after the bias; put it back in front, so
    ``parameters()`` keeps its order and optimiser state saved by position (checkpoints) still lines up."""
    for module in model.modules():
        params = module._parameters
        if "weight_orig" in params and next(iter(params)) != "weight_orig":
            for key in [k for k in params if k != "weight_orig"]:
                params[key] = params.pop(key)


def _pruned_count(module: nn.Module) -> int:
    return int((module.weight_mask == 0).sum()) if _masked(module) else 0


def unstructured_round(model: nn.Module, level: float, scope: str = "global") -> float:
    """Mask the smallest-magnitude weights until exactly ``level`` of the prunable weights are masked.

    Masks accumulate (``torch.nn.utils.prune`` combines them in a ``PruningContainer``), so calling this with the
    rising levels of ``callbacks.iterative_pruning.schedule`` is iterative magnitude pruning. ``scope="global"`` ranks
    all weights together (``prune.global_unstructured``); ``"layer"`` prunes every layer to the same level
    (``l1_unstructured``). The pruned ``weight_orig`` is the same ``nn.Parameter`` object as the former ``weight``,
    so an optimiser built before pruning keeps training it. Returns the reached sparsity.
    """
    pairs = prunable(model)
    if scope == "global":
        total = sum(m.weight.numel() for m, _ in pairs)
        extra = round(level * total) - sum(_pruned_count(m) for m, _ in pairs)
        if extra > 0:
            prune.global_unstructured(pairs, pruning_method=prune.L1Unstructured, amount=extra)
    elif scope == "layer":
        for module, name in pairs:
            extra = round(level * module.weight.numel()) - _pruned_count(module)
            if extra > 0:
                prune.l1_unstructured(module, name, amount=extra)
    else:
        raise ValueError(f"scope must be 'global' or 'layer', got {scope!r}")
    _weight_orig_first(model)
    return sparsity(model)


def masks_applied(model: nn.Module) -> bool:
    return any(_masked(m) for m in model.modules())


def reapply_masks(model: nn.Module, names: set[str]) -> None:
    """Re-create the pruning parametrisation (identity masks) of the named modules, so that a ``state_dict``
    holding ``weight_orig`` / ``weight_mask`` loads into a freshly built network."""
    for name, module in model.named_modules():
        if name in names and not _masked(module):
            prune.identity(module, "weight")
    _weight_orig_first(model)


def make_permanent(model: nn.Module) -> nn.Module:
    """Fold every mask into its weight (``prune.remove``): plain ``weight`` parameters with zeros, no buffers."""
    for module in model.modules():
        if _masked(module):
            prune.remove(module, "weight")
    return model


# ---------------------------------------------------------------------------------------------- structured
def conv_indices(seq: nn.Sequential) -> list[int]:
    return [i for i, m in enumerate(seq) if isinstance(m, nn.Conv2d)]


def widths_of(seq: nn.Sequential) -> list[int]:
    """Output channels of each convolution of a ``build_cnn`` network."""
    return [seq[i].out_channels for i in conv_indices(seq)]


def channel_scores(seq: nn.Sequential, criterion: str) -> dict[int, torch.Tensor]:
    """Importance of each output channel of each convolution: the L1 or L2 norm of its filter. (C_out,) each."""
    p = {"l1": 1, "l2": 2}.get(criterion)
    if p is None:
        raise ValueError(
            f"channel_scores: criterion must be 'l1' or 'l2' (taylor comes from training), got {criterion}"
        )
    return {i: _weight(seq[i]).detach().flatten(1).norm(p=p, dim=1) for i in conv_indices(seq)}


def keep_indices(scores: dict[int, torch.Tensor], keep: dict[int, int]) -> dict[int, torch.Tensor]:
    """The ``keep[i]`` highest-scoring channels of each convolution, in their original order."""
    out = {}
    for i, s in scores.items():
        k = max(1, min(keep[i], len(s)))
        out[i] = torch.topk(s.float(), k, sorted=False).indices.sort().values
    return out


def _follow(seq: nn.Sequential, start: int) -> Iterator[tuple[int, nn.Module]]:
    for j in range(start + 1, len(seq)):
        yield j, seq[j]


def prune_channels(seq: nn.Sequential, keep: dict[int, torch.Tensor]) -> nn.Sequential:
    """A smaller dense copy of a ``build_cnn`` network keeping only the given output channels per convolution.

    For conv ``i`` the kept filters (and bias), the following BatchNorm2d's weight, bias, running mean and
    variance, and the input channels of the next Conv2d (or the input features of the final Linear, after global
    average pooling) are sliced. Masks must be permanent first. ``seq`` is left unchanged.
    """
    if masks_applied(seq):
        raise ValueError("prune_channels: make the unstructured masks permanent first (make_permanent)")
    new = nn.Sequential(*[m for m in seq])  # same modules; the sliced ones are replaced below
    with torch.no_grad():
        for i, idx in sorted(keep.items()):
            if not isinstance(seq[i], nn.Conv2d):
                raise ValueError(f"prune_channels: layer {i} is {type(seq[i]).__name__}, not Conv2d")
            new[i] = _sliced_conv(new[i], out_idx=idx, in_idx=None)
            for j, m in _follow(seq, i):
                if isinstance(m, nn.BatchNorm2d):
                    new[j] = _sliced_bn(m, idx)
                elif isinstance(m, nn.Conv2d):
                    new[j] = _sliced_conv(new[j], out_idx=None, in_idx=idx)
                    break
                elif isinstance(m, nn.Linear):
                    lin = nn.Linear(len(idx), m.out_features, bias=m.bias is not None)
                    lin.weight.copy_(m.weight[:, idx])
                    if m.bias is not None:
                        lin.bias.copy_(m.bias)
                    new[j] = lin.to(m.weight.device, m.weight.dtype)
                    break
    return new


def _sliced_conv(conv: nn.Conv2d, out_idx: torch.Tensor | None, in_idx: torch.Tensor | None) -> nn.Conv2d:
    w = conv.weight  # (C_out, C_in, k, k)
    if out_idx is not None:
        w = w[out_idx]
    if in_idx is not None:
        w = w[:, in_idx]
    new = nn.Conv2d(
        w.shape[1], w.shape[0], conv.kernel_size, conv.stride, conv.padding, conv.dilation, bias=conv.bias is not None
    )
    new.weight.copy_(w)
    if conv.bias is not None:
        new.bias.copy_(conv.bias if out_idx is None else conv.bias[out_idx])
    return new.to(conv.weight.device, conv.weight.dtype)


def _sliced_bn(bn: nn.BatchNorm2d, idx: torch.Tensor) -> nn.BatchNorm2d:
    new = nn.BatchNorm2d(len(idx), bn.eps, bn.momentum, bn.affine, bn.track_running_stats)
    if bn.affine:
        new.weight.copy_(bn.weight[idx])
        new.bias.copy_(bn.bias[idx])
    if bn.track_running_stats:
        new.running_mean.copy_(bn.running_mean[idx])
        new.running_var.copy_(bn.running_var[idx])
        new.num_batches_tracked.copy_(bn.num_batches_tracked)
    new.train(bn.training)
    return new.to(bn.running_mean.device if bn.running_mean is not None else "cpu")


class TaylorAccumulator:
    """First-order Taylor importance of channels (Molchanov et al. 2017, arXiv 1611.06440).

    For each convolution, hooks the ReLU that follows it and sums ``|mean_{h,w}(a * dL/da)|`` per channel over the
    samples of every training backward pass: the estimated change of the loss when that channel is removed.
    """

    def __init__(self) -> None:
        self.scores: dict[int, torch.Tensor] = {}
        self._handles: list = []

    def attach(self, seq: nn.Sequential) -> None:
        self.detach()
        for i in conv_indices(seq):
            relu = next(m for _, m in _follow(seq, i) if isinstance(m, nn.ReLU))
            self._handles.append(relu.register_forward_hook(self._forward_hook(i)))

    def detach(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def _forward_hook(self, i: int):
        def hook(module: nn.Module, inputs, output: torch.Tensor) -> None:
            if not (torch.is_grad_enabled() and output.requires_grad and module.training):
                return
            act = output  # (B, C, H, W), already rectified

            def on_grad(grad: torch.Tensor) -> None:
                score = (act.detach() * grad).mean(dim=(2, 3)).abs().sum(0)  # (C,)
                self.scores[i] = self.scores.get(i, torch.zeros_like(score)) + score

            output.register_hook(on_grad)

        return hook

    def reset(self) -> None:
        self.scores = {}


# ---------------------------------------------------------------------------------------------- cost
def count_params(model: nn.Module, nonzero: bool = False) -> int:
    """Parameters (masked ``weight_orig`` counted once); with ``nonzero`` only the non-zero entries."""
    total = 0
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            t = _weight(module) if name == "weight_orig" else p
            total += int((t != 0).sum()) if nonzero else t.numel()
    return total


def count_macs(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Dense multiply-accumulates of one forward pass of one sample (FLOPs / 2, ``torch.utils.flop_counter``).

    Masked zeros are still multiplied by a dense kernel, so unstructured sparsity does not lower this number.
    """
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(torch.zeros(1, *input_shape, device=device))
    model.train(was_training)
    return counter.get_total_flops() // 2
