"""Fast adversarial training — lecture 10 (defences): FGSM from a random start instead of PGD.

Wong, Rice & Kolter 2020, "Fast is better than free: Revisiting adversarial training" (arXiv 2001.03994): the
training attack of :mod:`.pgd_at` with one step, delta_0 ~ U(-eps, eps) and alpha = 1.25 eps (the paper's step),
projected onto the eps-ball and the [0, 1] box. It costs two forward/backward passes per batch instead of k + 1.
Without the random start (``random_start: false``) the network overfits to FGSM ("catastrophic overfitting"):
``val/robust_acc`` under PGD collapses while ``train/adv_acc`` stays high.

Run: ``python cli.py fit --config configs/fast_at.yaml``
"""

from __future__ import annotations

from typing import Any

from lecture_modules.adversarial.pgd_at import PGDAdversarialTraining

__all__ = ["FastAdversarialTraining"]


class FastAdversarialTraining(PGDAdversarialTraining):
    """FGSM adversarial training with a random start, "fast is better than free" (Wong et al., arXiv 2001.03994)."""

    def __init__(self, steps: int = 1, step_size: float = 1.25, **kwargs: Any) -> None:
        """
        Args:
            steps: attack steps per batch (one: FGSM from a random start).
            step_size: the step as a multiple of epsilon / steps (the paper's alpha = 1.25 eps).
        """
        super().__init__(steps=steps, step_size=step_size, **kwargs)
