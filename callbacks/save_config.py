"""Save the resolved LightningCLI config with the run, never overwriting an earlier run's copy.

With a ``WandbLogger`` the config goes into the W&B run config (nested, as resolved by LightningCLI) and as
``lightning_config.yaml`` into the W&B run's own folder, which is unique per run. With other loggers it goes to
their versioned ``log_dir`` like Lightning's ``SaveConfigCallback`` (which refuses to overwrite an existing file).
With no logger (``--trainer.logger false``) it goes to ``trainer.default_root_dir`` as ``config.yaml``, or
``config-1.yaml``, ``config-2.yaml``, ... next to the copies of earlier runs (Lightning would refuse the second
run), as checkpoints (``last-v1.ckpt``) and figures are never overwritten either.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
from lightning.pytorch.cli import SaveConfigCallback
from lightning.pytorch.loggers import WandbLogger

from lecture_modules.base import free_name

__all__ = ["LectureSaveConfig", "unused_name"]


class LectureSaveConfig(SaveConfigCallback):
    """SaveConfigCallback that also records the full config in the W&B run."""

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if any(isinstance(lg, WandbLogger) for lg in trainer.loggers):
            self.save_to_log_dir = False  # the W&B run folder is the run directory
        elif not trainer.loggers and self.save_to_log_dir and not self.overwrite and not self.already_saved:
            self.config_filename = unused_name(trainer, self.config_filename)
        super().setup(trainer, pl_module, stage)

    def save_config(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if not trainer.is_global_zero:
            return
        for logger in trainer.loggers:
            if not isinstance(logger, WandbLogger):
                continue
            config = self.parser.dump(self.config, skip_none=False, format="yaml")
            run = logger.experiment
            path = Path(run.dir) / self.config_filename.replace("config", "lightning_config")
            path.write_text(config)
            import yaml

            run.config.update(yaml.safe_load(config), allow_val_change=True)


def unused_name(trainer: L.Trainer, filename: str) -> str:
    """``filename``, or ``<stem>-<n><suffix>`` with the smallest ``n`` not yet taken in ``trainer.default_root_dir``
    (chosen on rank zero, the one that writes, and shared with the other ranks)."""
    name = filename
    if trainer.is_global_zero:
        stem, suffix = Path(filename).stem, Path(filename).suffix
        name = free_name(trainer.default_root_dir, stem, (suffix,)) + suffix
    return trainer.strategy.broadcast(name)
