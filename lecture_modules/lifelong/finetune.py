"""Naive fine-tuning — lecture 14 / HW14's baseline: train each task in turn with nothing to prevent forgetting.

The lower bound every continual-learning method is compared with (catastrophic forgetting, McCloskey & Cohen 1989).

Run: ``python cli.py fit --config configs/finetune.yaml``
"""

from __future__ import annotations

from lecture_modules.lifelong.base import ContinualLearning

__all__ = ["FineTune"]


class FineTune(ContinualLearning):
    """Naive sequential fine-tuning, the forgetting baseline (lecture 14)."""
