"""Naive fine-tuning — lecture 14 / HW14's baseline: train each task in turn with nothing to prevent forgetting.

The lower bound every continual-learning method is compared with (catastrophic forgetting, McCloskey & Cohen 1989).
For every task ``k`` of the stream, in order:

1. Train on task ``k`` with its cross-entropy only (the shell's training step, nothing added).
2. Nothing is kept when the task ends: the accuracy matrix shows what the next tasks overwrite.

Run: ``python cli.py fit --config configs/finetune.yaml``
"""

from __future__ import annotations

from lecture_modules.lifelong.continual import ContinualLearning

__all__ = ["FineTune"]


class FineTune(ContinualLearning):
    """Naive sequential fine-tuning, the forgetting baseline (lecture 14)."""
