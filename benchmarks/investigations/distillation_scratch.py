"""Investigation: distilled student against the same student trained from the labels alone, in one run.

:class:`DistillationWithScratch` is the distillation lecture plus an identical copy of the student (same initial
weights, same batches, same optimiser) trained by cross-entropy alone and logged as ``train/scratch_loss``,
``val/scratch_acc`` and ``test/scratch_acc``; the end-of-fit figure shows it next to the teacher and the distilled
student. The two students' parameters are disjoint, so adding the twin's loss leaves the distilled student's
gradients exactly as they are. The twin is saved in checkpoints but not counted in the parameter budget.

``benchmarks/distillation.py`` does not need it (it trains the two students in separate runs, several seeds); this
is the single-run, same-batches comparison that used to be the lecture's ``compare_with_scratch: true``.

Run: ``.venv/bin/python benchmarks/investigations/distillation_scratch.py [more cli.py fit arguments]``, or
``python cli.py fit --config configs/distillation.yaml --model
benchmarks.investigations.distillation_scratch.DistillationWithScratch`` from the repository root.
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from torchmetrics.classification import MulticlassAccuracy

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))  # the repo root, so it runs from anywhere

from lecture_modules.distillation import Distillation  # noqa: E402

__all__ = ["DistillationWithScratch"]

CLASS_PATH = "benchmarks.investigations.distillation_scratch.DistillationWithScratch"


class DistillationWithScratch(Distillation):
    """Distillation plus a from-scratch twin of the student trained on the same batches (one-run comparison)."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.scratch = copy.deepcopy(self.student)  # same initial weights; no random draws of its own
        num_classes = self.hparams.num_classes
        self.val_scratch_acc, self.test_scratch_acc = MulticlassAccuracy(num_classes), MulticlassAccuracy(num_classes)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        loss = super().training_step(batch, batch_idx)
        x, y = batch[0], batch[1]
        scratch_loss = F.cross_entropy(self.scratch(x), y)  # (B, C, H, W) -> (B, K) -> ()
        self.log("train/scratch_loss", scratch_loss.detach(), on_step=True, on_epoch=False)
        return loss + scratch_loss  # disjoint parameters: the student's gradients are unchanged

    def _evaluate(self, batch, stage: str) -> None:
        super()._evaluate(batch, stage)
        x, y = batch[0], batch[1]
        scratch_acc = self.val_scratch_acc if stage == "val" else self.test_scratch_acc
        scratch_acc.update(self.scratch(x), y)
        self.log(f"{stage}/scratch_acc", scratch_acc, on_epoch=True)

    def figure_models(self, metrics: Mapping[str, float]) -> tuple[dict[str, float | None], dict[str, int]]:
        accuracies, params = super().figure_models(metrics)
        accuracies["student, scratch"] = metrics.get("val/scratch_acc")
        params["student, scratch"] = self.student_params
        return accuracies, params


def main(args: list[str] | None = None) -> int:
    """``cli.py fit`` of ``configs/distillation.yaml`` with this subclass as the model; ``args`` (default: the
    command line) are appended."""
    from cli import main as cli_main

    base = ["fit", "--config", str(REPO / "configs" / "distillation.yaml"), "--model", CLASS_PATH]
    given = sys.argv[1:] if args is None else list(args)
    if given[:1] != ["fit"]:  # a DDP re-launch of this script already carries the full command line
        sys.argv[1:] = [*base, *given]  # as cli.py would see them: DDP re-launches this script with sys.argv
    return cli_main()


if __name__ == "__main__":
    sys.exit(main())
