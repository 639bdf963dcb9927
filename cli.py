"""ml-lectures command line: ``python cli.py {fit,validate,test,predict,lectures} ...``.

Every installed lecture plugin (entry-point group ``ml_lectures.lectures``) is loaded before parsing, so
``--model Classification`` (class name), ``--model classification`` (entry-point name) and full class paths all
resolve, for built-in and third-party lectures alike. A broken plugin is reported in one warning line and the
other lectures run; selecting it is the error.

``python cli.py lectures [--markdown | --check]`` lists them from package metadata and source files alone: it
imports neither Lightning nor any plugin, so it answers at once. That is why Lightning is imported only when
:class:`LectureCLI` is first used (``cli.LectureCLI`` is built on first access, PEP 562).

Errors a user can act on end in one line and exit code 2; ``--debug`` (or ``ML_LECTURES_DEBUG=1``) adds the
traceback of their cause.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import os
import sys
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lecture_modules.registry import (
    LectureEntry,
    LectureNotFoundError,
    PluginConflictError,
    PluginLoadError,
    debug_requested,
    discover,
    lectures_command,
    load_all,
    resolve,
    warn_unusable,
)

if TYPE_CHECKING:
    from lightning.pytorch.cli import LightningCLI as LectureCLI  # the class lecture_cli_class() builds

__all__ = ["LectureCLI", "OptimizerSectionError", "factory_arguments", "lecture_cli_class", "main", "run"]

BASE_CONFIG = Path(__file__).resolve().parent / "configs" / "base.yaml"
SUBCOMMANDS = ("fit", "validate", "test", "predict")


class OptimizerSectionError(ValueError):
    """A top-level ``optimizer:`` / ``lr_scheduler:`` section given to a lecture that takes its optimiser factories as
    ``__init__`` arguments (several optimisers, or optimisers rebuilt during training: MCD, pruning, ...)."""


def __getattr__(name: str) -> Any:
    """``cli.LectureCLI`` (and ``from cli import LectureCLI``) imports Lightning here, on first use only."""
    if name == "LectureCLI":
        return lecture_cli_class()
    raise AttributeError(f"module 'cli' has no attribute '{name}'")


@functools.cache
def lecture_cli_class() -> type:
    """Import Lightning and define :class:`LectureCLI` (once). Its helpers below are plain functions."""
    import lightning as L
    from lightning.pytorch.cli import LightningCLI

    from callbacks.save_config import LectureSaveConfig
    from lecture_modules.base import LectureModule
    from lecture_modules.schedules import steps_every_optimizer_step

    class LectureCLI(LightningCLI):
        """LightningCLI with lecture plugins, data-to-model links, per-step schedules and W&B defaults.

        ``configs/base.yaml`` (what every lecture shares: seed, W&B logger, logging cadence) is read before any
        ``--config``, so lecture configs hold only their deltas.
        """

        def __init__(self, *args: Any, entries: dict[str, LectureEntry] | None = None, **kwargs: Any) -> None:
            self.entries = entries or {}
            kwargs = _with_base_config(kwargs)
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
            _add_checkpoint_arguments(parser)

        def _parse_ckpt_path(self) -> None:
            """LightningCLI replaces the config's model with the one a ``--ckpt_path`` checkpoint records; here the
            checkpoint is read and compared with the config first, and replaces it only when asked to."""
            self.config, self.ckpt_hparams = _check_ckpt_path(self.config, self.parser)

        @staticmethod
        def configure_optimizers(lightning_module: L.LightningModule, optimizer, lr_scheduler=None) -> Any:
            """Step-based schedules (``interval = "step"``, OneCycleLR, CyclicLR) are stepped every optimiser step.

            The length of a schedule left open (``total_steps: null``) is fixed in ``LectureModule.on_train_start``,
            after a checkpoint's loop state is restored: asking for ``estimated_stepping_batches`` here would build
            the train loader too early for an exact mid-epoch resume.
            """
            if lr_scheduler is not None and steps_every_optimizer_step(lr_scheduler):
                return {"optimizer": optimizer, "lr_scheduler": {"scheduler": lr_scheduler, "interval": "step"}}
            return LightningCLI.configure_optimizers(lightning_module, optimizer, lr_scheduler)

        def before_instantiate_classes(self) -> None:
            config = self.config[self.subcommand] if self.subcommand else self.config
            _refuse_optimizer_sections(config)
            _drop_lr_monitor_without_logger(config)
            _default_run_folder(config, _lecture_name(config, self.entries))
            _apply_wandb_defaults(config, self.subcommand or "run", self.entries)

        def instantiate_classes(self) -> None:
            super().instantiate_classes()
            _refuse_overridden_links(self.config[self.subcommand] if self.subcommand else self.config, self.datamodule)

        def _before(self) -> None:
            _check_output_folders(self.trainer, fitting=self.subcommand == "fit")
            if self.ckpt_hparams is not None:
                _check_linked_hparams(self.model, self.config[self.subcommand].ckpt_path, self.ckpt_hparams)
            _no_checkpoints_in_fast_dev_run(self.trainer)

        before_fit = before_validate = before_test = before_predict = _before

        def _after(self) -> None:
            _finish_wandb_runs(self.trainer)

        after_fit = after_validate = after_test = after_predict = _after

    LectureCLI.__module__, LectureCLI.__qualname__ = __name__, "LectureCLI"
    return LectureCLI


# ---------------------------------------------------------------------------------- LectureCLI's helpers
def _with_base_config(kwargs: dict[str, Any]) -> dict[str, Any]:
    """LectureCLI's keyword arguments with ``configs/base.yaml`` as the default config of every (sub)parser."""
    kwargs = dict(kwargs)
    if not BASE_CONFIG.is_file():
        return kwargs
    base = {"default_config_files": [str(BASE_CONFIG)]}
    parser_kwargs = dict(kwargs.get("parser_kwargs") or {})
    if kwargs.get("run", True):
        for sub in SUBCOMMANDS:
            parser_kwargs[sub] = {**base, **parser_kwargs.get(sub, {})}
    else:
        parser_kwargs = {**base, **parser_kwargs}
    kwargs["parser_kwargs"] = parser_kwargs
    return kwargs


def factory_arguments(model_class: type) -> list[str]:
    """The ``__init__`` arguments, along the class hierarchy, typed ``OptimizerCallable`` or ``LRSchedulerCallable``
    (optionally ``| None``): a lecture with such an argument builds its own optimisers from it."""
    import typing

    from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable

    names: list[str] = []
    for klass in model_class.__mro__:
        init = vars(klass).get("__init__")
        try:
            hints = typing.get_type_hints(init) if init is not None else {}
        except Exception:  # an annotation this module cannot resolve is not a factory argument
            continue
        for name, hint in hints.items():
            factory = any(h in (OptimizerCallable, LRSchedulerCallable) for h in (hint, *typing.get_args(hint)))
            if factory and name not in names:
                names.append(name)
    return names


def _refuse_optimizer_sections(config: Any) -> None:
    """A lecture that takes optimiser factories as ``__init__`` arguments gets them there, never from the top-level
    sections (LightningCLI would replace its ``configure_optimizers`` with one optimiser over every parameter, or
    silently drop a lone ``lr_scheduler:``)."""
    import importlib

    given = [key for key in ("optimizer", "lr_scheduler") if config.get(key) is not None]
    class_path = str(config.get("model", {}).get("class_path", "")) if given else ""
    if not class_path:
        return
    module, _, name = class_path.rpartition(".")
    own = factory_arguments(getattr(importlib.import_module(module), name))
    if own:
        raise OptimizerSectionError(
            f"{name} takes its optimisers as {', '.join(f'model.init_args.{n}' for n in own)}; remove the top-level "
            f"{' and '.join(f'`{k}:`' for k in given)} section(s) and set model.init_args.{own[0]} instead, e.g. "
            "{class_path: torch.optim.Adam, init_args: {lr: 2.0e-4}}"
        )


def _drop_lr_monitor_without_logger(config: Any) -> None:
    """``--trainer.logger false`` turns logging off: a ``LearningRateMonitor`` from the config has nothing to log to
    (Lightning would stop at the start of training), so it is dropped with one line."""
    from lightning.pytorch.utilities import rank_zero_info

    trainer = config.get("trainer") or {}
    callbacks = trainer.get("callbacks") or []
    if trainer.get("logger") not in (False, None) or not isinstance(callbacks, list):
        return
    monitors = [c for c in callbacks if str(getattr(c, "class_path", "")).endswith(".LearningRateMonitor")]
    if monitors:
        trainer["callbacks"] = [c for c in callbacks if c not in monitors]
        rank_zero_info("LearningRateMonitor left out: trainer.logger is false, so there is nothing to log to.")


# ------------------------------------------------------------------------------ checkpoints and run folders
RUN_FOLDER = "runs"  # where run folders go when trainer.default_root_dir is unset: as W&B's save_dir (git-ignored)
RUN_FOLDER_ENV = "ML_LECTURES_RUN_FOLDER"  # rank 0's run folder, inherited by the DDP processes it launches
LIGHTNING_CKPT_NAMES = ("best", "last", "hpc")  # --ckpt_path values Lightning resolves itself


def _add_checkpoint_arguments(parser: Any) -> None:
    """``--model_from_ckpt``: the explicit way to take a ``--ckpt_path`` checkpoint's lecture and settings."""
    parser.add_argument(
        "--model_from_ckpt",
        type=bool,
        default=False,
        help="Build the model from the --ckpt_path checkpoint (its lecture and hyper-parameters) instead of the "
        "config's model section. Without it, a checkpoint of another lecture or saved with other settings stops "
        "the run.",
    )


def _check_ckpt_path(config: Any, parser: Any) -> tuple[Any, dict[str, Any] | None]:
    """Read the ``--ckpt_path`` checkpoint (``weights_only``) before anything is built or written, and compare its
    lecture and hyper-parameters with the config's model.

    Returns:
        The config, whose model section is the checkpoint's (its registered lecture, older argument names upgraded)
        only with ``--model_from_ckpt true``; and the checkpoint's hyper-parameters, to compare the linked ones
        (``num_classes``, ``input_shape``: set from the data) once the model is built (None: nothing to compare).

    Raises:
        CheckpointError: the file is missing or refused, or of another lecture or other settings than the config's
            (and ``--model_from_ckpt`` is not given).
    """
    from lecture_modules.checkpoints import checkpoint_model_config, read_checkpoint, require_config_lecture

    subcommand = config.get("subcommand")
    ckpt_path = config[subcommand].get("ckpt_path") if subcommand else None
    if not ckpt_path or _resolved_by_lightning(str(ckpt_path)):
        return config, None
    ckpt = read_checkpoint(ckpt_path)
    if config[subcommand].get("model_from_ckpt"):
        model = checkpoint_model_config(ckpt, source=str(ckpt_path))
        return parser.parse_object({subcommand: {"model": model}}, config), None
    model = _dumped(parser, config)[subcommand].get("model") or {}
    if not model.get("class_path"):
        return config, None
    require_config_lecture(
        ckpt,
        source=str(ckpt_path),
        class_path=model["class_path"],
        init_args=model.get("init_args") or {},
        upgrade=getattr(_import_class(model["class_path"]), "upgrade_hparams", None),
    )
    return config, dict(ckpt.get("hyper_parameters") or {})


def _check_linked_hparams(model: Any, ckpt_path: str, ckpt_hparams: dict[str, Any]) -> None:
    """The settings linked from the data (``num_classes``, ``input_shape``) must be the checkpoint's too: otherwise
    Lightning stops on a size mismatch of some layer's weights, naming neither the file nor the setting."""
    from lecture_modules.checkpoints import INTERNAL_HPARAMS, require_config_lecture

    built = {key: value for key, value in model.hparams.items() if key not in INTERNAL_HPARAMS}
    require_config_lecture(
        {"hyper_parameters": ckpt_hparams},
        source=str(ckpt_path),
        class_path=f"{type(model).__module__}.{type(model).__qualname__}",
        init_args=built,
        upgrade=getattr(model, "upgrade_hparams", None),
        given_by="the data gives",
        hint="use the data the checkpoint was trained on (or data of the same classes and input shape)",
    )


def _dumped(parser: Any, config: Any) -> dict[str, Any]:
    """``config`` as LightningCLI saves it (and a checkpoint's hyper-parameters hold it): plain YAML values, None
    kept, linked arguments left out."""
    import yaml
    from jsonargparse import __version__ as jsonargparse_version

    new = tuple(int(part) for part in jsonargparse_version.split(".")[:2]) >= (4, 49)
    keep_none = "skip_unset" if new else "skip_none"  # renamed in jsonargparse 4.49
    return yaml.safe_load(parser.dump(config, format="yaml", **{keep_none: False}))


def _import_class(class_path: str) -> type:
    import importlib

    module, _, name = class_path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def _resolved_by_lightning(ckpt_path: str) -> bool:
    """``best``, ``last``, ``hpc``, ``registry[:...]`` and remote URLs: Lightning finds and reads those itself."""
    return ckpt_path in LIGHTNING_CKPT_NAMES or ckpt_path.startswith("registry") or "://" in ckpt_path


def _default_run_folder(config: Any, lecture: str) -> None:
    """``trainer.default_root_dir`` left unset is a folder of this run's own, ``runs/<lecture>-<date>-<time>``, not
    the working directory: without a logger (or under ``fast_dev_run``) the config copy, checkpoints, figures and
    predictions go there, so two runs never share files."""
    trainer = config.get("trainer")
    if trainer is not None and trainer.get("default_root_dir") is None:
        trainer["default_root_dir"] = _new_run_folder(lecture)


def _new_run_folder(lecture: str) -> str:
    """A fresh ``runs/<lecture>-<date>-<time>[-n]``. Under DDP the other ranks take rank 0's: Lightning's launcher
    starts them with rank 0's environment, where the name is left in ``ML_LECTURES_RUN_FOLDER``."""
    inherited = os.environ.get(RUN_FOLDER_ENV)
    if inherited and _process_rank() > 0:
        return inherited
    from lecture_modules.base import free_name

    folder = f"{RUN_FOLDER}/{free_name(RUN_FOLDER, f'{lecture}-{datetime.datetime.now():%Y%m%d-%H%M%S}')}"
    os.environ[RUN_FOLDER_ENV] = folder
    return folder


def _no_checkpoints_in_fast_dev_run(trainer: Any) -> None:
    """``fast_dev_run`` saves no checkpoint (Lightning's rule), but a ``ModelCheckpoint(save_last=True)`` still
    writes ``last.ckpt`` when training ends: switched off here, so a smoke run leaves no checkpoint behind."""
    if trainer.fast_dev_run:
        for callback in trainer.checkpoint_callbacks:
            callback.save_last = False


def _check_output_folders(trainer: Any, *, fitting: bool) -> None:
    """Every folder the run will write must be writable (or creatable), checked before training starts rather
    than at the first checkpoint, an epoch later. Nothing is created here.

    Raises:
        OutputFolderError: naming the folder and the setting that chose it.
    """
    from lightning.pytorch.loggers.logger import DummyLogger

    loggers = [lg for lg in trainer.loggers if not isinstance(lg, DummyLogger)]
    folders = [(lg.save_dir, "trainer.logger.init_args.save_dir") for lg in loggers if lg.save_dir]
    if not loggers:
        folders.append((trainer.default_root_dir, "trainer.default_root_dir"))
    if fitting:
        folders += [
            (cb.dirpath, f"dirpath of {type(cb).__name__} in trainer.callbacks")
            for cb in trainer.checkpoint_callbacks
            if cb.dirpath
        ]
    for folder, setting in folders:
        _require_writable(str(folder), setting)


def _require_writable(folder: str, setting: str) -> None:
    """``folder``, or the nearest folder above it that exists, must be a writable folder."""
    from datamodules.errors import OutputFolderError

    if "://" in folder:
        return  # remote storage: its client reports its own errors
    path = Path(folder).expanduser().absolute()
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir():
        problem = f"{existing} is not a folder"
    elif not os.access(existing, os.W_OK | os.X_OK):
        problem = f"{existing} is not writable"
    else:
        return
    raise OutputFolderError(
        f"output folder {folder} ({setting}) cannot be written: {problem}",
        hint=f"set {setting} to a folder you can write to",
    )


def _refuse_overridden_links(config: Any, datamodule: Any) -> None:
    """A shape the CLI links from the data (``num_classes``, ``input_shape``; see ``add_arguments_to_parser``) that
    the user also gave the lecture, with another value: the data's value is the one the lecture was built with (the
    data is authoritative), so stop and name both rather than drop the user's value silently.

    The config keeps what the user wrote (or the class default when nothing was written), while the link fills the
    lecture's argument from the instantiated DataModule. A value equal to the class default counts as not given.
    """
    import inspect

    from datamodules.errors import SettingError
    from lecture_modules.parse_errors import init_parameters

    model = config.get("model") if hasattr(config, "get") else None
    init_args, class_path = getattr(model, "init_args", None), str(getattr(model, "class_path", ""))
    if init_args is None or "." not in class_path or datamodule is None:
        return
    params = init_parameters(_import_class(class_path))

    def plain(value: Any) -> Any:
        return list(value) if isinstance(value, list | tuple) else value  # YAML lists vs tuples

    def default(key: str) -> Any:  # the first __init__ along the class hierarchy that names ``key``
        return params[key].default if key in params else inspect.Parameter.empty

    for key in ("num_classes", "input_shape"):
        given, data_value = init_args.get(key), getattr(datamodule, key, None)
        if given is None or data_value is None or plain(given) == plain(default(key)):
            continue
        if plain(given) != plain(data_value):
            raise SettingError(
                f"model.init_args.{key} is {plain(given)} but the data gives {plain(data_value)} (data.{key}, "
                f"linked into the lecture by the CLI: the data's value is the one used); remove model.init_args.{key} "
                "from the config and command line, or change the data"
            )


def _lecture_name(config: Any, entries: dict[str, LectureEntry]) -> str:
    class_path = str(config.get("model", {}).get("class_path", "")) if hasattr(config, "get") else ""
    for entry in entries.values():
        if class_path in (entry.class_path, entry.class_name):
            return entry.name
    return class_path.rsplit(".", 1)[-1].lower() or "lecture"


def _apply_wandb_defaults(config: Any, subcommand: str, entries: dict[str, LectureEntry]) -> None:
    """Offline when W&B is not logged in or its server does not answer within seconds (said once), runs named and
    grouped by lecture.

    Raises:
        UserInputError: the W&B server refused the API key (``lecture_modules.tracking`` says why this is an error).
    """
    from lecture_modules.tracking import (
        WANDB_LOGGER_PATHS,
        configure_wandb_init_args,
        report_offline,
        wandb_offline_reason,
    )

    loggers = config.trainer.logger
    items = loggers if isinstance(loggers, list) else [loggers]
    wandb_items = [lg for lg in items if getattr(lg, "class_path", None) in WANDB_LOGGER_PATHS]
    if not wandb_items:
        return
    user_offline = all(item.init_args is not None and getattr(item.init_args, "offline", False) for item in wandb_items)
    reason = None if user_offline else wandb_offline_reason()  # offline by the config: no probe, no key check
    if reason is not None:
        report_offline(reason)
    lecture = _lecture_name(config, entries)
    for item in wandb_items:
        init_args = dict(vars(item.init_args)) if item.init_args is not None else {}
        for key, value in configure_wandb_init_args(init_args, lecture, subcommand, reason).items():
            setattr(item.init_args, key, value)


def _finish_wandb_runs(trainer: Any) -> None:
    """Close the W&B runs this process opened; an offline run says how to upload it."""
    from lightning.pytorch.loggers import WandbLogger
    from lightning.pytorch.utilities import rank_zero_info

    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger) and trainer.is_global_zero and logger._experiment is not None:
            run = logger.experiment
            offline = run.settings.mode in ("offline", "dryrun")
            run_dir = run.settings.sync_dir
            run.finish()
            if offline:
                rank_zero_info(f"W&B run saved offline in {run_dir}\n  upload it with: wandb sync {run_dir}")


# ------------------------------------------------------------------------------------- selecting a lecture
def _model_arg(argv: list[str]) -> list[tuple[int, str]]:
    """(index, value) of each ``--model VALUE`` / ``--model=VALUE`` in ``argv``."""
    found = []
    for i, arg in enumerate(argv):
        if arg == "--model" and i + 1 < len(argv):
            found.append((i + 1, argv[i + 1]))
        elif arg.startswith("--model="):
            found.append((i, arg.split("=", 1)[1]))
    return found


def _is_lecture_name(value: str) -> bool:
    """A bare lecture or class name (not an inline config, a config file, a class path or a help request)."""
    if value.startswith(("{", "[")) or value.endswith((".yaml", ".yml", ".json")) or "." in value:
        return False
    return value not in ("-h", "--help")


def _rewrite_model_arg(argv: list[str], entries: dict[str, LectureEntry]) -> list[str]:
    """Turn ``--model <entry name | class name>`` into the full class path; unknown or broken names are an error."""
    out = list(argv)
    for idx, value in _model_arg(out):
        if not _is_lecture_name(value):
            continue  # jsonargparse checks those
        class_path = resolve(value, entries).class_path
        out[idx] = class_path if out[idx] == value else f"--model={class_path}"
    return out


def _config_lectures(argv: list[str]) -> list[str]:
    """``model.class_path`` of each ``--config`` file in ``argv`` (files jsonargparse cannot read are skipped:
    it reports them itself)."""
    import yaml

    paths = [argv[i + 1] for i, a in enumerate(argv[:-1]) if a in ("-c", "--config")]
    paths += [a.split("=", 1)[1] for a in argv if a.startswith("--config=")]
    found = []
    for path in paths:
        try:
            model = (yaml.safe_load(Path(path).read_text()) or {}).get("model")
        except (OSError, yaml.YAMLError, AttributeError):
            continue
        if isinstance(model, dict) and isinstance(model.get("class_path"), str):
            found.append(model["class_path"])
    return found


def _selected(argv: list[str], entries: dict[str, LectureEntry]) -> list[LectureEntry]:
    """The registered lectures ``argv`` selects (``--model`` or a config's ``model.class_path``), loaded: a broken
    or unavailable one raises :class:`PluginLoadError` here, before Lightning parses anything."""
    queries = [value for _, value in _model_arg(argv)] + _config_lectures(argv)
    selected = []
    for entry in entries.values():
        if any(q in (entry.name, entry.class_name, entry.class_path, entry.value) for q in queries):
            entry.load()
            selected.append(entry)
    return selected


def run(args: list[str] | None = None, **cli_kwargs: Any) -> LectureCLI:
    """Run the command line ``python cli.py ARGS`` in this process and return its :class:`LectureCLI`.

    ``--model`` may name a lecture by entry-point name or class name. Keyword arguments go to ``LectureCLI``
    (``run=False`` only parses and instantiates; ``trainer_defaults=...``). Tests and benchmarks call this; ``main``
    is this plus one-line error reporting. A broken plugin that is not selected is one warning line.

    Raises:
        LectureNotFoundError, PluginLoadError, PluginConflictError: the lecture selected is not usable.
    """
    entries = load_all(discover(), warn=False)
    argv = _rewrite_model_arg(list(sys.argv[1:] if args is None else args), entries)
    warn_unusable(entries, skip=[entry.name for entry in _selected(argv, entries)])
    if args is None:  # keep sys.argv as run: DDP re-launches this script with it
        sys.argv[1:] = argv
    return lecture_cli_class()(args=None if args is None else argv, entries=entries, **cli_kwargs)


# ------------------------------------------------------------------------------------------------- main
def main(args: list[str] | None = None) -> int:
    """Entry point of ``python cli.py`` and the ``ml-lectures`` script. Returns the exit code."""
    argv = list(sys.argv[1:] if args is None else args)
    debug = debug_requested(argv)
    argv = [a for a in argv if a != "--debug"]
    if argv[:1] == ["lectures"]:
        return lectures_command([*argv[1:], *(["--debug"] if debug else [])])
    if args is None:
        sys.argv[1:] = argv  # without --debug: DDP re-launches this script with sys.argv
    from datamodules.errors import UserInputError  # here: importing datamodules imports Lightning
    from lecture_modules.parse_errors import check_config_files, one_line

    if problem := check_config_files(argv):
        return _report(problem, None)
    try:
        run(None if args is None else argv, parser_kwargs={"exit_on_error": False})  # parse errors raise
    except argparse.ArgumentError as exc:
        return _report(one_line(str(exc), argv), exc if debug else None, hint=_PARSE_HINT)
    except UserInputError as exc:
        return _report(str(exc), exc if debug else None, hint=exc.hint)
    except OptimizerSectionError as exc:
        return _report(str(exc), exc if debug else None)
    except (LectureNotFoundError, PluginLoadError, PluginConflictError) as exc:
        hint = " (--debug shows the plugin's traceback)" if exc.__cause__ is not None and not debug else ""
        return _report(f"{exc}{hint}", exc.__cause__ if debug else None)
    except (ValueError, TypeError) as exc:
        cause = _setting_error(exc)
        if cause is None:
            raise
        if isinstance(cause, UserInputError):
            return _report(str(cause), cause if debug else None, hint=cause.hint)
        return _report(f"{type(cause).__name__}: {cause}", cause if debug else None)
    return 0


_PARSE_HINT = "python cli.py fit --help lists every setting; --model.help <Lecture> a lecture's own"


def _report(message: str, traceback_of: BaseException | None, hint: str | None = None) -> int:
    """``error: MESSAGE`` (and ``hint: HINT``) on stderr, after the traceback of ``traceback_of`` when given
    (``--debug``); exit code 2. Under DDP only rank 0 writes: every rank fails on the same input."""
    if _process_rank() > 0:
        return 2
    if traceback_of is not None:
        sys.stderr.write("".join(traceback.format_exception(traceback_of)))
    sys.stderr.write(f"error: {message}\n")
    if hint:
        sys.stderr.write(f"hint: {hint}\n")
    return 2


def _process_rank() -> int:
    """This process's global rank as the launcher set it (torchrun, SLURM, Lightning's DDP launcher); 0 alone."""
    for var in ("RANK", "SLURM_PROCID", "LOCAL_RANK"):
        value = os.environ.get(var, "")
        if value.isdigit():
            return int(value)
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
