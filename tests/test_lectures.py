"""Contracts every built-in lecture keeps, parametrized over the entry points this repository registers.

Each entry point has a config of the same name in ``configs/`` that runs offline (smoke preset), its class has a
one-line docstring for the lecture list, and its config names the class the entry point loads. ``--model.help``
lists every ``__init__`` argument (those a variant reaches through ``**kwargs`` included), ``--print_config``
shows each variant's own defaults, and the README's lecture table is the registry's.

The help and config checks run on one parser built in this process (``cli.run(..., run=False)``), not in 42
subprocesses.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import re
from typing import Any

import pytest
import yaml

from cli import run
from lecture_modules import LectureModule
from lecture_modules.classification import Classification
from lecture_modules.registry import discover, lecture_table
from tests.helpers import CLASSIFICATION, CONFIGS, REPO, SMOKE, run_cli

BUILT_IN = sorted(name for name, entry in discover().items() if entry.distribution == "ml-lectures")
README_BEGIN, README_END = "<!-- lectures:begin -->", "<!-- lectures:end -->"


def test_every_built_in_lecture_is_found():
    assert "classification" in BUILT_IN


@pytest.mark.parametrize("name", BUILT_IN)
def test_entry_point_has_matching_config_and_docstring(name):
    entry = discover()[name]
    config = CONFIGS / f"{name}.yaml"
    assert config.is_file(), f"entry point '{name}' has no configs/{name}.yaml"
    class_path = yaml.safe_load(config.read_text())["model"]["class_path"]
    assert class_path == entry.class_path, f"configs/{name}.yaml trains {class_path}, not {entry.class_path}"
    cls = entry.load()
    assert cls.__doc__ and cls.__doc__.strip().splitlines()[0], f"{entry.class_path} needs a docstring"


@pytest.mark.parametrize("name", BUILT_IN)
def test_config_runs_offline_smoke(name):
    cli = run_cli("fit", "--config", str(CONFIGS / f"{name}.yaml"), "--config", SMOKE)
    assert cli.trainer.global_step >= 1
    assert any(k.startswith("train/loss") for k in cli.trainer.callback_metrics), sorted(cli.trainer.callback_metrics)


# ------------------------------------------------------------------------------------- arguments and defaults
def init_arguments(cls: type) -> dict[str, inspect.Parameter]:
    """The ``__init__`` arguments of ``cls`` and of the bases its ``**kwargs`` reach, walking the MRO until a
    signature without ``**kwargs``; a name keeps the most derived class's parameter (its default)."""
    found: dict[str, inspect.Parameter] = {}
    for klass in cls.__mro__:
        if klass is LectureModule or not issubclass(klass, LectureModule):
            break
        if "__init__" not in vars(klass):
            continue
        params = list(inspect.signature(klass.__init__).parameters.values())[1:]
        for param in params:
            if param.kind not in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                found.setdefault(param.name, param)
        if not any(param.kind is param.VAR_KEYWORD for param in params):
            break
    return found


def _plain(value: Any) -> Any:
    """A default as ``--print_config`` writes it (dataclasses as dicts, tuples as lists); ``...`` if not plain."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _plain(dataclasses.asdict(value))
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value if value is None or isinstance(value, bool | int | float | str) else ...


def _same(printed: Any, expected: Any) -> bool:
    if isinstance(expected, float) and not isinstance(printed, bool):
        try:
            return math.isclose(float(printed), expected, rel_tol=1e-9, abs_tol=0.0)
        except (TypeError, ValueError):
            return False
    if isinstance(expected, list):
        return isinstance(printed, list) and len(printed) == len(expected) and all(map(_same, printed, expected))
    if isinstance(expected, dict) and "class_path" in expected:  # --print_config adds the class's other defaults
        given = expected.get("init_args") or {}
        return (
            isinstance(printed, dict)
            and printed.get("class_path") == expected["class_path"]
            and all(_same((printed.get("init_args") or {}).get(k), v) for k, v in given.items())
        )
    if isinstance(expected, dict):
        return (
            isinstance(printed, dict)
            and printed.keys() == expected.keys()
            and all(_same(printed[k], expected[k]) for k in expected)
        )
    return printed == expected


@pytest.fixture(scope="module")
def parser():
    """One LightningCLI parser (no subcommand) to ask for every lecture's help and config."""
    return run(["--config", CLASSIFICATION, "--trainer.logger", "false", "--trainer.callbacks", "[]"], run=False).parser


def linked_model_arguments(parser) -> set[str]:
    """Model arguments set from the data by ``parser.link_arguments`` (``--print_config`` shows them empty)."""
    links = getattr(parser, "_links_group", None)  # jsonargparse keeps its ActionLink objects there
    targets = [link.target[0] for link in (links._group_actions if links else [])]
    return {t.split(".init_args.", 1)[1] for t in targets if t.startswith("model.init_args.")}


def _printed(parser, args: list[str], capsys) -> str:
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        parser.parse_args(args)
    out = capsys.readouterr()
    assert info.value.code == 0, out.err
    return out.out


@pytest.mark.parametrize("name", BUILT_IN)
def test_model_help_lists_every_init_argument_including_those_reached_through_kwargs(name, parser, capsys):
    entry = discover()[name]
    out = _printed(parser, ["--model.help", entry.class_path], capsys)
    missing = [arg for arg in init_arguments(entry.load()) if not re.search(rf"--model\.{arg}\b", out)]
    assert not missing, f"--model.help {name} does not list {missing}"


@pytest.mark.parametrize("name", BUILT_IN)
def test_print_config_shows_each_variants_own_defaults(name, parser, capsys):
    entry = discover()[name]
    config = CONFIGS / f"{name}.yaml"
    set_by_config = (yaml.safe_load(config.read_text())["model"].get("init_args") or {}).keys()
    printed = yaml.safe_load(_printed(parser, ["--config", str(config), "--print_config"], capsys))["model"]
    assert printed["class_path"] == entry.class_path
    wrong, linked = {}, linked_model_arguments(parser)
    assert linked >= {"num_classes", "input_shape"}
    for arg, param in init_arguments(entry.load()).items():
        expected = _plain(param.default)
        if arg in set_by_config or arg in linked or param.default is param.empty or expected is ...:
            continue
        if not _same(printed["init_args"].get(arg), expected):
            wrong[arg] = (printed["init_args"].get(arg), expected)
    assert not wrong, f"--config configs/{name}.yaml --print_config shows (printed, class default): {wrong}"


class KwargsVariant(Classification):
    """Test-only variant that states one difference and forwards the rest."""

    def __init__(self, label_smoothing: float = 0.1, **kwargs: Any) -> None:
        """
        Args:
            label_smoothing: a different default.
        """
        super().__init__(label_smoothing=label_smoothing, **kwargs)


def test_the_walk_follows_kwargs_and_jsonargparse_resolves_them(parser, capsys):
    args = init_arguments(KwargsVariant)
    assert list(args) == ["label_smoothing", "num_classes", "input_shape", "net"]
    assert args["label_smoothing"].default == 0.1
    out = _printed(parser, ["--model.help", f"{__name__}.KwargsVariant"], capsys)
    assert all(re.search(rf"--model\.{arg}\b", out) for arg in args)


def test_print_config_shows_fomamls_first_order_default(parser, capsys):
    printed = yaml.safe_load(_printed(parser, ["--config", str(CONFIGS / "fomaml.yaml"), "--print_config"], capsys))
    assert printed["model"]["init_args"]["first_order"] is True


# ------------------------------------------------------------------------------------------ the README's table
def test_readme_lecture_table_is_the_registrys():
    """README.md holds ``python cli.py lectures --markdown`` (built-in lectures) between the two markers."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert README_BEGIN in readme and README_END in readme, (
        f"README.md needs the lecture table between '{README_BEGIN}' and '{README_END}': put the output of "
        "'python cli.py lectures --markdown' there"
    )
    table = readme.split(README_BEGIN, 1)[1].split(README_END, 1)[0].strip()
    built_in = {name: entry for name, entry in discover().items() if entry.distribution == "ml-lectures"}
    expected = lecture_table(built_in, markdown=True)
    assert table == expected, (
        "README.md's lecture table differs from the registry: replace the lines between the markers with the "
        "output of 'python cli.py lectures --markdown' (with no third-party lecture installed)"
    )
