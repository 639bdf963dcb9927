"""Contracts every built-in lecture keeps, parametrized over the entry points this repository registers.

Each entry point has a config of the same name in ``configs/`` that runs offline (smoke preset), its class has a
one-line docstring for the lecture list, and its config names the class the entry point loads.
"""

from __future__ import annotations

import pytest
import yaml

from lecture_modules.registry import discover
from tests.helpers import CONFIGS, SMOKE, run_cli

BUILT_IN = sorted(name for name, entry in discover().items() if entry.distribution == "ml-lectures")


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
