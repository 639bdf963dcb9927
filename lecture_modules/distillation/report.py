"""What a distillation run shows: the compression per layer (start of fit) and the end-of-fit figure."""

from __future__ import annotations

import torch
from torch import nn

from lecture_modules.distillation.students import DepthwiseSeparableConv2d, LowRankLinear, count_parameters

__all__ = ["compression_lines", "distillation_figure"]


def distillation_figure(
    accuracies: dict[str, float | None],
    params: dict[str, int],
    teacher_probs: torch.Tensor,
    student_probs: torch.Tensor,
    temperature: float,
):
    """Left: validation accuracy and parameter count per model. Right: the teacher's soft targets at T for one
    validation image against the student's ("dark knowledge": the small probabilities of the wrong classes)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    names = [n for n, a in accuracies.items() if a is not None]
    bars = left.bar(names, [100 * accuracies[n] for n in names], color=["#555", "#2a7", "#b84"][: len(names)])
    for bar, name in zip(bars, names):
        left.annotate(
            f"{params[name]:,} params",
            (bar.get_x() + bar.get_width() / 2, bar.get_height()),
            ha="center",
            va="bottom",
            fontsize=8,
        )
    left.set_ylabel("validation accuracy (%)")
    left.set_ylim(max(0.0, min(100 * accuracies[n] for n in names) - 10), 100.5)
    classes = torch.arange(len(teacher_probs))
    right.bar(classes - 0.2, teacher_probs, width=0.4, label="teacher")
    right.bar(classes + 0.2, student_probs, width=0.4, label="student")
    right.set_yscale("log")
    right.set_xticks(classes.tolist())
    right.set_xlabel("class")
    right.set_title(f"softmax(z / T), T = {temperature:g}, one validation image")
    right.legend()
    fig.tight_layout()
    return fig


def compression_lines(student: nn.Module) -> list[str]:
    """What the compact layers save, one line each (also shown by the model summary's layer repr)."""
    trainable, frozen = count_parameters(student)
    lines = [f"student: {trainable + frozen:,} parameters ({trainable:,} trainable, {frozen:,} non-trainable)"]
    for name, module in student.named_modules():
        if isinstance(module, DepthwiseSeparableConv2d | LowRankLinear):
            lines.append(f"  {name}: {type(module).__name__} {module.extra_repr()}")
    return lines
