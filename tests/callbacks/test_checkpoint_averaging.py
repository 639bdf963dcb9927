"""Checkpoint averaging (Vaswani et al. 2017, fairseq's average_checkpoints.py): the pure mean and the callback."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from callbacks.checkpoint_averaging import CheckpointAveraging, average_checkpoint_files, average_state_dicts
from datamodules.errors import SettingError


def test_averaging_identical_weights_is_the_identity():
    torch.manual_seed(0)
    state = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4)).state_dict()
    averaged = average_state_dicts([state, state, state])
    assert averaged.keys() == state.keys() and all(torch.equal(averaged[k], state[k]) for k in state)
    assert averaged["1.num_batches_tracked"].dtype == torch.long


def test_the_average_is_the_element_wise_mean_and_counters_keep_the_last_value():
    states = [
        {"w": torch.tensor([1.0, 2.0]), "n": torch.tensor(1)},
        {"w": torch.tensor([3.0, 6.0]), "n": torch.tensor(7)},
    ]
    averaged = average_state_dicts(states)
    assert torch.equal(averaged["w"], torch.tensor([2.0, 4.0])) and int(averaged["n"]) == 7


def test_checkpoint_files_are_averaged_with_weights_only_loading(tmp_path):
    for i, value in enumerate((1.0, 2.0, 6.0)):
        torch.save({"state_dict": {"w": torch.full((2,), value)}}, tmp_path / f"{i}.ckpt")
    averaged = average_checkpoint_files(sorted(tmp_path.glob("*.ckpt")))
    assert torch.equal(averaged["w"], torch.full((2,), 3.0))


def test_the_callback_keeps_only_the_last_snapshots_and_its_state_is_plain_data(tmp_path):
    callback = CheckpointAveraging(last=2)
    callback.snapshots = [{"w": torch.full((1,), float(i))} for i in range(2)]
    callback.snapshot_step = 10
    path = tmp_path / "state.pt"
    torch.save(callback.state_dict(), path)
    restored = CheckpointAveraging(last=2)
    restored.load_state_dict(torch.load(path, weights_only=True))
    assert restored.snapshot_step == 10 and [float(s["w"]) for s in restored.snapshots] == [0.0, 1.0]
    with pytest.raises(SettingError, match=r"CheckpointAveraging\.last must be >= 1, got 0"):
        CheckpointAveraging(last=0)
