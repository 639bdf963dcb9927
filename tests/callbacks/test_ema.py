"""The EMA callback: the average's update rule, the swap for evaluation, and its plain-tensor checkpoint state."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from callbacks.ema import EMA
from datamodules.errors import SettingError


class _Module(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(2, 1)
        self.device = torch.device("cpu")


def test_the_average_follows_the_update_rule_and_swaps_in_for_evaluation_only():
    module = _Module()
    ema = EMA(decay=0.9, warmup=False)
    ema.on_fit_start(None, module)
    start = module.layer.weight.detach().clone()
    with torch.no_grad():
        module.layer.weight.add_(1.0)
    ema.on_train_batch_end(None, module)
    torch.testing.assert_close(ema.shadow["layer.weight"], 0.9 * start + 0.1 * (start + 1.0))
    trained = module.layer.weight.detach().clone()
    ema.on_validation_start(None, module)
    torch.testing.assert_close(module.layer.weight.detach(), ema.shadow["layer.weight"])
    ema.on_validation_end(None, module)
    assert torch.equal(module.layer.weight.detach(), trained)  # training goes on from the raw weights


def test_the_warmup_ramps_the_decay_and_the_state_is_plain_tensors_that_round_trip(tmp_path):
    module = _Module()
    ema = EMA(decay=0.999)
    ema.on_fit_start(None, module)
    before = ema.shadow["layer.weight"].clone()
    with torch.no_grad():
        module.layer.weight.add_(1.0)
    ema.on_train_batch_end(None, module)  # first update: decay (1 + 1) / (10 + 1), not 0.999
    torch.testing.assert_close(ema.shadow["layer.weight"], before + (1 - 2 / 11))
    torch.save(ema.state_dict(), tmp_path / "ema.pt")
    restored = EMA(decay=0.999)
    restored.load_state_dict(torch.load(tmp_path / "ema.pt", weights_only=True))
    assert restored.updates == 1 and torch.equal(restored.shadow["layer.weight"], ema.shadow["layer.weight"])


def test_a_decay_outside_zero_to_one_is_refused():
    with pytest.raises(SettingError, match=r"EMA\.decay"):
        EMA(decay=1.0)


def test_predict_from_a_checkpoint_samples_with_the_checkpoints_average(tmp_path):
    """A fresh EMA at `predict --ckpt_path` swaps in the average saved in the checkpoint (Lightning 2.6 restores
    callback states in every stage) and puts the trained weights back after."""
    import lightning as L

    class Tiny(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.layer = nn.Linear(2, 1)

        def training_step(self, batch, batch_idx):
            return self.layer(batch[0]).pow(2).mean()

        def predict_step(self, batch, batch_idx):
            return self.layer.weight.detach().clone()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.5)

    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(16, 2)), batch_size=4)
    common = {"logger": False, "enable_progress_bar": False, "enable_model_summary": False}
    trained = EMA(decay=0.5, warmup=False)
    trainer = L.Trainer(max_steps=4, callbacks=[trained], default_root_dir=tmp_path, **common)
    model = Tiny()
    trainer.fit(model, data)
    ckpt = tmp_path / "last.ckpt"
    trainer.save_checkpoint(ckpt)
    average = trained.shadow["layer.weight"].clone()
    assert not torch.allclose(average, model.layer.weight.detach())  # the average lags the trained weights
    fresh = Tiny()
    predicted = L.Trainer(callbacks=[EMA(decay=0.5)], **common).predict(fresh, data, ckpt_path=ckpt)
    torch.testing.assert_close(predicted[0], average)
    torch.testing.assert_close(fresh.layer.weight.detach(), model.layer.weight.detach())  # swapped back
