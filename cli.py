"""ml-lectures command line: ``python cli.py {fit,validate,test,predict,lectures} ...``.

Every installed lecture plugin (entry-point group ``ml_lectures.lectures``) is loaded before parsing, so
``--model Classification`` (class name), ``--model classification`` (entry-point name) and full class paths all
resolve, for built-in and third-party lectures alike. ``python cli.py lectures`` lists them.
"""

from __future__ import annotations

import sys
import traceback
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.utilities import rank_zero_info
from torch.optim.lr_scheduler import CyclicLR, OneCycleLR

from callbacks.save_config import LectureSaveConfig
from lecture_modules.base import LectureModule
from lecture_modules.registry import (
    LectureEntry,
    LectureNotFoundError,
    PluginConflictError,
    PluginLoadError,
    discover,
    load_all,
    resolve,
)
from lecture_modules.tracking import WANDB_LOGGER_PATHS, configure_wandb_init_args, wandb_offline_reason

__all__ = ["LectureCLI", "list_lectures", "main", "run"]

STEP_SCHEDULERS = (OneCycleLR, CyclicLR)
BASE_CONFIG = Path(__file__).resolve().parent / "configs" / "base.yaml"
SUBCOMMANDS = ("fit", "validate", "test", "predict")


class LectureCLI(LightningCLI):
    """LightningCLI with lecture plugins, data-to-model links, per-step schedules and W&B defaults.

    ``configs/base.yaml`` (what every lecture shares: seed, W&B logger, logging cadence) is read before any
    ``--config``, so lecture configs hold only their deltas.
    """

    def __init__(self, *args: Any, entries: dict[str, LectureEntry] | None = None, **kwargs: Any) -> None:
        self.entries = entries or {}
        if BASE_CONFIG.is_file():
            base = {"default_config_files": [str(BASE_CONFIG)]}
            parser_kwargs = dict(kwargs.get("parser_kwargs") or {})
            if kwargs.get("run", True):
                for sub in SUBCOMMANDS:
                    parser_kwargs[sub] = {**base, **parser_kwargs.get(sub, {})}
            else:
                parser_kwargs = {**base, **parser_kwargs}
            kwargs["parser_kwargs"] = parser_kwargs
        kwargs.setdefault("model_class", LectureModule)
        kwargs.setdefault("datamodule_class", L.LightningDataModule)
        kwargs.setdefault("subclass_mode_model", True)
        kwargs.setdefault("subclass_mode_data", True)
        kwargs.setdefault("save_config_callback", LectureSaveConfig)
        kwargs.setdefault("auto_configure_optimizers", True)
        super().__init__(*args, **kwargs)

    def add_arguments_to_parser(self, parser) -> None:
        # Shapes are read from the instantiated DataModule, so a config never writes them twice.
        parser.link_arguments("data.num_classes", "model.init_args.num_classes", apply_on="instantiate")
        parser.link_arguments("data.input_shape", "model.init_args.input_shape", apply_on="instantiate")
        # The data is tokenised with the model's own tokenizer (Hugging Face's run_qa.py hands it over the same
        # way). Applied on parse: ignored for a model without model_name_or_path or a DataModule without
        # tokenizer_name_or_path; it cannot be an instantiation link (the DataModule is built before the model).
        parser.link_arguments(
            "model.init_args.model_name_or_path", "data.init_args.tokenizer_name_or_path", apply_on="parse"
        )

    @staticmethod
    def configure_optimizers(lightning_module: L.LightningModule, optimizer, lr_scheduler=None) -> Any:
        """Step-based schedules (``interval = "step"``, OneCycleLR, CyclicLR) are stepped every optimiser step.

        The length of a schedule left open (``total_steps: null``) is fixed in ``LectureModule.on_train_start``,
        after a checkpoint's loop state is restored: asking for ``estimated_stepping_batches`` here would build
        the train loader too early for an exact mid-epoch resume.
        """
        if lr_scheduler is not None and (
            getattr(lr_scheduler, "interval", "epoch") == "step" or isinstance(lr_scheduler, STEP_SCHEDULERS)
        ):
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": lr_scheduler, "interval": "step"}}
        return LightningCLI.configure_optimizers(lightning_module, optimizer, lr_scheduler)

    # ------------------------------------------------------------------ W&B defaults
    def _lecture_name(self, config) -> str:
        class_path = str(config.get("model", {}).get("class_path", "")) if hasattr(config, "get") else ""
        for entry in self.entries.values():
            if class_path in (entry.class_path, entry.class_name):
                return entry.name
        return class_path.rsplit(".", 1)[-1].lower() or "lecture"

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        loggers = config.trainer.logger
        items = loggers if isinstance(loggers, list) else [loggers]
        wandb_items = [lg for lg in items if getattr(lg, "class_path", None) in WANDB_LOGGER_PATHS]
        if not wandb_items:
            return
        reason = wandb_offline_reason()
        if reason is not None:
            rank_zero_info(f"W&B runs offline: {reason}.")
        lecture = self._lecture_name(config)
        for item in wandb_items:
            init_args = dict(vars(item.init_args)) if item.init_args is not None else {}
            for key, value in configure_wandb_init_args(init_args, lecture, self.subcommand or "run", reason).items():
                setattr(item.init_args, key, value)

    def _after(self) -> None:
        from lightning.pytorch.loggers import WandbLogger

        for logger in self.trainer.loggers:
            if isinstance(logger, WandbLogger) and self.trainer.is_global_zero and logger._experiment is not None:
                run = logger.experiment
                offline = run.settings.mode in ("offline", "dryrun")
                run_dir = run.settings.sync_dir
                run.finish()
                if offline:
                    rank_zero_info(f"W&B run saved offline in {run_dir}\n  upload it with: wandb sync {run_dir}")

    after_fit = after_validate = after_test = after_predict = _after


def _rewrite_model_arg(argv: list[str], entries: dict[str, LectureEntry]) -> list[str]:
    """Turn ``--model <entry name | class name>`` into the full class path; unknown names are an error."""
    out = list(argv)
    for i, arg in enumerate(out):
        if arg == "--model" and i + 1 < len(out):
            idx, value = i + 1, out[i + 1]
        elif arg.startswith("--model="):
            idx, value = i, arg.split("=", 1)[1]
        else:
            continue
        if value.startswith(("{", "[")) or value.endswith((".yaml", ".yml", ".json")) or "." in value:
            continue  # an inline config, a config file or a full class path: jsonargparse checks those
        if value in ("-h", "--help") or value.endswith(".help"):
            continue
        class_path = resolve(value, entries).class_path
        out[idx] = class_path if idx == i + 1 else f"--model={class_path}"
    return out


def run(args: list[str] | None = None, **cli_kwargs: Any) -> LectureCLI:
    """Run the command line ``python cli.py ARGS`` in this process and return its :class:`LectureCLI`.

    ``--model`` may name a lecture by entry-point name or class name. Keyword arguments go to ``LectureCLI``
    (``run=False`` only parses and instantiates; ``trainer_defaults=...``). Tests and benchmarks call this; ``main``
    is this plus one-line error reporting.

    Raises:
        LectureNotFoundError, PluginLoadError, PluginConflictError: the lecture named by ``--model`` is not usable.
    """
    entries = load_all(discover())
    argv = _rewrite_model_arg(list(sys.argv[1:] if args is None else args), entries)
    if args is None:  # keep sys.argv as run: DDP re-launches this script with it
        sys.argv[1:] = argv
    return LectureCLI(args=None if args is None else argv, entries=entries, **cli_kwargs)


def list_lectures(entries: dict[str, LectureEntry]) -> str:
    """The lecture table printed by ``python cli.py lectures``."""
    rows = [("NAME", "CLASS PATH", "DISTRIBUTION", "STATUS", "DESCRIPTION")]
    for entry in entries.values():
        rows.append((entry.name, entry.class_path, entry.distribution, entry.status, entry.description))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r[:4], widths, strict=True)) + "  " + r[4] for r in rows)


def main(args: list[str] | None = None) -> int:
    """Entry point of ``python cli.py`` and the ``ml-lectures`` script. Returns the exit code."""
    argv = sys.argv[1:] if args is None else list(args)
    try:
        if argv[:1] == ["lectures"]:
            sys.stdout.write(list_lectures(load_all(discover())) + "\n")
            return 0
        run(args)
    except (LectureNotFoundError, PluginLoadError, PluginConflictError) as exc:
        if exc.__cause__ is not None:  # show where the plugin broke, then the actionable summary
            sys.stderr.write("".join(traceback.format_exception(exc.__cause__)))
        sys.stderr.write(f"error: {exc}\n")
        return 2
    except (ValueError, TypeError) as exc:
        cause = _setting_error(exc)
        if cause is None:
            raise
        sys.stderr.write("".join(traceback.format_exception(cause)))
        sys.stderr.write(f"error: {type(cause).__name__}: {cause}\n")
        return 2
    return 0


def _raised_in_jsonargparse(exc: BaseException) -> bool:
    frames = traceback.extract_tb(exc.__traceback__)
    return bool(frames) and "jsonargparse" in frames[-1].filename


def _setting_error(exc: BaseException) -> BaseException | None:
    """The error a lecture, DataModule or callback ``__init__`` raised for a bad setting, when jsonargparse wrapped
    it in its own "does not validate" message while instantiating; None for any other error."""
    if not _raised_in_jsonargparse(exc):
        return None
    inner = exc
    while inner.__cause__ is not None:
        inner = inner.__cause__
    return inner if inner is not exc and not _raised_in_jsonargparse(inner) else None


if __name__ == "__main__":
    sys.exit(main())
