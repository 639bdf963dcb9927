"""Network pruning — lecture 13 (network compression): the lecture is :mod:`.pruning`; the schedule is the
``callbacks.iterative_pruning.IterativePruning`` callback."""

from lecture_modules.pruning.pruning import Pruning, export_pruned

__all__ = ["Pruning", "export_pruned"]
