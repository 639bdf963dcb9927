"""Samplers that make multi-process training exact and mid-epoch resume exact.

Both subclass ``DistributedSampler`` so Lightning leaves them in place under DDP instead of wrapping them.

* :class:`ResumableSampler` (training): the permutation depends only on ``seed`` and the epoch, drawn from its own
  generator (the global RNG is never touched), and it can start part-way through an epoch. The DataModule tells it
  how many batches the restored loop already consumed, so a run resumed mid-epoch sees exactly the batches an
  uninterrupted run would have seen.
* :class:`ShardSampler` (evaluation): each rank takes ``indices[rank::world_size]`` with no padding, so metrics
  reduced across ranks equal the single-process ones exactly.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, DistributedSampler

__all__ = ["ResumableDataLoader", "ResumableSampler", "ShardSampler"]


class ResumableSampler(DistributedSampler):
    """Seeded, sharded, shuffling sampler that can resume part-way through an epoch."""

    def __init__(
        self,
        data_len: int,
        num_replicas: int = 1,
        rank: int = 0,
        seed: int = 0,
        shuffle: bool = True,
        drop_last: bool = False,
        epoch_size: int | None = None,
    ) -> None:
        """
        Args:
            data_len: dataset size.
            num_replicas: number of processes (``trainer.world_size``).
            rank: this process's global rank.
            seed: base seed; epoch ``e`` uses ``seed + e``.
            shuffle: shuffle each epoch.
            drop_last: drop the tail so every rank gets the same number of samples without padding.
            epoch_size: indices per epoch (all ranks together); default ``data_len``. A larger value cycles
                through further permutations of the data, a smaller one takes a prefix of the permutation
                (a two-domain loader uses it to give its second domain the first domain's epoch length).
        """
        if epoch_size is not None and epoch_size < 1:
            raise ValueError(f"ResumableSampler.epoch_size must be >= 1, got {epoch_size}")
        self.data_len = data_len
        self.epoch_size = data_len if epoch_size is None else epoch_size
        self.start_index = 0  # per-rank position to start the current epoch from
        super().__init__(
            range(self.epoch_size),
            num_replicas=num_replicas,
            rank=rank,
            shuffle=shuffle,
            seed=seed,
            drop_last=drop_last,
        )

    def resume_from(self, epoch: int, batches_done: int, batch_size: int) -> None:
        """Start ``epoch`` after ``batches_done`` batches of ``batch_size`` that this rank already consumed."""
        self.set_epoch(epoch)
        self.start_index = min(batches_done * batch_size, self.num_samples)

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.start_index = 0  # a skip belongs to the epoch it was set for
        super().set_epoch(epoch)

    def _epoch_indices(self) -> list[int]:
        """``epoch_size`` indices: the epoch's permutation, then (when longer) further seeded permutations."""
        if not self.shuffle:
            cycles = -(-self.epoch_size // self.data_len)
            return (list(range(self.data_len)) * cycles)[: self.epoch_size]
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        indices = torch.randperm(self.data_len, generator=g).tolist()
        cycle = 1
        while len(indices) < self.epoch_size:  # own seeds per cycle, so the epoch's first cycle stays unchanged
            g = torch.Generator().manual_seed((self.seed + self.epoch) * 1_000_003 + cycle)
            indices += torch.randperm(self.data_len, generator=g).tolist()
            cycle += 1
        return indices[: self.epoch_size]

    def __iter__(self) -> Iterator[int]:
        indices = self._epoch_indices()
        if not self.drop_last and self.total_size > len(indices):  # pad by wrapping, as DistributedSampler does
            pad = self.total_size - len(indices)
            indices += (indices * math.ceil(pad / len(indices)))[:pad]
        indices = indices[: self.total_size][self.rank : self.total_size : self.num_replicas]
        start, self.start_index = self.start_index, 0  # the skip applies once
        return iter(indices[start:])


class ShardSampler(DistributedSampler):
    """In-order evaluation sampler: rank ``r`` of ``w`` gets ``indices[r::w]``, no padding, no duplicates."""

    def __init__(self, data_len: int, num_replicas: int = 1, rank: int = 0) -> None:
        self.data_len = data_len
        super().__init__(range(data_len), num_replicas=num_replicas, rank=rank, shuffle=False)
        self.num_samples = len(range(rank, data_len, num_replicas))
        self.total_size = data_len

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.data_len, self.num_replicas))


class ResumableDataLoader(DataLoader):
    """A DataLoader over a :class:`ResumableSampler`, declared resumable to Lightning.

    Its position is not kept in this state: the DataModule rebuilds it from the restored loop progress (the
    number of batches already trained on), which also stays right when Lightning has prefetched a batch.
    """

    def state_dict(self) -> dict[str, int]:
        return {"epoch": int(getattr(self.sampler, "epoch", 0))}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        """Nothing to load: see the class docstring."""
