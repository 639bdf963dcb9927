"""A diagnostic task stream for ``benchmarks/investigations/lifelong_hw14.py --importance-on-eval-images``; no product.

HW14's 2021 sample code estimates the EWC / MAS / SCP importances on the test images of the tasks seen so far:
the images its accuracy matrix then scores. Our methods estimate on training images, and the product offers no way
to do otherwise, because the scored images would then shape the penalty that protects them. This stream does it
anyway, so that one benchmark run can measure how much that choice moves HW14's figure. Its numbers are not a
result of the method: the README reports them only as that measurement.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from datamodules.streams import TaskStreamDataModule


class ImportanceOnEvalImages(TaskStreamDataModule):
    """``TaskStreamDataModule`` whose importance batches come from the evaluation split (``eval_split``)."""

    def shard_batches(
        self, task: int, samples: int | None, batch_size: int, world: int = 1, rank: int = 0, split: str = "train"
    ) -> Iterator[tuple[torch.Tensor, ...]]:
        return super().shard_batches(task, samples, batch_size, world, rank, split=self.eval_split)
