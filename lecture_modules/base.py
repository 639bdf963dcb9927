"""The base class every lecture plugin derives from, plus the helpers all lectures share.

What lives here is what every lecture needs the same way:

* ``combine_losses``: sums named loss terms, logs each under ``stage/loss_<term>`` and stops training with a
  message naming the global step and the term as soon as one of them is not finite.
* Exact resume: the global RNG states (torch, CUDA, NumPy, Python) travel in the checkpoint as plain tensors and
  ints, so a checkpoint still loads with ``torch.load(weights_only=True)``.
* ``bad_setting`` / ``check_shapes``: a setting out of range as a :class:`~datamodules.errors.SettingError` naming its
  config key (``model.init_args.inner_lr``), the value and what is allowed.
* ``log_figure``: a matplotlib figure goes to W&B as an image when a ``WandbLogger`` is attached, and is always
  saved as a PNG in the run directory (never overwriting an existing file); ``log_html`` does the same for an HTML
  fragment (``wandb.Html``).
"""

from __future__ import annotations

import logging
import random
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_only

from datamodules.errors import SettingError, UserInputError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "GENERIC_NON_FINITE_HINT",
    "MODEL_ARGS",
    "LectureModule",
    "NonFiniteLossError",
    "bad_setting",
    "check_shapes",
    "figure_dir",
    "free_name",
    "log_figure",
    "log_html",
    "model_setting",
]

log = logging.getLogger(__name__)

# The end of every non-finite-loss hint: what helps whatever the lecture.
GENERIC_NON_FINITE_HINT = (
    "or clip gradients (trainer.gradient_clip_val), or train in full precision (trainer.precision: 32-true)"
)


# ------------------------------------------------------------------ settings, named as a config writes them
# A lecture's argument ``inner_lr`` is ``model.init_args.inner_lr`` in a config and on the command line, and a field of
# its network spec is ``model.init_args.net.dropout``: the name a user can search for and change, so the one every
# message uses (not ``MAML.inner_lr`` or ``inner_lr``). ``cli.main`` prints the SettingError in one line.
MODEL_ARGS = "model.init_args"
_SECTIONS = ("model.", "data.", "trainer.", "optimizer.", "lr_scheduler.")  # keys that already name their section


def model_setting(name: str) -> str:
    """The config key of the lecture argument ``name``: ``inner_lr`` -> ``model.init_args.inner_lr``,
    ``net.dropout`` -> ``model.init_args.net.dropout``; a key that names its section already is returned as is."""
    return name if name.startswith(_SECTIONS) else f"{MODEL_ARGS}.{name}"


def bad_setting(name: str, value: Any, allowed: str, *, hint: str | None = None) -> SettingError:
    """The error for a setting out of range: ``model.init_args.<name> must be <allowed>, got <value>``.

    Args:
        name: the lecture argument (``inner_lr``, ``net.dropout``) or a full config key (``data.init_args.ways``).
        value: the value given.
        allowed: what is allowed, phrased to follow "must be" (``> 0``, ``in [0, 1)``, ``'all' or 'head'``).
        hint: one line on what to try, when the allowed range alone does not say it.
    """
    return SettingError(f"{model_setting(name)} must be {allowed}, got {value!r}", hint=hint)


def check_shapes(num_classes: int, input_shape: tuple[int, ...], *, classes_from: str = "the data's classes") -> None:
    """Refuse ``num_classes < 2`` or an ``input_shape`` that is not (C, H, W).

    Both are linked from the DataModule by the CLI, so the message says where the value comes from: a wrong value
    there is usually the data's (a folder with one class), not a setting the user wrote.

    Args:
        num_classes: the lecture's ``num_classes``.
        input_shape: the lecture's ``input_shape``.
        classes_from: where the CLI takes ``num_classes`` from (meta-learning: ``data.init_args.ways``).
    """
    if num_classes < 2:
        raise bad_setting("num_classes", num_classes, f">= 2 (the CLI links it from {classes_from})")
    if len(input_shape) != 3:
        raise bad_setting("input_shape", input_shape, "(C, H, W) (the CLI links it from the data's image shape)")


class NonFiniteLossError(UserInputError, FloatingPointError):
    """Raised when a loss term becomes NaN or infinite; training stops at that step. Usually a setting's fault
    (a learning rate too high), so ``cli.main`` reports it in one line with a hint naming the settings to try: the
    lecture's :meth:`LectureModule.non_finite_hint`."""


class LectureModule(L.LightningModule):
    """Base class of every lecture. Subclasses set the docstring's first line: it is what the lecture list shows.

    Two rules let one lecture use another's checkpoint without importing it (through
    :func:`lecture_modules.checkpoints.load_lecture`): :meth:`upgrade_hparams` maps an older checkpoint's
    hyper-parameters to today's arguments, and :meth:`logits` is the call that gives a classifier's logits.
    """

    @classmethod
    def upgrade_hparams(cls, hparams: Mapping[str, Any]) -> dict[str, Any]:
        """A checkpoint's hyper-parameters in today's ``__init__`` arguments (a lecture whose arguments were renamed
        maps the old names here, so its older checkpoints keep loading)."""
        return dict(hparams)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Class scores (B, num_classes) for a batch of inputs ``x`` as this lecture's DataModule yields them.

        The one call a lecture that takes another lecture's checkpoint (a distillation teacher, a model to explain
        or attack) uses to get logits. Defaults to ``self(x)``; a lecture whose ``forward`` returns something else
        (features, several heads, a dict) overrides it. A lecture that is not a classifier raises here.
        """
        return self(x)

    # ------------------------------------------------------------------ losses
    lr_setting: str = "optimizer.init_args.lr"
    """The config key of the learning rate, named by the non-finite-loss hint. A lecture that builds its optimisers
    from a factory argument sets ``model.init_args.optimizer.init_args.lr``; one with its own argument names it."""

    def combine_losses(self, terms: Mapping[str, torch.Tensor], stage: str = "train") -> torch.Tensor:
        """Sum named loss terms, log them, and stop on the first non-finite one.

        Args:
            terms: loss name -> scalar tensor, already weighted. One term is logged as ``stage/loss``;
                several are logged as ``stage/loss_<name>`` plus their sum as ``stage/loss``.
            stage: metric prefix (``train``, ``val``, ``test``).

        Raises:
            NonFiniteLossError: naming the global step, the batch and the offending term.
        """
        if not terms:
            raise ValueError("combine_losses() needs at least one loss term")
        self.check_finite(terms, stage)
        total = torch.stack([v for v in terms.values()]).sum()
        on_step = stage == "train"
        if len(terms) > 1:
            for name, value in terms.items():
                self.log(f"{stage}/loss_{name}", value.detach(), on_step=on_step, on_epoch=not on_step)
        self.log(f"{stage}/loss", total.detach(), on_step=on_step, on_epoch=not on_step, prog_bar=True)
        return total

    def check_finite(self, terms: Mapping[str, torch.Tensor], stage: str = "train") -> None:
        """Stop training on the first loss term that is NaN or infinite.

        Raises:
            NonFiniteLossError: naming the term, its value, the global step and epoch; its hint
                (:meth:`non_finite_hint`) names the settings to change.
        """
        for name, value in terms.items():
            if not torch.isfinite(value.detach()).all():
                raise NonFiniteLossError(
                    f"{type(self).__name__}: loss term '{name}' is {value.detach().float().mean().item()} at "
                    f"global step {self.global_step} (epoch {self.current_epoch}, stage '{stage}'). Training stopped.",
                    hint=self.non_finite_hint(name),
                )

    def non_finite_hint(self, term: str) -> str:
        """What to change when loss term ``term`` is not finite, naming the settings by config key with their values.

        The default names the learning rate (:attr:`lr_setting`). A lecture whose own settings can make a term blow
        up overrides this (MAML: its inner-loop step ``model.init_args.inner_lr``; distillation: the temperature).
        """
        return f"lower the learning rate {self.describe_setting(self.lr_setting)}; {GENERIC_NON_FINITE_HINT}"

    def describe_setting(self, key: str) -> str:
        """``key`` with its current value when this lecture knows it: ``model.init_args.inner_lr (now 0.4)``.

        ``model.init_args.*`` keys are read from the hyper-parameters (nested keys through plain dicts); a learning
        rate not stored there (a top-level ``optimizer:`` section) is read from the first optimiser (its initial lr).
        """
        value: Any = None
        if key.startswith("model.init_args."):
            value = self.hparams
            for part in key.split(".")[2:]:
                value = value.get(part) if isinstance(value, Mapping) else None
        if value is None and key.endswith(".lr") and self._trainer is not None and self.trainer.optimizers:
            group = self.trainer.optimizers[0].param_groups[0]
            value = group.get("initial_lr", group["lr"])  # the configured lr, before a schedule scaled it
        if value is None:
            return key
        return f"{key} (now {value:g})" if isinstance(value, float) else f"{key} (now {value})"

    # ------------------------------------------------------------------ metrics
    def log_accuracy_and_loss(self, stage: str, logits: torch.Tensor, labels: torch.Tensor) -> None:
        """Update and log ``stage/loss`` (sample-weighted cross-entropy, exact across ranks) and ``stage/acc`` from
        the metric attributes ``<stage>_loss`` (a ``MeanMetric``) and ``<stage>_acc`` the lecture defines."""
        acc, mean_loss = getattr(self, f"{stage}_acc"), getattr(self, f"{stage}_loss")
        mean_loss.update(F.cross_entropy(logits, labels), weight=len(labels))
        acc.update(logits, labels)
        self.log(f"{stage}/loss", mean_loss, on_epoch=True, prog_bar=stage == "val")
        self.log(f"{stage}/acc", acc, on_epoch=True, prog_bar=stage == "val")

    # ------------------------------------------------------------- schedules
    def on_train_start(self) -> None:
        """Fix the length of schedules left open (``total_steps: null``) once the train loader exists."""
        for config in self.trainer.lr_scheduler_configs:
            scheduler = config.scheduler
            if getattr(scheduler, "total_steps", 0) is None and hasattr(scheduler, "set_total_steps"):
                scheduler.set_total_steps(self.trainer.estimated_stepping_batches)

    # ------------------------------------------------------------- exact resume
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["rng_states"] = _capture_rng_states()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        states = checkpoint.get("rng_states")
        if states is not None:
            _restore_rng_states(states)

    # ------------------------------------------------------------------ figures
    def log_figure(self, key: str, figure: Figure) -> Path | None:
        """Log a matplotlib figure; see :func:`log_figure`."""
        return log_figure(self.trainer, key, figure)


def _capture_rng_states() -> dict[str, Any]:
    """RNG states as tensors and ints only, so the checkpoint stays loadable with ``weights_only=True``."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    states: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
            "kind": str(kind),
        },
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def _restore_rng_states(states: Mapping[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    np_state = states["numpy"]
    np.random.set_state(
        (
            np_state["kind"],
            np_state["keys"].numpy().astype(np.uint32),
            np_state["pos"],
            np_state["has_gauss"],
            np_state["cached_gaussian"],
        )
    )
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def free_name(folder: str | Path, stem: str, suffixes: tuple[str, ...] = ("",)) -> str:
    """``stem``, or ``stem-1``, ``stem-2``, ...: the first name for which no ``folder/<name><suffix>`` exists, for
    every suffix given. Every writer that must never overwrite an earlier file (figures, predictions, config copies,
    run folders, hand-in archives) picks its name here."""
    folder, name, n = Path(folder), stem, 0
    while any((folder / f"{name}{suffix}").exists() for suffix in suffixes):
        n += 1
        name = f"{stem}-{n}"
    return name


def figure_dir(trainer: L.Trainer) -> Path:
    """The run's own directory for figures: the W&B run's files folder, else the logger's versioned log dir."""
    from lightning.pytorch.loggers import WandbLogger

    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            return Path(logger.experiment.dir) / "figures"
    # Not trainer.log_dir: it broadcasts from rank zero, and this runs on rank zero only (a DDP deadlock).
    for logger in trainer.loggers:
        if getattr(logger, "log_dir", None):
            return Path(logger.log_dir) / "figures"
    return Path(trainer.default_root_dir) / "figures"


@rank_zero_only
def log_html(trainer: L.Trainer, key: str, html: str) -> Path | None:
    """Save an HTML fragment in the run's figure folder and, with a ``WandbLogger``, log it as ``wandb.Html``
    (for what reads better as text than as a picture: token attributions). Never overwrites; rank zero only.

    Returns:
        The ``.html`` path (rank zero only; other ranks return None).
    """
    from lightning.pytorch.loggers import WandbLogger

    out_dir = figure_dir(trainer)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", key) + f"-step{trainer.global_step}"
    path = out_dir / f"{free_name(out_dir, stem, ('.html',))}.html"
    path.write_text(html, encoding="utf-8")
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            import wandb

            logger.log_metrics({key: wandb.Html(html)}, step=trainer.global_step)
    log.info("HTML %s saved to %s", key, path)
    return path


@rank_zero_only
def log_figure(trainer: L.Trainer, key: str, figure: Figure) -> Path | None:
    """Save ``figure`` as a PNG in the run directory and, with a ``WandbLogger``, log it as a W&B image.

    Args:
        trainer: the running trainer (its loggers decide where the figure goes).
        key: metric-style name such as ``val/confusion_matrix``.
        figure: a matplotlib figure; it is closed afterwards.

    Returns:
        The PNG path (rank zero only; other ranks return None).
    """
    import matplotlib.pyplot as plt
    from lightning.pytorch.loggers import WandbLogger

    out_dir = figure_dir(trainer)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", key) + f"-step{trainer.global_step}"
    path = out_dir / f"{free_name(out_dir, stem, ('.png',))}.png"  # never overwrite an earlier figure
    figure.savefig(path, dpi=100, bbox_inches="tight")
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            logger.log_image(key=key, images=[str(path)], step=trainer.global_step)
    plt.close(figure)
    log.info("figure %s saved to %s", key, path)
    return path
