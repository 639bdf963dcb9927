"""Synaptic intelligence — lecture 14 / HW14 (Zenke et al. 2017, arXiv 1703.04200).

For every task ``k`` of the stream, in order:

1. Train on task ``k`` with ``CE + lambda * sum_i Omega_i (theta_i - theta*_i)^2`` (the penalty of
   :class:`~lecture_modules.lifelong.penalty.Regularised`; ``lambda`` is the paper's ``c``).
2. Along the way, every optimiser step adds ``-g * delta`` (the gradient the optimiser used times the update it
   made) to each parameter's path integral ``omega`` (:class:`~lecture_modules.lifelong.importance.PathIntegral`,
   fed by the ``tracker`` hooks of ``Regularised``). Under DDP the gradients are already averaged over processes,
   so every process holds the same path.
3. When task ``k`` ends, its importance is ``omega / (Delta^2 + xi)`` with ``Delta`` the parameter's total change
   over the task (clamped at 0); it is added to ``Omega`` and anchored at ``theta*_k`` (:meth:`SI.consolidate`).

Run: ``python cli.py fit --config configs/si.yaml``
"""

from __future__ import annotations

from lecture_modules.base import bad_setting
from lecture_modules.lifelong.continual import HW14_MLP
from lecture_modules.lifelong.importance import PathIntegral
from lecture_modules.lifelong.penalty import Regularised
from lecture_modules.nets import NetSpec

__all__ = ["SI"]


class SI(Regularised):
    """Synaptic intelligence: importance from each parameter's contribution to the loss decrease (lecture 14)."""

    def __init__(
        self,
        num_classes: int = 10,
        input_shape: tuple[int, int, int] = (1, 8, 8),
        net: NetSpec = HW14_MLP,
        penalty_weight: float = 1.0,
        xi: float = 0.001,
    ) -> None:
        """
        Args:
            num_classes: number of classes (linked from the DataModule by the CLI).
            input_shape: (channels, height, width) of one image (linked from the DataModule by the CLI).
            net: the network (default HW14's 1024-512-256 ReLU MLP).
            penalty_weight: lambda (the paper's c) of the penalty ``lambda * sum Omega (theta - theta*)^2``
                (HW14: 1).
            xi: damping of ``omega / (Delta^2 + xi)`` for parameters that barely moved.
        """
        super().__init__(num_classes=num_classes, input_shape=input_shape, net=net, penalty_weight=penalty_weight)
        if xi <= 0:
            raise bad_setting("xi", xi, "> 0")
        self.tracker = PathIntegral()

    def consolidate(self, task: int) -> None:
        """Step 3, once when ``task`` ends: ``omega / (Delta^2 + xi)`` added to ``Omega``, anchored at ``theta*_k``."""
        importance = self.tracker.importance(self.named_params(), self.hparams.xi)
        self.anchor_accumulated(importance, "sum", tasks=task + 1)
