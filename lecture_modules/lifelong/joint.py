"""Joint multi-task training — lecture 14's upper bound: the network sees the data of every task together.

Multi-task learning (Caruana 1997), the reference of the continual-learning papers. For every task ``k`` of the
stream, in order:

1. Train with the cross-entropy on the union of tasks ``0..k`` (the stream's ``train_on: seen``, configs/joint.yaml;
   ``train_on: all`` trains on every task from the first epoch).
2. Nothing else: the accuracy matrix is comparable row by row with the continual methods, and its last row is
   multi-task training on all tasks. The only difference from fine-tuning is the data.

Run: ``python cli.py fit --config configs/joint.yaml``
"""

from __future__ import annotations

from datamodules.errors import SettingError
from lecture_modules.lifelong.continual import ContinualLearning

__all__ = ["Joint"]


class Joint(ContinualLearning):
    """Joint (multi-task) training on all tasks seen so far, the upper bound (lecture 14)."""

    def setup(self, stage: str) -> None:
        super().setup(stage)
        if stage == "fit" and self.stream.train_on == "current":
            raise SettingError(
                "Joint trains on several tasks at once: set data.init_args.train_on to 'seen' or 'all' "
                "(with 'current' it is plain fine-tuning)"
            )
