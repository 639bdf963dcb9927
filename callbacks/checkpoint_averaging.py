"""Checkpoint averaging: finish training with the mean of the weights of the last N epochs.

Vaswani et al. 2017 (arXiv 1706.03762, section 6.1) report their base models "using a single model obtained by
averaging the last 5 checkpoints"; fairseq's ``scripts/average_checkpoints.py`` does it after training, and HW5's
strong baseline uses it. Averaging points along the end of an SGD trajectory lands nearer the centre of the
basin than any one of them (Polyak averaging, and Izmailov et al. 2018's SWA, arXiv 1803.05407).

This callback keeps a copy of the weights at the end of each epoch (after its validation, before a checkpoint of
that epoch is written, so the copies travel in the checkpoint and a resumed run averages the same ones), and when
training ends it loads the element-wise mean of the last ``last`` copies into the model and writes it as
``averaged.ckpt`` beside the other checkpoints (never over an existing file). Integer buffers (counters) keep the
final values. :func:`average_state_dicts` is the pure step; :func:`average_checkpoint_files` averages saved files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from datamodules.errors import SettingError

__all__ = ["CheckpointAveraging", "average_checkpoint_files", "average_state_dicts"]


def average_state_dicts(states: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Element-wise mean of floating-point tensors over ``states`` (same keys); other tensors from the last."""
    if not states:
        raise ValueError("average_state_dicts needs at least one state dict")
    out = {}
    for key, last in states[-1].items():
        if torch.is_floating_point(last):
            out[key] = torch.stack([s[key].to(torch.float64) for s in states]).mean(0).to(last.dtype)
        else:
            out[key] = last.clone()
    return out


def average_checkpoint_files(paths: list[str | Path]) -> dict[str, torch.Tensor]:
    """The averaged ``state_dict`` of Lightning checkpoint files, each loaded with ``weights_only=True``."""
    return average_state_dicts([torch.load(p, map_location="cpu", weights_only=True)["state_dict"] for p in paths])


class CheckpointAveraging(Callback):
    """At the end of training, replace the weights by the mean of the last ``last`` epochs' weights."""

    def __init__(self, last: int = 5, write: bool = True) -> None:
        """
        Args:
            last: how many end-of-epoch weights to average (Vaswani et al.: 5).
            write: also save the averaged model as ``averaged.ckpt`` beside the run's checkpoints.
        """
        if last < 1:
            raise SettingError(f"trainer.callbacks CheckpointAveraging.last must be >= 1, got {last}")
        self.last, self.write = last, write
        self.written: Path | None = None  # the averaged checkpoint this run wrote
        self.snapshots: list[dict[str, torch.Tensor]] = []
        self.snapshot_step = -1

    def _snapshot(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.training or trainer.global_step == self.snapshot_step:
            return
        self.snapshots.append({k: v.detach().cpu().clone() for k, v in pl_module.state_dict().items()})
        self.snapshots = self.snapshots[-self.last :]
        self.snapshot_step = trainer.global_step

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._snapshot(trainer, pl_module)  # before ModelCheckpoint saves this epoch (checkpoint callbacks run last)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._snapshot(trainer, pl_module)  # epochs without validation

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.snapshots:
            return
        pl_module.load_state_dict(average_state_dicts(self.snapshots))
        if self.write and not trainer.fast_dev_run:
            self.written = self._path(trainer)
            trainer.save_checkpoint(self.written)

    @staticmethod
    def _path(trainer: L.Trainer) -> Path:
        folder = next((Path(cb.dirpath) for cb in trainer.callbacks if isinstance(cb, ModelCheckpoint) and cb.dirpath),
                      Path(trainer.default_root_dir) / "checkpoints")  # fmt: skip
        path, n = folder / "averaged.ckpt", 0
        while path.exists():
            n += 1
            path = folder / f"averaged-{n}.ckpt"
        return path

    def state_dict(self) -> dict[str, Any]:
        return {"snapshots": self.snapshots, "snapshot_step": self.snapshot_step}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.snapshots, self.snapshot_step = list(state_dict["snapshots"]), int(state_dict["snapshot_step"])
