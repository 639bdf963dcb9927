"""What one pruning round measures (the ``IterativePruning`` callback turns the rows into a table and a figure)."""

from __future__ import annotations

import copy

import torch
from torch import nn

from lecture_modules.nets import measure_latency
from lecture_modules.pruning.core import count_macs, count_params, make_permanent, sparsity, widths_of

__all__ = ["round_stats"]


def round_stats(
    net: nn.Sequential,
    input_shape: tuple[int, ...],
    batch_sizes: list[int],
    repeats: int,
    measure: bool = True,
    threads: int = 1,
) -> dict[str, float | str]:
    """Sparsity, parameter counts, MACs and (with ``measure``) CPU latency per batch size of ``net``.

    Latency is timed on a CPU copy whose masks are made permanent: dense kernels over weights that are zero, which
    is what masked (unstructured) pruning leaves a standard runtime with. Timing uses ``threads`` intra-op
    threads (default 1: stable numbers on a shared machine; 0 keeps torch's setting).
    """
    stats: dict[str, float | str] = {
        "sparsity": sparsity(net),
        "params": float(count_params(net)),
        "nonzero_params": float(count_params(net, nonzero=True)),
        "macs": float(count_macs(net, input_shape)),
        "widths": str(widths_of(net)),
    }
    if measure:
        plain = make_permanent(copy.deepcopy(net).cpu().float())
        before = torch.get_num_threads()
        if threads > 0:
            torch.set_num_threads(threads)
        try:
            for b in batch_sizes:
                x = torch.zeros(b, *input_shape)  # no draw from the global RNG (exact resume)
                stats[f"cpu_ms_b{b}"] = 1000.0 * measure_latency(plain, x, repeats=repeats, warmup=3)
        finally:
            torch.set_num_threads(before)
    return stats
