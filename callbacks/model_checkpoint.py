"""``ModelCheckpoint`` whose ``last.ckpt`` is the latest state again.

Lightning 2.6 rewrites ``last.ckpt`` (``save_last: true``) only when a top-k checkpoint is saved at the same step, so
with ``monitor`` and ``save_top_k: 1`` it holds the last *improving* epoch: ``fit --ckpt_path last.ckpt`` after a
crash silently goes back to that epoch, and ``test --ckpt_path last.ckpt`` tests older weights than the run ended
with. This subclass also writes ``last.ckpt`` at every epoch-end checkpoint opportunity where the top-k rule saved
nothing (step-based saving, ``every_n_train_steps``, keeps Lightning's rule). Its class name is Lightning's, so its
state key, and the state of checkpoints written with Lightning's class, stay the same. Every shipped config uses it.
"""

from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint as LightningModelCheckpoint

__all__ = ["ModelCheckpoint"]


class ModelCheckpoint(LightningModelCheckpoint):
    """Lightning's ``ModelCheckpoint``; ``save_last: true`` keeps ``last.ckpt`` at the latest epoch."""

    def _refresh_last(self, trainer: L.Trainer) -> None:
        if self.save_last is not True or self._should_skip_saving_checkpoint(trainer):
            return
        if self._last_global_step_saved != trainer.global_step:  # the top-k rule saved nothing at this step
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self._should_save_on_train_epoch_end(trainer) and self._every_n_epochs >= 1:
            self._refresh_last(trainer)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if not self._should_save_on_train_epoch_end(trainer) and self._every_n_epochs >= 1:
            self._refresh_last(trainer)
