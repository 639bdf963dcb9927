"""The continual-learning shell every lifelong method shares: task boundaries, the accuracy matrix, exact resume.

:class:`ContinualLearning` trains a :class:`TaskNet` on a :class:`~datamodules.streams.TaskStreamDataModule`.
At the start of the first epoch of task ``k`` (and at the end of fit for the last task) the previous task is
closed: its row of the accuracy matrix is taken from the validation that ended its last epoch, and
:meth:`ContinualLearning.consolidate` lets the method estimate importances, store anchors or fill its memory.
Doing this at the start of the next epoch (not at the end of the last one) means a checkpoint written at the
end of an epoch is always consistent: the resumed run closes the task itself. Everything the methods keep
(importances, anchors, path integrals, memory, the matrix, counters) travels in ``checkpoint["lifelong"]`` as
tensors, numbers and lists, so checkpoints load with ``weights_only=True`` and a resumed run is exact.

A method overrides the hooks :meth:`~ContinualLearning.begin_task`, :meth:`~ContinualLearning.consolidate`,
:meth:`~ContinualLearning.extra_losses` and :meth:`~ContinualLearning.method_state`; the regularisation methods
share their quadratic penalty in :mod:`lecture_modules.lifelong.penalty`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn
from torchmetrics.classification import MulticlassAccuracy

from datamodules.streams import TaskStreamDataModule
from lecture_modules.base import LectureModule, check_shapes
from lecture_modules.lifelong.importance import AllReduce, Batch
from lecture_modules.lifelong.metrics import accuracy_curves_figure, accuracy_matrix_figure, summary
from lecture_modules.nets import NetSpec, fold_legacy_net_args

__all__ = ["HW14_MLP", "ContinualLearning", "TaskNet", "upgrade_net_args"]

log = logging.getLogger(__name__)

HW14_MLP = NetSpec(kind="mlp", widths=[1024, 512, 256], batch_norm=False, dropout=0.0)  # 784-1024-512-256-10
_LEGACY_WIDTHS = {"mlp": [1024, 512, 256], "cnn": [32, 64, 128]}  # what hidden: null meant before net existed


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


class ContinualLearning(LectureModule):
    """Continual learning on a task stream (shared base of the lifelong lectures; not an entry point)."""

    def __init__(
        self,
        num_classes: int = 10,
        input_shape: tuple[int, int, int] = (1, 8, 8),
        net: NetSpec = HW14_MLP,
    ) -> None:
        """
        Args:
            num_classes: number of classes (linked from the DataModule by the CLI).
            input_shape: (channels, height, width) of one image (linked from the DataModule by the CLI).
            net: the network (default HW14's 1024-512-256 ReLU MLP, no batch norm, no dropout).
        """
        super().__init__()
        net = NetSpec.of(net, owner="net")
        check_shapes(num_classes, input_shape)
        # One save for the whole class chain: Lightning collects the arguments of every __init__ on the stack.
        self.save_hyperparameters(ignore=["net"])
        self.hparams["net"] = net.as_dict()  # plain data: the checkpoint stays weights_only
        self.net = TaskNet(net.build(input_shape, num_classes))
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

    @classmethod
    def upgrade_hparams(cls, hparams: Mapping[str, Any]) -> dict[str, Any]:
        """Checkpoints written before ``net`` existed: see :func:`upgrade_net_args`."""
        return upgrade_net_args(hparams)

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


def upgrade_net_args(hparams: Mapping[str, Any]) -> dict[str, Any]:
    """Hyper-parameters of a lifelong checkpoint written before ``net`` existed, when ``backbone``, ``hidden`` (null:
    1024-512-256 for the MLP, 32-64-128 for the CNN), ``batch_norm`` and ``dropout`` were arguments of their own,
    with those folded into ``net``."""
    old = dict(hparams)
    if "net" not in old and "backbone" in old and old.get("hidden") is None:
        old["hidden"] = list(_LEGACY_WIDTHS.get(old["backbone"], _LEGACY_WIDTHS["mlp"]))
    return fold_legacy_net_args(old)


def _to(value: Any, device: torch.device) -> Any:
    """Tensors inside nested dicts / lists / tuples moved to ``device``."""
    if isinstance(value, Tensor):
        return value.to(device)
    if isinstance(value, dict):
        return {k: _to(v, device) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_to(v, device) for v in value)
    return value
