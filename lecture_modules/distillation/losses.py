"""Distillation losses as plain functions: softened targets, the Hinton KD loss, FitNets hints.

References: Hinton, Vinyals & Dean 2015, "Distilling the Knowledge in a Neural Network" (arXiv 1503.02531);
Romero et al. 2015, "FitNets: Hints for Thin Deep Nets" (arXiv 1412.6550).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["HintAdapter", "distillation_terms", "kd_loss", "soft_targets"]


def soft_targets(teacher_logits: Sequence[torch.Tensor], temperature: float) -> torch.Tensor:
    """Average of the teachers' softened outputs: mean_t softmax(z_t / T). One teacher is an ensemble of one.

    Args:
        teacher_logits: one (B, K) tensor per teacher.
        temperature: softmax temperature T > 0.

    Returns:
        (B, K) probabilities.
    """
    if not teacher_logits:
        raise ValueError("soft_targets() needs at least one teacher's logits")
    probs = [F.softmax(z.float() / temperature, dim=-1) for z in teacher_logits]  # each (B, K)
    return torch.stack(probs).mean(dim=0)


def kd_loss(student_logits: torch.Tensor, targets: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 * KL(targets || softmax(z_s / T)), averaged over the batch.

    The T^2 factor keeps the soft-target gradients on the same scale as the hard-label ones when T changes
    (Hinton et al. 2015, section 2).

    Args:
        student_logits: (B, K) student logits z_s.
        targets: (B, K) teacher probabilities, e.g. from :func:`soft_targets` at the same temperature.
        temperature: T > 0.
    """
    log_p_student = F.log_softmax(student_logits.float() / temperature, dim=-1)  # (B, K)
    return F.kl_div(log_p_student, targets, reduction="batchmean") * temperature**2


def distillation_terms(
    student_logits: torch.Tensor,
    targets: torch.Tensor | None,
    labels: torch.Tensor,
    alpha: float,
    temperature: float,
) -> dict[str, torch.Tensor]:
    """The weighted terms of alpha * T^2 * KL(p_t || p_s) + (1 - alpha) * CE(z_s, y); zero-weight terms are left out."""
    terms: dict[str, torch.Tensor] = {}
    if alpha > 0:
        if targets is None:
            raise ValueError("alpha > 0 needs teacher targets")
        terms["kd"] = alpha * kd_loss(student_logits, targets, temperature)
    if alpha < 1:
        terms["ce"] = (1 - alpha) * F.cross_entropy(student_logits, labels)
    return terms


class HintAdapter(nn.Module):
    """FitNets regressor: maps a student feature map onto the shape of the teacher's hint layer.

    4-D features (B, C, H, W) go through a 1x1 convolution (then adaptive average pooling if the spatial sizes
    differ); 2-D features (B, D) through a linear layer. The hint loss is the mean squared error to the teacher's
    features.
    """

    def __init__(self, student_shape: Sequence[int], teacher_shape: Sequence[int]) -> None:
        """
        Args:
            student_shape: shape of the student's feature without the batch dimension: (C, H, W) or (D,).
            teacher_shape: shape of the teacher's feature without the batch dimension, same rank.
        """
        super().__init__()
        if len(student_shape) != len(teacher_shape) or len(student_shape) not in (1, 3):
            raise ValueError(
                f"hint features must both be (C, H, W) or both (D,); got student {tuple(student_shape)} and teacher "
                f"{tuple(teacher_shape)}"
            )
        self.teacher_shape = tuple(int(s) for s in teacher_shape)
        if len(student_shape) == 3:
            self.proj = nn.Conv2d(student_shape[0], teacher_shape[0], kernel_size=1)
        else:
            self.proj = nn.Linear(student_shape[0], teacher_shape[0])

    def forward(self, feature: torch.Tensor) -> torch.Tensor:
        out = self.proj(feature)  # (B, C_t, H_s, W_s) or (B, D_t)
        if out.ndim == 4 and tuple(out.shape[-2:]) != self.teacher_shape[1:]:
            out = F.adaptive_avg_pool2d(out, self.teacher_shape[1:])  # (B, C_t, H_t, W_t)
        return out

    def loss(self, student_feature: torch.Tensor, teacher_feature: torch.Tensor) -> torch.Tensor:
        """Mean squared error between the adapted student feature and the (detached) teacher feature."""
        return F.mse_loss(self(student_feature).float(), teacher_feature.detach().float())
