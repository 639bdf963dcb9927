"""Knowledge distillation — lecture 13 (network compression) / HW13: a compact student learns from frozen teachers.

Hinton, Vinyals & Dean 2015, "Distilling the Knowledge in a Neural Network" (arXiv 1503.02531), with the hints of
Romero et al. 2015, "FitNets" (arXiv 1412.6550). For a batch (x, y), :meth:`Distillation.training_step` does:

1. Student logits z_s = f_s(x); forward hooks keep the student's hint-layer features h_s^l.
2. Soft targets p_t = (1/n) sum_i softmax(z_t^i / T) of the n frozen teachers (an ensemble of one or more), or
   their cached logits (``cache_teacher_logits``); the first teacher's hooks keep its hint features h_t^l.
3. FitNets hints: L_hint = beta * sum_l || r_l(h_s^l) - h_t^l ||^2, r_l a learned 1x1-conv / linear adapter
   (``hint_layers``, ``hint_weight``). FitNets' stage 1 trains on L_hint alone for ``hint_only_epochs``.
4. L = alpha * T^2 * KL(p_t || softmax(z_s / T)) + (1 - alpha) * CE(z_s, y) [+ L_hint] (``alpha``,
   ``temperature``; the T^2 keeps the soft-target gradients on the scale of the hard-label ones).

The student (:class:`~lecture_modules.distillation.students.StudentSpec`: small CNN, depthwise-separable CNN, MLP or
low-rank MLP) has a parameter budget (``max_params``) that stops ``fit`` at start-up, as in HW13. Teachers come from
a Lightning checkpoint of any lecture, a state-dict file or a Hugging Face model (see
:mod:`lecture_modules.distillation.teachers`); they are frozen and kept outside the module's parameters, so they
are not optimised, not saved in the student's checkpoint and invisible to DDP.

Run: ``python cli.py fit --config configs/distillation.yaml`` (uses the teacher shipped for the embedded digits).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import nn
from torch.utils.data import DataLoader
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from datamodules.errors import SettingError
from lecture_modules.base import GENERIC_NON_FINITE_HINT, LectureModule, bad_setting, check_shapes
from lecture_modules.distillation.losses import HintAdapter, distillation_terms, soft_targets
from lecture_modules.distillation.report import compression_lines, distillation_figure
from lecture_modules.distillation.students import StudentSpec, count_parameters
from lecture_modules.distillation.teachers import TeacherSpec, load_teacher

__all__ = ["Distillation", "ParameterBudgetError"]

# Keys of older checkpoints that are not today's arguments: the student's own settings (now ``student``) and the
# with/without-distillation twin, which moved to benchmarks/investigations/distillation_scratch.py.
_LEGACY_STUDENT_KEYS = ("widths", "rank", "batch_norm", "dropout")


class ParameterBudgetError(SettingError):
    """The student has more parameters than ``max_params`` allows."""


def _capture(store: dict[str, torch.Tensor], name: str):
    def hook(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
        store[name] = output

    return hook


def _module_named(root: nn.Module, name: str, role: str) -> nn.Module:
    modules = dict(root.named_modules())
    if name not in modules:
        names = [n for n in modules if n]
        raise SettingError(f"model.init_args.hint_layers: the {role} has no layer '{name}'; its layers are {names}")
    return modules[name]


class Distillation(LectureModule):
    """Knowledge distillation: a compact student learns from frozen teachers (logits and FitNets hints)."""

    def __init__(
        self,
        num_classes: int = 10,
        input_shape: tuple[int, int, int] = (1, 8, 8),
        student: StudentSpec = StudentSpec(),
        teachers: list[TeacherSpec] | None = None,
        alpha: float = 0.9,
        temperature: float = 2.0,
        hint_layers: dict[str, str] | None = None,
        hint_weight: float = 1.0,
        hint_only_epochs: int = 0,
        cache_teacher_logits: bool = False,
        max_params: int | None = None,
    ) -> None:
        """
        Args:
            num_classes: number of classes (linked from the DataModule by the CLI).
            input_shape: (channels, height, width) of one image (linked from the DataModule by the CLI).
            student: the compact network: its kind, widths, rank (low-rank MLP), batch norm and dropout.
            teachers: frozen teachers; several form an ensemble (their softened outputs are averaged).
                Empty (with ``alpha: 0``) trains the student from labels alone: the no-distillation baseline.
            alpha: weight of the distillation term; 1 - alpha weighs the hard-label cross-entropy.
            temperature: softmax temperature T of the distillation term (its gradient is scaled by T^2).
            hint_layers: FitNets hints, ``{student layer: teacher layer}`` by module name (e.g. ``{"4": "net.8"}``),
                matched with the first teacher through a learned adapter.
            hint_weight: weight of the summed hint losses.
            hint_only_epochs: train on the hint loss alone for this many epochs first (FitNets' stage 1).
            cache_teacher_logits: compute the teachers' logits for the whole (fixed) training set once, at the start
                of fit; needs ``data.init_args.indexed: true``. Logits only, so not with ``hint_layers``.
            max_params: parameter budget of the student (trainable and non-trainable parameters; the hint adapters,
                used only in training, are not counted); ``fit`` stops at start-up when it is exceeded.
        """
        super().__init__()
        spec = StudentSpec.of(student, owner="student")
        specs = [s if isinstance(s, TeacherSpec) else TeacherSpec(**s) for s in (teachers or [])]
        hint_layers = dict(hint_layers or {})
        self._validate(num_classes, input_shape, alpha, temperature, specs, hint_layers)
        if cache_teacher_logits and hint_layers:
            raise SettingError(
                "model.init_args.cache_teacher_logits caches logits only; FitNets model.init_args.hint_layers need "
                "the teacher's features at every step. Use one or the other."
            )
        self.save_hyperparameters(ignore=["student", "teachers"])
        self.hparams["student"] = spec.as_dict()  # plain data: the checkpoint stays weights_only
        self.hparams["teachers"] = [s.as_dict() for s in specs]
        self.teacher_specs = specs
        self.student = spec.build(input_shape, num_classes)
        self.student_params = sum(count_parameters(self.student))
        if max_params is not None and self.student_params > max_params:
            trainable, frozen = count_parameters(self.student)
            raise ParameterBudgetError(
                f"the '{spec.kind}' student with widths {spec.layer_widths} has {self.student_params:,} parameters "
                f"({trainable:,} trainable + {frozen:,} non-trainable), over the budget "
                f"model.init_args.max_params = {max_params:,}. Use smaller widths, a smaller rank, or the "
                "depthwise_separable / low_rank_mlp students."
            )
        self.example_input_array = torch.zeros(2, *input_shape)
        self.hint_adapters = nn.ModuleDict()  # built in setup(), once the teacher's feature shapes are known
        self._student_feats: dict[str, torch.Tensor] = {}
        self._teacher_feats: dict[str, torch.Tensor] = {}
        for name in hint_layers:
            _module_named(self.student, name, "student").register_forward_hook(_capture(self._student_feats, name))
        # Frozen teachers live in a plain list: not submodules, so not in parameters(), state_dict() or DDP.
        self._teachers: list[nn.Module] = []
        self._cache: torch.Tensor | None = None  # (num_teachers, N_train, K) when cache_teacher_logits
        self._example: torch.Tensor | None = None  # one validation image for the end-of-fit figure
        self.train_acc, self.val_acc, self.test_acc = (MulticlassAccuracy(num_classes) for _ in range(3))
        self.val_teacher_acc, self.test_teacher_acc = MulticlassAccuracy(num_classes), MulticlassAccuracy(num_classes)
        self.val_loss, self.test_loss = MeanMetric(), MeanMetric()
        self.val_agreement, self.test_agreement = MeanMetric(), MeanMetric()

    @classmethod
    def upgrade_hparams(cls, hparams: Mapping[str, Any]) -> dict[str, Any]:
        """Checkpoints written before ``student`` became one spec stored ``student`` (the kind), ``widths``,
        ``rank``, ``batch_norm`` and ``dropout``, and ``compare_with_scratch`` (now an investigation's subclass)."""
        out = dict(hparams)
        out.pop("compare_with_scratch", None)
        if isinstance(out.get("student"), str):
            student = {"kind": out.pop("student")}
            student.update({key: out.pop(key) for key in _LEGACY_STUDENT_KEYS if key in out})
            out["student"] = student
        return out

    # ------------------------------------------------------------------ steps (the algorithm, in the paper's order)
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.student(x)  # (B, C, H, W) -> (B, num_classes)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        x, y = batch[0], batch[1]  # (B, C, H, W), (B,) [, (B,) sample index]
        hp = self.hparams
        logits = self(x)  # step 1: z_s (B, K); the hooks keep h_s
        targets = None
        if self._teachers and (hp.alpha > 0 or len(self.hint_adapters)):  # step 2: p_t (B, K); the hooks keep h_t
            targets = soft_targets(self.teacher_logits(x, batch[2] if len(batch) > 2 else None), hp.temperature)
        terms: dict[str, torch.Tensor] = {}
        if len(self.hint_adapters):  # step 3: FitNets hints
            terms["hint"] = hp.hint_weight * self.hint_loss()
        hint_stage = len(self.hint_adapters) and self.current_epoch < hp.hint_only_epochs
        if not hint_stage:  # step 4: alpha T^2 KL(p_t || p_s) + (1 - alpha) CE
            terms.update(distillation_terms(logits, targets, y, hp.alpha, hp.temperature))
        loss = self.combine_losses(terms)
        if hint_stage:  # FitNets stage 1: layers past the hints get zero gradients, not none (DDP needs all of them)
            loss = loss + 0.0 * logits.sum()
        self.train_acc.update(logits.detach(), y)
        self.log("train/acc", self.train_acc, on_step=False, on_epoch=True)
        return loss

    def hint_loss(self) -> torch.Tensor:
        """sum_l || r_l(h_s^l) - h_t^l ||^2 over the hint layers, from the features the last forward passes kept."""
        hints = [
            self.hint_adapters[s.replace(".", "_")].loss(self._student_feats[s], self._teacher_feats[s])
            for s in self.hparams.hint_layers
        ]
        return torch.stack(hints).sum()

    @staticmethod
    def _validate(num_classes, input_shape, alpha, temperature, specs, hint_layers) -> None:
        check_shapes(num_classes, input_shape)
        if not 0.0 <= alpha <= 1.0:
            raise bad_setting("alpha", alpha, "in [0, 1]")
        if temperature <= 0:
            raise bad_setting("temperature", temperature, "> 0")
        if (alpha > 0 or hint_layers) and not specs:
            raise SettingError(
                f"model.init_args.teachers is empty, but model.init_args.alpha {alpha} > 0 or "
                "model.init_args.hint_layers need at least one teacher; set alpha: 0 to train the student from labels "
                "alone (the no-distillation baseline)"
            )

    def non_finite_hint(self, term: str) -> str:
        """The distillation term overflows with an extreme temperature; the hint term with a large hint weight."""
        lr = self.describe_setting(self.lr_setting)
        if term == "kd":
            temperature = self.describe_setting("model.init_args.temperature")
            return (
                f"raise the temperature {temperature} if it is tiny (it divides the logits; 1-10 is usual), or lower "
                f"the learning rate {lr}; {GENERIC_NON_FINITE_HINT}"
            )
        if term == "hint":
            weight = self.describe_setting("model.init_args.hint_weight")
            return f"lower the hint weight {weight} or the learning rate {lr}; {GENERIC_NON_FINITE_HINT}"
        return super().non_finite_hint(term)

    # ------------------------------------------------------------------ teachers
    @property
    def teachers(self) -> list[nn.Module]:
        """The loaded, frozen teachers (empty until ``setup('fit')``)."""
        return self._teachers

    def setup(self, stage: str) -> None:
        """Load the teachers for ``fit`` (validate/test/predict use the student alone) and build hint adapters."""
        if stage != "fit" or self._teachers or not self.teacher_specs:
            return
        self._teachers = [load_teacher(spec).to(self.device) for spec in self.teacher_specs]
        for spec, teacher in zip(self.teacher_specs, self._teachers):
            self._check_teacher(spec, teacher)
            self._check_split(spec, teacher)
        if self.hparams.hint_layers:
            self._build_hint_adapters()

    def _check_teacher(self, spec: TeacherSpec, teacher: nn.Module) -> None:
        x = self.example_input_array.to(self.device)
        try:
            with torch.no_grad():
                out = teacher(x)
        except RuntimeError as exc:
            raise ValueError(
                f"teacher '{spec.path}' cannot take inputs of shape {tuple(x.shape[1:])} (the data's "
                f"input_shape): {exc}"
            ) from exc
        if out.ndim != 2 or out.shape[1] != self.hparams.num_classes:
            raise ValueError(
                f"teacher '{spec.path}' outputs {tuple(out.shape[1:])} per sample but the data has "
                f"{self.hparams.num_classes} classes"
            )

    def _check_split(self, spec: TeacherSpec, teacher: nn.Module) -> None:
        """Warn when the teacher's run split the data differently: it may have trained on our val/test samples."""
        theirs = getattr(teacher, "trained_on", None) or {}
        datamodule = self.trainer.datamodule if self._trainer is not None else None
        ours = dict(getattr(datamodule, "hparams", {}) or {})
        keys = ("seed", "val_fraction", "test_fraction")
        differ = [
            f"{k}: teacher {theirs[k]} vs data {ours[k]}"
            for k in keys
            if k in theirs and k in ours and theirs[k] != ours[k]
        ]
        if differ and theirs.get("_class_path") == ours.get("_class_path", theirs.get("_class_path")):
            rank_zero_warn(
                f"teacher '{spec.path}' was trained with other data split settings ({'; '.join(differ)}): it may have "
                "seen this run's validation or test samples, which inflates the distilled student's scores."
            )

    def _build_hint_adapters(self) -> None:
        teacher = self._teachers[0]
        for s_name, t_name in self.hparams.hint_layers.items():
            _module_named(teacher, t_name, "teacher").register_forward_hook(_capture(self._teacher_feats, s_name))
        was_training = self.student.training
        x = self.example_input_array.to(self.device)
        with torch.no_grad():
            self.student.eval()
            self.student(x)
            teacher(x)
        self.student.train(was_training)
        for s_name in self.hparams.hint_layers:
            adapter = HintAdapter(self._student_feats[s_name].shape[1:], self._teacher_feats[s_name].shape[1:])
            self.hint_adapters[s_name.replace(".", "_")] = adapter.to(self.device)

    def _apply(self, fn, recurse: bool = True):
        super()._apply(fn, recurse)
        for teacher in self._teachers:  # device moves reach the teachers although they are not submodules
            teacher._apply(fn, recurse)
        return self

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False):
        """Hint adapters are training-only: a checkpoint's adapters are dropped when none were built (eval). So is the
        from-scratch twin of checkpoints written with ``compare_with_scratch`` when this module has none."""
        dropped = () if len(self.hint_adapters) else ("hint_adapters.",)
        dropped += () if hasattr(self, "scratch") else ("scratch.",)
        if dropped:
            kept = OrderedDict((k, v) for k, v in state_dict.items() if not k.startswith(dropped))
            kept._metadata = getattr(state_dict, "_metadata", None)  # type: ignore[attr-defined]
            state_dict = kept
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def on_train_start(self) -> None:
        super().on_train_start()
        if self.hparams.cache_teacher_logits and self._teachers and self._cache is None:
            self._cache = self._teacher_logits_for(self.trainer.train_dataloader.dataset)

    @torch.no_grad()
    def _teacher_logits_for(self, dataset) -> torch.Tensor:
        if len(dataset[0]) < 3:
            raise SettingError(
                "model.init_args.cache_teacher_logits needs the sample index in each training batch: set "
                "data.init_args.indexed: true"
            )
        # own generator: building an iterator must not draw from the global RNG (exact resume)
        loader = DataLoader(dataset, batch_size=512, shuffle=False, generator=torch.Generator())
        chunks = [torch.stack([t(b[0].to(self.device)) for t in self._teachers]) for b in loader]  # (T, b, K)
        rank_zero_info(f"cached the logits of {len(self._teachers)} teacher(s) for {len(dataset)} training samples")
        return torch.cat(chunks, dim=1)  # (T, N, K)

    def teacher_logits(self, x: torch.Tensor, index: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Each teacher's logits (B, K), from the cache when it holds them."""
        if self._cache is not None and index is not None:
            return list(self._cache[:, index.to(self._cache.device)])
        with torch.no_grad():
            return [t(x) for t in self._teachers]

    # ------------------------------------------------------------------ evaluation
    def _evaluate(self, batch, stage: str) -> None:
        x, y = batch[0], batch[1]
        logits = self(x)
        self.log_accuracy_and_loss(stage, logits, y)
        if self._teachers:
            teacher_probs = soft_targets(self.teacher_logits(x), 1.0)  # the ensemble's own prediction, T = 1
            t_acc, agree = (
                (self.val_teacher_acc, self.val_agreement)
                if stage == "val"
                else (self.test_teacher_acc, self.test_agreement)
            )
            t_acc.update(teacher_probs, y)
            agree.update((logits.argmax(-1) == teacher_probs.argmax(-1)).float().mean(), weight=len(y))
            self.log(f"{stage}/teacher_acc", t_acc, on_epoch=True)
            self.log(f"{stage}/agreement", agree, on_epoch=True)

    def validation_step(self, batch, batch_idx: int) -> None:
        if batch_idx == 0 and not self.trainer.sanity_checking:
            self._example = batch[0][:1].detach()
        self._evaluate(batch, "val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def predict_step(self, batch, batch_idx: int) -> torch.Tensor:
        return self(batch[0]).argmax(dim=-1)

    # ------------------------------------------------------------------ reporting
    def report_modules(self) -> dict[str, nn.Module]:
        """Networks whose size and latency ``callbacks.model_report.ModelReport`` reports."""
        out: dict[str, nn.Module] = {"student": self.student}
        for i, teacher in enumerate(self._teachers):
            out["teacher" if len(self._teachers) == 1 else f"teacher{i}"] = teacher
        return out

    def on_fit_start(self) -> None:
        rank_zero_info("\n".join(compression_lines(self.student)))

    def on_fit_end(self) -> None:
        metrics = {k: float(v) for k, v in self.trainer.callback_metrics.items()}
        if not self.trainer.is_global_zero or self._example is None or "val/acc" not in metrics or not self._teachers:
            return
        accuracies, params = self.figure_models(metrics)
        x = self._example.to(self.device)
        with torch.no_grad():
            was_training = self.student.training
            self.student.eval()
            student_probs = F.softmax(self.student(x).float() / self.hparams.temperature, -1)[0].cpu()
            self.student.train(was_training)
            teacher_probs = soft_targets(self.teacher_logits(x), self.hparams.temperature)[0].cpu()
        figure = distillation_figure(accuracies, params, teacher_probs, student_probs, self.hparams.temperature)
        self.log_figure("val/distillation", figure)

    def figure_models(self, metrics: Mapping[str, float]) -> tuple[dict[str, float | None], dict[str, int]]:
        """Validation accuracy and parameter count of each model in the end-of-fit figure, by name."""
        accuracies = {"teacher": metrics.get("val/teacher_acc"), "student, distilled": metrics.get("val/acc")}
        params = {
            "teacher": sum(p.numel() for p in self._teachers[0].parameters()),
            "student, distilled": self.student_params,
        }
        return accuracies, params
