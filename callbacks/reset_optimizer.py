"""Start every task of a continual-learning stream with a fresh optimiser state.

Adam's moment estimates at the end of a task describe that task's (small, converged) gradients. Carried into the
next task they make its first few hundred steps several times larger than the learning rate, and those early
steps are where old tasks get overwritten. HW14's sample code builds a new optimiser for every task; Avalanche
resets the optimiser at every experience. This callback does the same inside one ``fit``: when a task begins it
clears every optimiser's per-parameter state (moments and step counts), leaving the hyper-parameters alone.

The decision follows the lecture module's own task counter (``task_to_begin``, whose state travels in the checkpoint),
so a run resumed in the middle of a task keeps the optimiser state it saved, and a run resumed at a task boundary
resets exactly as the uninterrupted run did.
"""

from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import Callback

__all__ = ["ResetOptimizerPerTask"]


class ResetOptimizerPerTask(Callback):
    """Clear the optimisers' state (e.g. Adam's moments) when a new task of the stream begins (HW14, Avalanche)."""

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._reset_if_a_task_begins(trainer, pl_module)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, *args) -> None:
        # Lightning skips on_train_epoch_start for the epoch it resumes into from a checkpoint written on the last
        # batch of the epoch before; the module then begins the task at its first batch, and so does this reset.
        self._reset_if_a_task_begins(trainer, pl_module)

    @staticmethod
    def _reset_if_a_task_begins(trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        stream = trainer.datamodule
        if not hasattr(stream, "task_of_epoch") or not hasattr(pl_module, "task_to_begin"):
            raise TypeError(
                "ResetOptimizerPerTask needs a task stream (data: datamodules.streams.TaskStreamDataModule) and a "
                f"continual-learning lecture; got {type(stream).__name__} and {type(pl_module).__name__}"
            )
        task = pl_module.task_to_begin()  # the module begins it right after this hook; its first task needs nothing
        if task:
            for optimizer in trainer.optimizers:
                optimizer.state.clear()
