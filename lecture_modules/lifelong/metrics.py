"""Continual-learning metrics from the accuracy matrix, and the lecture's figures.

``R[i][j]`` is the accuracy on task ``j`` after training task ``i`` (rows: tasks trained so far, columns: all
tasks). With ``T`` rows (the last row is the current state) and ``b_j`` the accuracy of the randomly initialised
network on task ``j``:

* average accuracy ``ACC = 1/T sum_{j<T} R[T-1][j]`` (over the tasks trained so far);
* backward transfer ``BWT = 1/(T-1) sum_{j<T-1} (R[T-1][j] - R[j][j])`` (Lopez-Paz & Ranzato 2017, GEM,
  arXiv 1706.08840); negative values are forgetting;
* forgetting ``F = 1/(T-1) sum_{j<T-1} max_{l<T-1} (R[l][j]) - R[T-1][j]`` (Chaudhry et al. 2018, arXiv
  1801.10112);
* forward transfer ``FWT = 1/(T-1) sum_{1<=j<T} (R[j-1][j] - b_j)`` (GEM): how much training the earlier tasks
  helps a task before it is trained on.

BWT, forgetting and FWT need two rows; they are ``None`` before.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "accuracy_curves_figure",
    "accuracy_matrix_figure",
    "average_accuracy",
    "backward_transfer",
    "forgetting",
    "forward_transfer",
    "summary",
]

Matrix = Sequence[Sequence[float]]


def _rows(matrix: Matrix) -> int:
    rows = len(matrix)
    if rows == 0:
        raise ValueError("the accuracy matrix has no rows yet")
    if any(len(r) < rows for r in matrix):
        raise ValueError(f"accuracy matrix rows need at least {rows} columns, got {[len(r) for r in matrix]}")
    return rows


def average_accuracy(matrix: Matrix) -> float:
    t = _rows(matrix)
    return sum(matrix[t - 1][j] for j in range(t)) / t


def backward_transfer(matrix: Matrix) -> float | None:
    t = _rows(matrix)
    if t < 2:
        return None
    return sum(matrix[t - 1][j] - matrix[j][j] for j in range(t - 1)) / (t - 1)


def forgetting(matrix: Matrix) -> float | None:
    t = _rows(matrix)
    if t < 2:
        return None
    return sum(max(matrix[i][j] for i in range(t - 1)) - matrix[t - 1][j] for j in range(t - 1)) / (t - 1)


def forward_transfer(matrix: Matrix, random_init: Sequence[float]) -> float | None:
    t = _rows(matrix)
    if t < 2:
        return None
    return sum(matrix[j - 1][j] - random_init[j] for j in range(1, t)) / (t - 1)


def summary(matrix: Matrix, random_init: Sequence[float] | None) -> dict[str, float]:
    """``cl/avg_acc``, ``cl/bwt``, ``cl/forgetting``, ``cl/fwt`` (those defined so far)."""
    values = {
        "cl/avg_acc": average_accuracy(matrix),
        "cl/bwt": backward_transfer(matrix),
        "cl/forgetting": forgetting(matrix),
        "cl/fwt": forward_transfer(matrix, random_init) if random_init is not None else None,
    }
    return {k: v for k, v in values.items() if v is not None}


def accuracy_matrix_figure(matrix: Matrix, title: str = "accuracy matrix R[i][j]"):
    """Heat map of R (rows: after training task i, columns: evaluated on task j), values written in the cells."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, cols = len(matrix), len(matrix[0])
    fig, ax = plt.subplots(figsize=(1.0 + 0.7 * cols, 0.9 + 0.6 * rows))
    ax.imshow([list(r) for r in matrix], cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
    for i in range(rows):
        for j in range(cols):
            v = matrix[i][j]
            ax.text(j, i, f"{100 * v:.1f}", ha="center", va="center", color="black" if v > 0.6 else "white", size=8)
    ax.set_xticks(range(cols), [str(j) for j in range(cols)])
    ax.set_yticks(range(rows), [str(i) for i in range(rows)])
    ax.set_xlabel("evaluated on task j")
    ax.set_ylabel("after training task i")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def accuracy_curves_figure(curves: Sequence[Sequence[float]], epochs_per_task: int, title: str = ""):
    """HW14's plot: accuracy of every task (and the mean over the tasks seen so far) after every epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    epochs = list(range(1, len(curves) + 1))
    num_tasks = len(curves[0]) if curves else 0
    for j in range(num_tasks):
        ax.plot(epochs, [100 * c[j] for c in curves], lw=1, label=f"task {j}")
    seen = [min(num_tasks, (e - 1) // epochs_per_task + 1) for e in epochs]
    ax.plot(epochs, [100 * sum(c[:s]) / s for c, s in zip(curves, seen)], "k--", lw=2, label="mean over seen")
    for b in range(epochs_per_task, len(curves), epochs_per_task):
        ax.axvline(b + 0.5, color="grey", lw=0.5)
    ax.set_xlabel("epoch")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_title(title or "per-task accuracy", fontsize=9)
    ax.legend(fontsize=7, ncol=2, loc="lower left")
    fig.tight_layout()
    return fig
