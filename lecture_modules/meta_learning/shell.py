"""The Lightning shell shared by the meta-learning lectures: the training step around ``meta_loss``, evaluation as
papers report it, metrics and figures. The algorithms themselves are ``MAML.meta_loss`` (:mod:`.maml`) and
``Reptile.meta_loss`` (:mod:`.reptile`).

A batch is a meta-batch of tasks from :class:`datamodules.episodes.EpisodicDataModule`:
``(x_support (T, N*K, C, H, W), y_support (T, N*K), x_query (T, N*Q, C, H, W), y_query (T, N*Q))``.

* Training: each subclass's ``meta_loss`` maps the meta-batch to one scalar whose gradient is the meta-gradient
  (mean over tasks; with the per-task loop, a carrier of gradients already taken task by task). Under DDP every
  rank holds ``T / world_size`` of the tasks, the scalar goes through the DDP-wrapped ``training_step`` and DDP
  averages the meta-gradients across ranks.
* Validation and test adapt on each task's support set with ``eval_inner_steps`` steps and score the query set.
  The inner loop needs gradients, so these steps re-enable autograd themselves (the Trainer's default
  ``inference_mode=True`` is fine) and run under ``torch.no_grad()`` otherwise: ``torch.func.grad`` still
  computes the inner gradients, but no graph outlives an episode. Accuracy is reported as the mean over tasks
  with a 95% confidence interval (``val/acc``, ``val/acc_ci95``; ``test/...``), gathered across ranks.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from functools import partial
from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_info
from torchmetrics import CatMetric

from lecture_modules.base import GENERIC_NON_FINITE_HINT, LectureModule, bad_setting, check_shapes
from lecture_modules.meta_learning.core import ConvNetSpec, adaptation_curve, mean_ci95, over_tasks

__all__ = ["Batch", "MetaLearningModule", "adaptation_figure"]

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


class MetaLearningModule(LectureModule):
    """Shared shell of the N-way K-shot meta-learners; a subclass defines ``meta_loss`` (its algorithm)."""

    head_only = False  # whether evaluation adapts only the head (ANIL: MAML with adapt="head" sets it)

    def __init__(
        self,
        *,
        num_classes: int,
        input_shape: tuple[int, int, int],
        net: ConvNetSpec | Mapping[str, Any],
        inner_lr: float,
        inner_steps: int,
        eval_inner_steps: int,
        vectorize: bool,
    ) -> None:
        """Arguments as documented by the subclass (:class:`~lecture_modules.meta_learning.maml.MAML`,
        :class:`~lecture_modules.meta_learning.reptile.Reptile`), which passes them on by keyword."""
        super().__init__()
        net = ConvNetSpec.of(net, owner="net")
        check_shapes(num_classes, input_shape, classes_from="data.init_args.ways, the ways N")
        if min(input_shape[1:]) < 2**net.blocks:
            raise bad_setting(
                "net.blocks",
                net.blocks,
                f"at most {int(math.log2(min(input_shape[1:])))} for {tuple(input_shape[1:])} px images (each block "
                "halves them; or raise data.init_args.image_size)",
            )
        if inner_lr <= 0:
            raise bad_setting("inner_lr", inner_lr, "> 0")
        for arg, value in (("inner_steps", inner_steps), ("eval_inner_steps", eval_inner_steps)):
            if value < 1:
                raise bad_setting(arg, value, ">= 1")
        self.save_hyperparameters(ignore=["net"])  # the subclass's own arguments too (MAML: first_order, adapt)
        self.hparams["net"] = net.as_dict()  # plain data: the checkpoint stays weights_only
        self.net = net.build(input_shape, num_classes)
        self.eval_accs = CatMetric()  # (tasks, eval_inner_steps + 1) query accuracy after 0..S steps, all ranks
        self.eval_losses = CatMetric()
        self.curves: dict[str, torch.Tensor] = {}

    @classmethod
    def upgrade_hparams(cls, hparams: Mapping[str, Any]) -> dict[str, Any]:
        """Checkpoints written before ``net`` existed stored its fields as ``hidden`` and ``blocks``."""
        out = dict(hparams)
        if "net" not in out and ({"hidden", "blocks"} & set(out)):
            out["net"] = {key: out.pop(key) for key in ("hidden", "blocks") if key in out}
        return out

    def non_finite_hint(self, term: str) -> str:
        """A meta-loss blows up first through the inner loop's step size, then through the meta step size."""
        inner, outer = self.describe_setting("model.init_args.inner_lr"), self.describe_setting(self.lr_setting)
        return f"lower the inner-loop step {inner} or the meta step size {outer}; {GENERIC_NON_FINITE_HINT}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # (B, C, H, W) -> (B, N) with the meta-parameters, unadapted

    def params(self) -> dict[str, torch.Tensor]:
        """The meta-parameters theta, by name (the network's parameters themselves, not copies)."""
        return dict(self.net.named_parameters())

    # ------------------------------------------------------------------ training
    def meta_loss(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """(scalar whose gradient is the meta-gradient, the meta-loss to log, metrics to log): the algorithm."""
        raise NotImplementedError(f"{type(self).__name__} must define meta_loss")

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        objective, loss, metrics = self.meta_loss(batch)
        for key, value in metrics.items():
            self.log(key, value.detach(), on_step=True, on_epoch=True, prog_bar=key == "train/acc")
        self.combine_losses({"meta": loss.detach()})  # logs train/loss; stops on a non-finite meta-loss
        return objective

    # ------------------------------------------------------------------ evaluation
    def _evaluate(self, batch: Batch) -> None:
        task = partial(
            adaptation_curve,
            self.net,
            steps=self.hparams.eval_inner_steps,
            lr=self.hparams.inner_lr,
            head_only=self.head_only,
        )
        # The loops run evaluation under inference mode; the inner loop needs autograd, so switch it back on for
        # this episode only. no_grad keeps the outer graph off: torch.func.grad computes the inner gradients anyway.
        with torch.inference_mode(False), torch.no_grad():
            batch = tuple(t.clone() for t in batch)  # inference tensors cannot enter autograd
            params = {k: v.detach() for k, v in self.params().items()}
            losses, accs = over_tasks(task, params, batch, self.hparams.vectorize)  # (T, S + 1) each
        self.eval_accs.update(accs)
        self.eval_losses.update(losses)

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self._evaluate(batch)

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self._evaluate(batch)

    def _log_evaluation(self, stage: str) -> None:
        accs, losses = self.eval_accs.compute().cpu(), self.eval_losses.compute().cpu()  # gathered from all ranks
        self.eval_accs.reset()
        self.eval_losses.reset()
        mean, ci = mean_ci95(accs[:, -1])
        # The values are already gathered from all ranks, so the mean over ranks (sync_dist) leaves them unchanged.
        self.log(f"{stage}/acc", mean, prog_bar=True, sync_dist=True)
        self.log(f"{stage}/acc_ci95", ci, sync_dist=True)
        self.log(f"{stage}/acc_unadapted", float(accs[:, 0].mean()), sync_dist=True)
        self.log(f"{stage}/loss", float(losses[:, -1].mean()), prog_bar=stage == "val", sync_dist=True)
        self.curves[stage] = accs.mean(dim=0)
        if not self.trainer.sanity_checking:
            data = self.trainer.datamodule
            setting = f"{self.hparams.num_classes}-way {getattr(data, 'shots', '?')}-shot"
            rank_zero_info(
                f"{type(self).__name__} {stage} accuracy: {100 * mean:.2f}% ± {100 * ci:.2f}% (95% CI over "
                f"{len(accs)} tasks, {setting}, {self.hparams.eval_inner_steps} inner steps)"
            )

    def on_validation_epoch_end(self) -> None:
        self._log_evaluation("val")

    def on_test_epoch_end(self) -> None:
        self._log_evaluation("test")

    def on_fit_end(self) -> None:
        if "val" in self.curves and self.trainer.is_global_zero:
            self.log_figure("val/adaptation_curve", adaptation_figure(self.curves["val"], type(self).__name__))

    def on_test_end(self) -> None:
        if "test" in self.curves and self.trainer.is_global_zero:
            self.log_figure("test/adaptation_curve", adaptation_figure(self.curves["test"], type(self).__name__))


def adaptation_figure(curve: torch.Tensor, name: str):
    """Mean query accuracy against the number of inner-loop steps (0 = the meta-learned initialisation)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    ax.plot(range(len(curve)), (100 * curve).tolist(), marker="o")
    ax.set_xlabel("inner-loop steps on the support set")
    ax.set_ylabel("query accuracy (%)")
    ax.set_title(f"{name}: adaptation on held-out tasks")
    ax.set_xticks(range(len(curve)))
    ax.grid(alpha=0.3)
    return fig
