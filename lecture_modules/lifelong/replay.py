"""Experience replay — lecture 14: keep a small memory of earlier tasks' samples and keep training on them.

At the end of every task ``memory_per_task`` seeded-random training samples of the task are stored (the same on
every process); every training step then adds the cross-entropy of ``replay_batch_size`` samples drawn from the
memory (Chaudhry et al. 2019, "On tiny episodic memories in continual learning", arXiv 1902.10486). The memory
travels in the checkpoint.

Run: ``python cli.py fit --config configs/replay.yaml``
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from lecture_modules.lifelong.base import ContinualLearning
from lecture_modules.lifelong.importance import Batch

__all__ = ["Replay"]


class Replay(ContinualLearning):
    """Experience replay from a small episodic memory of earlier tasks (lecture 14)."""

    def __init__(
        self,
        num_classes: int = 10,
        input_shape: tuple[int, int, int] = (1, 8, 8),
        backbone: Literal["mlp", "cnn"] = "mlp",
        hidden: list[int] | None = None,
        batch_norm: bool = False,
        dropout: float = 0.0,
        memory_per_task: int = 100,
        replay_batch_size: int = 64,
        replay_weight: float = 1.0,
    ) -> None:
        """
        Args:
            num_classes: number of classes (linked from the DataModule by the CLI).
            input_shape: (channels, height, width) of one image (linked from the DataModule by the CLI).
            backbone: ``mlp`` (HW14) or ``cnn``.
            hidden: layer widths (default [1024, 512, 256] for the MLP, as in HW14).
            batch_norm: batch normalisation after each hidden layer.
            dropout: dropout probability after each hidden layer.
            memory_per_task: training samples of each finished task kept in the memory.
            replay_batch_size: memory samples replayed per training step (per process).
            replay_weight: weight of the replayed samples' cross-entropy.
        """
        super().__init__(num_classes, input_shape, backbone, hidden, batch_norm, dropout)
        if memory_per_task < 1 or replay_batch_size < 1 or replay_weight < 0:
            raise ValueError(
                "Replay needs memory_per_task >= 1, replay_batch_size >= 1 and replay_weight >= 0; got "
                f"{memory_per_task}, {replay_batch_size}, {replay_weight}"
            )
        self.save_hyperparameters()
        self.memory: list[Tensor] = []  # [x, y, task], concatenated over finished tasks

    def consolidate(self, task: int) -> None:
        data = self.stream.task_data(task, "train")
        g = torch.Generator().manual_seed(self.stream.seed * 7919 + task)
        idx = torch.randperm(len(data), generator=g)[: self.hparams.memory_per_task]
        new = [t[idx].to(self.device) for t in data.tensors]
        self.memory = new if not self.memory else [torch.cat([m, n]) for m, n in zip(self.memory, new)]

    def extra_losses(self, batch: Batch) -> dict[str, Tensor]:
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
