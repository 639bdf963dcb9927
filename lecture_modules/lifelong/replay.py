"""Experience replay — lecture 14: keep a small memory of earlier tasks' samples and keep training on them.

Chaudhry et al. 2019, "On tiny episodic memories in continual learning", arXiv 1902.10486. For every task ``k`` of
the stream, in order:

1. Train on task ``k`` with ``CE(batch) + replay_weight * CE(replayed)``, where ``replayed`` is
   ``replay_batch_size`` samples drawn from the memory at every step (:meth:`Replay.extra_losses`; seeded by step
   and process, so a resumed run draws the same ones).
2. When task ``k`` ends, store ``memory_per_task`` seeded-random training samples of it in the memory (the same on
   every process; :meth:`Replay.consolidate`). The memory travels in the checkpoint.

Run: ``python cli.py fit --config configs/replay.yaml``
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from lecture_modules.base import bad_setting
from lecture_modules.lifelong.continual import HW14_MLP, ContinualLearning
from lecture_modules.lifelong.importance import Batch
from lecture_modules.nets import NetSpec

__all__ = ["Replay"]


class Replay(ContinualLearning):
    """Experience replay from a small episodic memory of earlier tasks (lecture 14)."""

    def __init__(
        self,
        num_classes: int = 10,
        input_shape: tuple[int, int, int] = (1, 8, 8),
        net: NetSpec = HW14_MLP,
        memory_per_task: int = 100,
        replay_batch_size: int = 64,
        replay_weight: float = 1.0,
    ) -> None:
        """
        Args:
            num_classes: number of classes (linked from the DataModule by the CLI).
            input_shape: (channels, height, width) of one image (linked from the DataModule by the CLI).
            net: the network (default HW14's 1024-512-256 ReLU MLP).
            memory_per_task: training samples of each finished task kept in the memory.
            replay_batch_size: memory samples replayed per training step (per process).
            replay_weight: weight of the replayed samples' cross-entropy.
        """
        super().__init__(num_classes=num_classes, input_shape=input_shape, net=net)
        for name, value, low in (("memory_per_task", memory_per_task, 1), ("replay_batch_size", replay_batch_size, 1)):
            if value < low:
                raise bad_setting(name, value, f">= {low}")
        if replay_weight < 0:
            raise bad_setting("replay_weight", replay_weight, ">= 0")
        self.memory: list[Tensor] = []  # [x, y, task], concatenated over finished tasks

    def consolidate(self, task: int) -> None:
        """Step 2, once when ``task`` ends: add ``memory_per_task`` of its training samples to the memory."""
        data = self.stream.task_data(task, "train")
        g = torch.Generator().manual_seed(self.stream.seed * 7919 + task)
        idx = torch.randperm(len(data), generator=g)[: self.hparams.memory_per_task]
        new = [t[idx].to(self.device) for t in data.tensors]
        self.memory = new if not self.memory else [torch.cat([m, n]) for m, n in zip(self.memory, new)]

    def extra_losses(self, batch: Batch) -> dict[str, Tensor]:
        """Step 1's second term: the weighted cross-entropy of a batch drawn from the memory."""
        if not self.memory:
            return {}
        # Seeded by step and rank: reproducible on resume, different on every process.
        seed = (self.stream.seed * 1_000_003 + self.global_step) * 64 + self.global_rank
        idx = torch.randint(
            len(self.memory[1]), (self.hparams.replay_batch_size,), generator=torch.Generator().manual_seed(seed)
        )
        x, y, t = (m[idx.to(m.device)] for m in self.memory)
        return {"replay": self.hparams.replay_weight * F.cross_entropy(self.net(x, t), y)}

    def method_state(self) -> dict[str, Any]:
        return {"memory": list(self.memory)}

    def load_method_state(self, state: dict[str, Any]) -> None:
        self.memory = list(state["memory"])
