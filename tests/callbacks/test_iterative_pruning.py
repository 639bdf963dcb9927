"""IterativePruning: the round schedule, validated keyword arguments, the lecture protocol, and a state that makes a
resumed run prune the same rounds as an uninterrupted one."""

from __future__ import annotations

from functools import partial

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from callbacks.iterative_pruning import IterativePruning, schedule
from lecture_modules.classification import Classification
from lecture_modules.nets import NetSpec
from lecture_modules.pruning import Pruning
from lecture_modules.pruning.core import widths_of
from tests.helpers import state_dict_equal

SHAPE = (1, 8, 8)


# ---------------------------------------------------------------------------------------------- schedule
def test_schedule_removes_a_fraction_of_the_remaining_and_ends_at_the_target():
    levels = schedule(0.9, 0.3)
    assert levels[-1] == 0.9 and len(levels) == 7
    for before, after in zip([0.0, *levels[:-2]], levels[:-1]):
        assert (1 - after) == pytest.approx(0.7 * (1 - before))  # 30% of what remained
    assert schedule(0.0, 0.2) == []
    with pytest.raises(ValueError, match="amount_per_round"):
        schedule(0.5, 1.0)


def test_round_epochs_follow_pretraining_and_fine_tuning():
    callback = IterativePruning(pretrain_epochs=3, epochs_per_round=2, amount_per_round=0.5, target_sparsity=0.75)
    assert callback.levels == [0.5, 0.75]
    assert [callback.round_epoch(r) for r in range(2)] == [3, 5]


# ---------------------------------------------------------------------------------------------- arguments
def test_arguments_are_validated_by_name_and_keyword_only():
    with pytest.raises(ValueError, match="amount_per_round"):
        IterativePruning(amount_per_round=0.0)
    with pytest.raises(ValueError, match="target_sparsity"):
        IterativePruning(target_sparsity=1.0)
    with pytest.raises(ValueError, match=r"init_args.rewind_epoch must be in \[1, pretrain_epochs\)"):
        IterativePruning(rewind="early", rewind_epoch=5, pretrain_epochs=3)
    with pytest.raises(ValueError, match=r"IterativePruning's init_args.rewind must be"):
        IterativePruning(rewind="late")
    with pytest.raises(ValueError, match="epochs_per_round must be >= 1"):
        IterativePruning(epochs_per_round=0)
    with pytest.raises(ValueError, match="latency_batch_sizes"):
        IterativePruning(latency_batch_sizes=[0])
    with pytest.raises(TypeError):
        IterativePruning(0.3)  # keyword arguments only


def test_a_lecture_without_the_pruning_protocol_is_refused_at_setup():
    trainer = L.Trainer(logger=False, enable_checkpointing=False, callbacks=[IterativePruning()])
    with pytest.raises(TypeError, match=r"IterativePruning prunes a lecture that provides .* Classification lacks"):
        IterativePruning().setup(trainer, Classification(), "fit")


# ---------------------------------------------------------------------------------------------- state
def test_state_dict_round_trips_through_a_weights_only_checkpoint(tmp_path):
    callback = IterativePruning(rewind="init")
    callback.rounds_done, callback.last_val_acc = 2, 0.75
    callback.history = [{"round": 0, "level": 0.0, "sparsity": 0.0, "widths": "[4, 8]", "val_acc": 0.5}]
    callback.rewind_state = {"0.weight": torch.randn(4, 1, 3, 3)}
    path = tmp_path / "state.pt"
    torch.save(callback.state_dict(), path)
    restored = IterativePruning(rewind="init")
    restored.load_state_dict(torch.load(path, weights_only=True))
    assert (restored.rounds_done, restored.last_val_acc, restored.history) == (2, 0.75, callback.history)
    assert state_dict_equal(restored.rewind_state, callback.rewind_state)
    restored.history[0]["val_acc"] = 0.0
    assert callback.history[0]["val_acc"] == 0.5  # a copy, not the same rows


def _data() -> DataLoader:
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, *SHAPE, generator=g), torch.randint(0, 10, (64,), generator=g)
    return DataLoader(TensorDataset(x, y), batch_size=16)  # 4 steps per epoch, fixed order


def _fit(max_epochs: int, ckpt_path=None, save_to=None) -> tuple[Pruning, IterativePruning, L.Trainer]:
    """Structured pruning with Taylor scores and lottery-ticket rewinding: rounds at the start of epochs 1 and 2."""
    L.seed_everything(0)
    model = Pruning(
        input_shape=SHAPE,
        net=NetSpec(widths=[4, 8], dropout=0.0),
        method="structured",
        criterion="taylor",
        lr_scheduler=partial(torch.optim.lr_scheduler.StepLR, step_size=1, gamma=0.5),
    )
    callback = IterativePruning(pretrain_epochs=1, amount_per_round=0.3, target_sparsity=0.5, rewind="init",
                                latency_repeats=0)  # fmt: skip
    trainer = L.Trainer(max_epochs=max_epochs, accelerator="cpu", devices=1, logger=False, callbacks=[callback],
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)  # fmt: skip
    trainer.fit(model, train_dataloaders=_data(), val_dataloaders=_data(), ckpt_path=ckpt_path)
    if save_to is not None:
        trainer.save_checkpoint(save_to)
    return model, callback, trainer


def test_resume_mid_schedule_prunes_the_same_rounds_as_an_uninterrupted_run(tmp_path):
    full_model, full, full_trainer = _fit(max_epochs=4)
    assert full.rounds_done == 2 and widths_of(full_model.net) == [2, 4]
    _, first, _ = _fit(max_epochs=2, save_to=tmp_path / "mid.ckpt")  # stops after round 1 and its fine-tuning
    assert first.rounds_done == 1
    model, resumed, trainer = _fit(max_epochs=4, ckpt_path=tmp_path / "mid.ckpt")
    assert resumed.rounds_done == 2 and resumed.history == full.history
    assert state_dict_equal(resumed.rewind_state, full.rewind_state)
    assert state_dict_equal(model.state_dict(), full_model.state_dict())
    # the rebuilt optimiser trains the pruned layers at the learning rate the running schedule gives
    [optimizer], [config] = trainer.optimizers, trainer.lr_scheduler_configs
    assert {id(p) for g in optimizer.param_groups for p in g["params"]} == {id(p) for p in model.parameters()}
    assert config.scheduler.optimizer is optimizer
    assert optimizer.param_groups[0]["lr"] == config.scheduler.get_last_lr()[0] == pytest.approx(1e-3 * 0.5**4)
    assert full_trainer.optimizers[0].param_groups[0]["lr"] == optimizer.param_groups[0]["lr"]
