"""The shared continual-learning loop: task boundaries, the accuracy matrix, exact resume.

:class:`ContinualLearning` trains a :class:`TaskNet` on a :class:`~datamodules.streams.TaskStreamDataModule`.
At the start of the first epoch of task ``k`` (and at the end of fit for the last task) the previous task is
closed: its row of the accuracy matrix is taken from the validation that ended its last epoch, and
:meth:`ContinualLearning.consolidate` lets the method estimate importances, store anchors or fill its memory.
Doing this at the start of the next epoch (not at the end of the last one) means a checkpoint written at the
end of an epoch is always consistent: the resumed run closes the task itself. Everything the methods keep
(importances, anchors, path integrals, memory, the matrix, counters) travels in ``checkpoint["lifelong"]`` as
tensors, numbers and lists, so checkpoints load with ``weights_only=True`` and a resumed run is exact.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any, Literal

import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn
from torchmetrics.classification import MulticlassAccuracy

from datamodules.streams import TaskStreamDataModule
from lecture_modules.base import LectureModule
from lecture_modules.lifelong.importance import (
    AllReduce,
    Batch,
    Params,
    PathIntegral,
    RiemannianWalk,
    quadratic_penalty,
)
from lecture_modules.lifelong.metrics import accuracy_curves_figure, accuracy_matrix_figure, summary
from lecture_modules.nets import build_cnn, build_mlp

__all__ = ["ContinualLearning", "Regularised", "TaskNet", "check_importance_args"]

log = logging.getLogger(__name__)


class TaskNet(nn.Module):
    """A classifier body whose logits outside the task's classes are masked to ``-inf`` when a class mask is set
    (task-incremental learning: one shared head, the task label picks the competing classes)."""

    class_mask: Tensor | None

    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.body = body
        self.register_buffer("class_mask", None, persistent=False)  # (num_tasks, num_classes) bool

    def set_class_mask(self, mask: Tensor | None) -> None:
        self.class_mask = None if mask is None else mask.to(next(self.body.parameters()).device)

    def forward(self, x: Tensor, task: Tensor | None = None) -> Tensor:
        logits = self.body(x)  # (B, num_classes)
        if self.class_mask is not None and task is not None:
            logits = logits.masked_fill(~self.class_mask[task], float("-inf"))
        return logits


def _clone(params: Params) -> Params:
    return {n: p.detach().clone() for n, p in params.items()}


def _plus(running: Params | None, new: Params) -> Params:
    """``running + new`` per parameter; a copy of ``new`` when there is no running total yet."""
    return _clone(new) if running is None else {n: running[n] + new[n] for n in new}


class ContinualLearning(LectureModule):
    """Continual learning on a task stream (shared base of the lifelong lectures; not an entry point)."""

    def __init__(
        self,
        num_classes: int = 10,
        input_shape: tuple[int, int, int] = (1, 8, 8),
        backbone: Literal["mlp", "cnn"] = "mlp",
        hidden: list[int] | None = None,
        batch_norm: bool = False,
        dropout: float = 0.0,
    ) -> None:
        """
        Args:
            num_classes: number of classes (linked from the DataModule by the CLI).
            input_shape: (channels, height, width) of one image (linked from the DataModule by the CLI).
            backbone: ``mlp`` (HW14) or ``cnn``.
            hidden: layer widths (default [1024, 512, 256] for the MLP as in HW14, [32, 64, 128] for the CNN).
            batch_norm: batch normalisation after each hidden layer.
            dropout: dropout probability after each hidden layer.
        """
        super().__init__()
        if backbone not in ("mlp", "cnn"):
            raise ValueError(f"{type(self).__name__}.backbone must be 'mlp' or 'cnn', got {backbone!r}")
        if num_classes < 2 or len(input_shape) != 3:
            raise ValueError(
                f"{type(self).__name__} needs num_classes >= 2 and input_shape (C, H, W); got {num_classes}, "
                f"{input_shape}"
            )
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"{type(self).__name__}.dropout must be in [0, 1), got {dropout}")
        hidden = list(hidden) if hidden is not None else ([1024, 512, 256] if backbone == "mlp" else [32, 64, 128])
        if not hidden or min(hidden) < 1:
            raise ValueError(f"{type(self).__name__}.hidden must list positive widths, got {hidden}")
        self.save_hyperparameters()  # subclasses with arguments of their own save again
        build = build_mlp if backbone == "mlp" else build_cnn
        self.net = TaskNet(build(tuple(input_shape), num_classes, hidden, batch_norm, dropout))
        self.num_classes = num_classes
        self.val_accs: nn.ModuleList | None = None
        self.test_accs: nn.ModuleList | None = None
        # state that travels in checkpoints (see on_save_checkpoint)
        self.tasks_done = 0  # tasks closed (row of the matrix recorded, consolidated)
        self.tasks_started = 0
        self.matrix: list[list[float]] = []
        self.curves: list[list[float]] = []  # validation accuracy of every task after every epoch
        self.last_val_acc: list[float] | None = None
        self.last_val_epoch = -1
        self.random_init_acc: list[float] | None = None

    # ------------------------------------------------------------------ the stream
    @property
    def stream(self) -> TaskStreamDataModule:
        dm = self.trainer.datamodule
        if not isinstance(dm, TaskStreamDataModule):
            raise TypeError(
                f"{type(self).__name__} trains on a task stream: set data.class_path to "
                f"datamodules.streams.TaskStreamDataModule (got {type(dm).__name__})"
            )
        return dm

    def setup(self, stage: str) -> None:
        stream = self.stream
        if self.val_accs is None or len(self.val_accs) != stream.num_tasks:
            make = lambda: MulticlassAccuracy(self.num_classes, average="micro", validate_args=False)  # noqa: E731
            self.val_accs = nn.ModuleList([make() for _ in range(stream.num_tasks)])
            self.test_accs = nn.ModuleList([make() for _ in range(stream.num_tasks)])
        self.net.set_class_mask(stream.class_mask())

    def named_params(self) -> Iterator[tuple[str, Tensor]]:
        """The network's trainable parameters (the ones the penalties and importances cover)."""
        return ((n, p) for n, p in self.net.named_parameters() if p.requires_grad)

    def all_reduce(self) -> AllReduce | None:
        """A sum over processes for the importance estimators, or None in a single process."""
        if self.trainer.world_size == 1:
            return None
        strategy = self.trainer.strategy
        return lambda t: strategy.reduce(t, reduce_op="sum")

    def importance_batches(self, task: int, samples: int | None, batch_size: int) -> Iterator[Batch]:
        """This process's part of the importance batches of ``task`` (see ``TaskStreamDataModule.shard_batches``)."""
        batches = self.stream.shard_batches(task, samples, batch_size, self.trainer.world_size, self.global_rank)
        return (tuple(t.to(self.device) for t in batch) for batch in batches)

    # ------------------------------------------------------------------ method hooks
    def begin_task(self, task: int) -> None:
        """Called once at the start of every task (before its first step)."""

    def consolidate(self, task: int) -> None:
        """Called once when ``task`` ends, with the weights at its end: estimate importances, store anchors..."""

    def extra_losses(self, batch: Batch) -> dict[str, Tensor]:
        """Loss terms added to the cross-entropy of the current batch (penalties, replay)."""
        return {}

    def method_state(self) -> dict[str, Any]:
        """The method's own state for the checkpoint (tensors, numbers, lists, dicts only)."""
        return {}

    def load_method_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`method_state`."""

    # ------------------------------------------------------------------ task boundaries
    def on_train_start(self) -> None:
        super().on_train_start()
        if self.random_init_acc is None:  # a fresh run: the network is still at its initialisation
            self.random_init_acc = self.evaluate_tasks()

    def on_train_epoch_start(self) -> None:
        self._enter_task_of_epoch()

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        # Lightning skips on_train_epoch_start for the epoch it resumes into from a checkpoint written on the
        # previous epoch's last batch; the task boundary must still be crossed before the first step.
        self._enter_task_of_epoch()

    def task_to_begin(self) -> int | None:
        """The current epoch's task if it has not begun yet (it begins before the next training step), else None."""
        task = self.stream.task_of_epoch(self.current_epoch)
        return task if self.tasks_started <= task else None

    def _enter_task_of_epoch(self) -> None:
        """Close the finished tasks and begin the current epoch's task (once each; idempotent)."""
        while self.tasks_done < self.stream.task_of_epoch(self.current_epoch):
            self._end_task(self.tasks_done)
        task = self.task_to_begin()
        if task is not None:
            self.begin_task(task)
            self.tasks_started = task + 1

    def on_train_end(self) -> None:
        last = self.stream.task_of_epoch(max(self.current_epoch - 1, 0))
        while self.tasks_done <= last:
            self._end_task(self.tasks_done)
        if self.curves and self.trainer.is_global_zero:
            fig = accuracy_curves_figure(self.curves, self.stream.epochs_per_task, type(self).__name__)
            self.log_figure("cl/accuracy_curves", fig)

    def _end_task(self, task: int) -> None:
        last_epoch = (task + 1) * self.stream.epochs_per_task - 1
        if self.last_val_epoch == last_epoch:
            row = list(self.last_val_acc)
        else:  # validation did not run after the task's last epoch (check_val_every_n_epoch, limit_val_batches 0)
            row = self.evaluate_tasks()
        self.matrix.append(row)
        self.consolidate(task)
        self.tasks_done = task + 1
        self._report()

    def _report(self) -> None:
        values = summary(self.matrix, self.random_init_acc)
        if not self.trainer.is_global_zero:
            return
        for logger in self.trainer.loggers:
            logger.log_metrics({**values, "cl/tasks_done": self.tasks_done}, step=self.global_step)
        rows = "\n".join(
            f"  after task {i}: " + " ".join(f"{100 * a:5.1f}" for a in r) for i, r in enumerate(self.matrix)
        )
        text = ", ".join(f"{k.split('/')[1]} {100 * v:.2f}" for k, v in values.items())
        rank_zero_info(f"{type(self).__name__}: task {self.tasks_done - 1} done; {text}\n{rows}")
        from lightning.pytorch.loggers import WandbLogger

        columns = ["after task"] + [f"task {j}" for j in range(len(self.matrix[0]))]
        for logger in self.trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_table(
                    "cl/accuracy_matrix", columns=columns, data=[[i, *r] for i, r in enumerate(self.matrix)]
                )
        self.log_figure("cl/accuracy_matrix_heatmap", accuracy_matrix_figure(self.matrix, type(self).__name__))

    @torch.no_grad()
    def evaluate_tasks(self) -> list[float]:
        """Accuracy of the current network on every task's evaluation split (all processes together)."""
        stream, world, rank = self.stream, self.trainer.world_size, self.trainer.global_rank
        was_training = self.net.training
        self.net.eval()
        accs = []
        for task in range(stream.num_tasks):
            x, y, t = stream.task_data(task, stream.eval_split).tensors
            counts = torch.zeros(2, device=self.device)
            for start in range(rank, len(y), world * stream.base.eval_batch_size):
                idx = torch.arange(start, min(len(y), start + world * stream.base.eval_batch_size), world)
                pred = self.net(x[idx].to(self.device), t[idx].to(self.device)).argmax(-1)
                counts += torch.stack([(pred == y[idx].to(self.device)).sum(), torch.tensor(len(idx))]).float()
            if world > 1:
                counts = self.trainer.strategy.reduce(counts, reduce_op="sum")
            accs.append(float(counts[0] / counts[1].clamp_min(1)))
        self.net.train(was_training)
        return accs

    # ------------------------------------------------------------------ steps
    def forward(self, x: Tensor, task: Tensor | None = None) -> Tensor:
        return self.net(x, task)  # (B, C, H, W), (B,) -> (B, num_classes)

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        x, y, t = batch
        terms = {"ce": F.cross_entropy(self.net(x, t), y), **self.extra_losses(batch)}
        return self.combine_losses(terms)

    def validation_step(self, batch: Batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        x, y, t = batch
        self.val_accs[dataloader_idx].update(self.net(x, t), y)

    def test_step(self, batch: Batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        x, y, t = batch
        self.test_accs[dataloader_idx].update(self.net(x, t), y)

    def predict_step(self, batch: Batch, batch_idx: int, dataloader_idx: int = 0) -> Tensor:
        x, _, t = batch
        return self.net(x, t).argmax(-1)

    def _epoch_accuracies(self, metrics: nn.ModuleList) -> list[float]:
        accs = [float(m.compute()) if m.update_count else 0.0 for m in metrics]  # compute() syncs across ranks
        for m in metrics:
            m.reset()
        return accs

    def on_validation_epoch_end(self) -> None:
        accs = self._epoch_accuracies(self.val_accs)
        if self.trainer.sanity_checking:
            return
        seen = self.stream.task_of_epoch(self.current_epoch) + 1
        for j, a in enumerate(accs):
            self.log(f"val/acc_task{j}", a)
        self.log("val/acc", sum(accs[:seen]) / seen, prog_bar=True)  # mean over the tasks trained so far
        self.log("val/acc_all", sum(accs) / len(accs))
        self.last_val_acc, self.last_val_epoch = accs, self.current_epoch
        self.curves.append(accs)

    def on_test_epoch_end(self) -> None:
        accs = self._epoch_accuracies(self.test_accs)
        for j, a in enumerate(accs):
            self.log(f"test/acc_task{j}", a)
        self.log("test/acc", sum(accs) / len(accs))  # mean over all tasks

    # ------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["lifelong"] = {
            "tasks_done": self.tasks_done,
            "tasks_started": self.tasks_started,
            "matrix": [list(r) for r in self.matrix],
            "curves": [list(r) for r in self.curves],
            "last_val_acc": self.last_val_acc,
            "last_val_epoch": self.last_val_epoch,
            "random_init_acc": self.random_init_acc,
            "method": self.method_state(),
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("lifelong")
        if state is not None:
            self.tasks_done, self.tasks_started = state["tasks_done"], state["tasks_started"]
            self.matrix = [list(r) for r in state["matrix"]]
            self.curves = [list(r) for r in state["curves"]]
            self.last_val_acc, self.last_val_epoch = state["last_val_acc"], state["last_val_epoch"]
            self.random_init_acc = state["random_init_acc"]
            self.load_method_state(_to(state["method"], self.device))
        super().on_load_checkpoint(checkpoint)


def _to(value: Any, device: torch.device) -> Any:
    """Tensors inside nested dicts / lists / tuples moved to ``device``."""
    if isinstance(value, Tensor):
        return value.to(device)
    if isinstance(value, dict):
        return {k: _to(v, device) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_to(v, device) for v in value)
    return value


class Regularised(ContinualLearning):
    """Quadratic penalties ``penalty_weight * sum_k sum_i b_ki (theta_i - theta*_ki)^2`` (base of EWC, SI, MAS,
    RWalk and SCP). ``penalties`` is a list of (anchors, importance) pairs: EWC keeps one per task, the others one
    accumulated pair anchored at the latest task's weights."""

    def __init__(
        self,
        num_classes: int,
        input_shape: tuple[int, int, int],
        backbone: Literal["mlp", "cnn"],
        hidden: list[int] | None,
        batch_norm: bool,
        dropout: float,
        penalty_weight: float,
    ) -> None:
        super().__init__(num_classes, input_shape, backbone, hidden, batch_norm, dropout)
        if penalty_weight < 0:
            raise ValueError(f"{type(self).__name__}.penalty_weight must be >= 0, got {penalty_weight}")
        self.penalty_weight = penalty_weight
        self.penalties: list[tuple[Params, Params]] = []
        self.guard_sum: Params | None = None  # accumulate="hw14" / "mean": the running sums behind the penalty
        self.tracker: PathIntegral | RiemannianWalk | None = None  # SI / RWalk: statistics along the path

    # The path statistics see every optimiser step: the gradient the optimiser used and the update it made. The
    # update is recorded right after the step, before any checkpoint of that step is written.
    def begin_task(self, task: int) -> None:
        if self.tracker is not None:
            self.tracker.begin_task(self.named_params())

    def on_before_optimizer_step(self, optimizer) -> None:
        if self.tracker is not None:
            self.tracker.before_step(self.named_params())

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        super().optimizer_step(*args, **kwargs)
        if self.tracker is not None:
            self.tracker.after_step(self.named_params())

    def extra_losses(self, batch: Batch) -> dict[str, Tensor]:
        if not self.penalties:
            return {}
        params = dict(self.named_params())
        total = torch.stack([quadratic_penalty(params, a, b) for a, b in self.penalties]).sum()
        return {"penalty": self.penalty_weight * total}

    def anchor_with(
        self, importance: Params, accumulate: bool = True, compound: bool = False, average_over: int | None = None
    ) -> None:
        """Anchor at the current weights with ``importance`` added to the accumulated one (or as a new pair).

        ``compound``: HW14's sample code's accumulation instead. It keeps a list of every task's running total and
        makes the next total the sum of that list plus the new importance: ``C_k = S_(k-1) + m_k`` with
        ``S_k = S_(k-1) + C_k``, so task k's importance counts ``2^(j-k-1)`` times in the penalty after task j > k
        (after 4 tasks: ``4 m_1 + 2 m_2 + m_3 + m_4``; the plain sum gives ``m_1 + m_2 + m_3 + m_4``).

        ``average_over``: the mean instead, ``(m_1 + ... + m_k) / k`` for ``k = average_over`` tasks so far (the
        running sum is kept in ``guard_sum``). HW14's 2021 sample code re-estimates MAS on the data of every task
        seen so far and divides by the number of batches, which is this mean when every task has the same data;
        unlike the sum, the penalty does not grow stiffer with every task."""
        anchors = _clone(dict(self.named_params()))
        if average_over is not None:
            self.guard_sum = _plus(self.guard_sum, importance)
            self.penalties = [(anchors, {n: v / average_over for n, v in self.guard_sum.items()})]
        elif compound:
            total = _plus(self.guard_sum, importance)
            self.guard_sum = _plus(self.guard_sum, total)
            self.penalties = [(anchors, total)]
        elif accumulate and self.penalties:
            self.penalties = [(anchors, _plus(self.penalties[0][1], importance))]
        else:
            self.penalties.append((anchors, _clone(importance)))

    def consolidate_estimated(
        self, task: int, importance_of: Callable[[int], Params], accumulate: str, estimate_on: str
    ) -> None:
        """Anchor at the current weights with importances estimated from data (MAS, SCP).

        ``estimate_on: current``: ``importance_of(task)``, the closing task's, combined with the earlier tasks' as
        ``accumulate`` says (:meth:`anchor_with`). ``estimate_on: seen``: the importances of every task so far,
        all re-estimated now at the current weights, their mean (``accumulate: mean``) or sum (``sum``) replacing
        the earlier penalty. That is HW14's 2021 sample code, which re-estimates on the data of all seen tasks after
        each one; it needs those tasks' data (``importance_samples`` of each), which a memory-free regulariser does
        not keep."""
        if estimate_on == "current":
            self.anchor_with(
                importance_of(task),
                compound=accumulate == "hw14",
                average_over=task + 1 if accumulate == "mean" else None,
            )
            return
        total: Params | None = None
        for k in range(task + 1):
            total = _plus(total, importance_of(k))
        assert total is not None
        if accumulate == "mean":
            total = {n: v / (task + 1) for n, v in total.items()}
        self.penalties = []
        self.anchor_with(total, accumulate=False)

    def method_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {"penalties": [[dict(a), dict(b)] for a, b in self.penalties]}
        if self.guard_sum is not None:
            state["guard_sum"] = dict(self.guard_sum)
        if self.tracker is not None:
            state["tracker"] = self.tracker.state_dict()
        return state

    def load_method_state(self, state: dict[str, Any]) -> None:
        self.penalties = [(dict(a), dict(b)) for a, b in state["penalties"]]
        self.guard_sum = dict(state["guard_sum"]) if "guard_sum" in state else None
        if self.tracker is not None:
            self.tracker.load_state_dict(state["tracker"])


def check_importance_args(owner: str, samples: int | None, batch_size: int) -> None:
    """Validate the ``importance_samples`` / ``importance_batch_size`` settings of ``owner``."""
    if samples is not None and samples < 1:
        raise ValueError(f"{owner}.importance_samples must be >= 1 or null (all), got {samples}")
    if batch_size < 1:
        raise ValueError(f"{owner}.importance_batch_size must be >= 1, got {batch_size}")


def check_accumulate(owner: str, accumulate: str, estimate_on: str = "current") -> None:
    """Validate ``owner``'s ``accumulate`` and ``estimate_on`` settings (see
    :meth:`Regularised.consolidate_estimated`)."""
    if accumulate not in ("sum", "mean", "hw14"):
        raise ValueError(f"{owner}.accumulate must be 'sum', 'mean' or 'hw14', got {accumulate!r}")
    if estimate_on not in ("current", "seen"):
        raise ValueError(f"{owner}.estimate_on must be 'current' or 'seen', got {estimate_on!r}")
    if estimate_on == "seen" and accumulate == "hw14":
        raise ValueError(
            f"{owner}: accumulate 'hw14' compounds one estimate per task; with estimate_on 'seen' every task is "
            "re-estimated at each boundary, so use accumulate 'mean' (HW14's 2021 code) or 'sum'"
        )
