"""What a pruning run shows: one row per round (table) and accuracy against sparsity and latency (figure)."""

from __future__ import annotations

import copy

import torch
from torch import nn

from callbacks.model_report import measure_latency
from lecture_modules.pruning.core import count_macs, count_params, make_permanent, sparsity, widths_of

__all__ = ["COLUMNS", "pruning_figure", "round_stats"]

COLUMNS = [
    "round",
    "level",
    "sparsity",
    "params",
    "nonzero_params",
    "macs",
    "cpu_ms_b1",
    "cpu_ms_b64",
    "val_acc",
    "widths",
]


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


def pruning_figure(history: list[dict], method: str):
    """Left: validation accuracy against sparsity. Right: against batch-64 CPU latency (or the largest timed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in history if r.get("val_acc") is not None]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.6))
    xs = [100 * r["sparsity"] for r in rows]
    ys = [100 * r["val_acc"] for r in rows]
    left.plot(xs, ys, "o-")
    left.set_xlabel("weight sparsity (%)" if method == "unstructured" else "removed parameters (%)")
    left.set_ylabel("validation accuracy (%)")
    left.set_title(f"{method} pruning, per round")
    keys = sorted({k for r in rows for k in r if k.startswith("cpu_ms_b")}, key=lambda k: int(k[8:]))
    if keys:
        key = keys[-1]
        right.plot([r.get(key) for r in rows], ys, "o-")
        for r, y in zip(rows, ys):
            right.annotate(str(r["round"]), (r.get(key), y), fontsize=7)
        right.set_xlabel(f"CPU latency, batch {key[8:]} (ms)")
    right.set_title("accuracy vs latency (labels: round)")
    fig.tight_layout()
    return fig
