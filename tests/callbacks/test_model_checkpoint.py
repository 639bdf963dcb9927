"""callbacks.ModelCheckpoint: with a monitor, ``last.ckpt`` holds the final epoch (Lightning 2.6's own class keeps
the last improving one)."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint as LightningModelCheckpoint
from torch import nn

from callbacks.model_checkpoint import ModelCheckpoint


class _Worsening(L.LightningModule):
    """A model whose monitored score only gets worse after the first epoch."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(2, 1)

    def training_step(self, batch, batch_idx):
        return self.layer(batch[0]).pow(2).mean()

    def validation_step(self, batch, batch_idx):
        self.log("val/score", -float(self.current_epoch))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _last_epoch(cls: type, tmp_path) -> int:
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(8, 2)), batch_size=4)
    callback = cls(dirpath=tmp_path, monitor="val/score", mode="max", save_last=True)
    trainer = L.Trainer(max_epochs=3, callbacks=[callback], logger=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=tmp_path)  # fmt: skip
    trainer.fit(_Worsening(), data, data)
    return torch.load(tmp_path / "last.ckpt", weights_only=True)["epoch"]


def test_last_ckpt_holds_the_final_epoch_under_a_monitor(tmp_path):
    assert _last_epoch(ModelCheckpoint, tmp_path / "ours") == 2
    best = torch.load(next((tmp_path / "ours").glob("epoch=0*.ckpt")), weights_only=True)
    assert best["epoch"] == 0  # the best (first) epoch is still kept as the top-1 checkpoint


def test_lightnings_class_keeps_the_last_improving_epoch_which_is_why_ours_exists(tmp_path):
    if _last_epoch(LightningModelCheckpoint, tmp_path) == 2:
        pytest.skip("this Lightning rewrites last.ckpt every epoch again: callbacks.ModelCheckpoint can go")
    assert ModelCheckpoint.__qualname__ == LightningModelCheckpoint.__qualname__  # same state key in checkpoints
