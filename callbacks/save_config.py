"""Save the resolved LightningCLI config with the run, never overwriting an earlier run's copy.

With a ``WandbLogger`` the config goes into the W&B run config (nested, as resolved by LightningCLI) and as
``lightning_config.yaml`` into the W&B run's own folder, which is unique per run. With other loggers it goes to
their versioned ``log_dir`` like Lightning's ``SaveConfigCallback`` (which refuses to overwrite an existing file).
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
from lightning.pytorch.cli import SaveConfigCallback
from lightning.pytorch.loggers import WandbLogger

__all__ = ["LectureSaveConfig"]


class LectureSaveConfig(SaveConfigCallback):
    """SaveConfigCallback that also records the full config in the W&B run."""

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if any(isinstance(lg, WandbLogger) for lg in trainer.loggers):
            self.save_to_log_dir = False  # the W&B run folder is the run directory
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
