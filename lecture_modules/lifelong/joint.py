"""Joint multi-task training — lecture 14's upper bound: the network sees the data of every task together.

With the stream's ``train_on: seen`` (configs/joint.yaml), task ``k`` trains on the union of tasks 0..k, so the
accuracy matrix is comparable row by row with the continual methods and its last row is multi-task training on
all tasks; ``train_on: all`` trains on all tasks from the first epoch. Nothing is regularised: the only
difference from fine-tuning is the data.

Run: ``python cli.py fit --config configs/joint.yaml``
"""

from __future__ import annotations

from lecture_modules.lifelong.base import ContinualLearning

__all__ = ["Joint"]


class Joint(ContinualLearning):
    """Joint (multi-task) training on all tasks seen so far, the upper bound (lecture 14)."""

    def setup(self, stage: str) -> None:
        super().setup(stage)
        if stage == "fit" and self.stream.train_on == "current":
            raise ValueError(
                "Joint trains on several tasks at once: set data.init_args.train_on to 'seen' or 'all' "
                "(with 'current' it is plain fine-tuning)"
            )
