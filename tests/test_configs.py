"""Committed configs hold deltas only: a lecture config never restates a default of the class it configures (the
defaults live once, in the signature, and ``--print_config`` shows them), and never repeats ``configs/base.yaml``."""

from __future__ import annotations

import dataclasses
import importlib
import inspect
from pathlib import Path

import pytest
import yaml

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
LECTURE_CONFIGS = sorted(p for p in CONFIGS.glob("*.yaml") if p.name != "base.yaml")


def _import(class_path: str):
    module, _, name = class_path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def init_parameters(cls) -> dict[str, inspect.Parameter]:
    """``cls.__init__``'s parameters plus those its ``**kwargs`` forwards to the bases' (as jsonargparse resolves)."""
    params: dict[str, inspect.Parameter] = {}
    for klass in cls.__mro__:
        if "__init__" not in vars(klass):
            continue
        signature = inspect.signature(klass.__init__).parameters
        for name, param in signature.items():
            if name != "self" and param.kind not in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                params.setdefault(name, param)
        if not any(param.kind is param.VAR_KEYWORD for param in signature.values()):
            break
    return params


def restated_defaults(node, where: str = "") -> list[str]:
    """Every ``init_args`` entry (at any depth, dataclass fields included) equal to its class's default."""
    found: list[str] = []
    if isinstance(node, list):
        for i, item in enumerate(node):
            found += restated_defaults(item, f"{where}[{i}]")
    if not isinstance(node, dict):
        return found
    if "class_path" in node and isinstance(node.get("init_args"), dict):
        params = init_parameters(_import(node["class_path"]))
        for key, value in node["init_args"].items():
            default = params[key].default if key in params else inspect.Parameter.empty
            if dataclasses.is_dataclass(default) and isinstance(value, dict):
                found += [
                    f"{where}.init_args.{key}.{f}"
                    for f, v in value.items()
                    if f in {x.name for x in dataclasses.fields(default)} and getattr(default, f) == v
                ]
            elif default is not inspect.Parameter.empty and not dataclasses.is_dataclass(default) and default == value:
                found.append(f"{where}.init_args.{key}")
    for key, value in node.items():
        found += restated_defaults(value, f"{where}.{key}" if where else key)
    return found


@pytest.mark.parametrize("config", LECTURE_CONFIGS, ids=lambda p: p.name)
def test_lecture_config_states_no_class_default(config):
    restated = restated_defaults(yaml.safe_load(config.read_text()))
    assert not restated, f"{config.name} restates class defaults (delete them; a comment may name them): {restated}"


@pytest.mark.parametrize("config", LECTURE_CONFIGS, ids=lambda p: p.name)
def test_lecture_config_does_not_repeat_base(config):
    base, lecture = yaml.safe_load((CONFIGS / "base.yaml").read_text()), yaml.safe_load(config.read_text())
    repeated = [k for k in ("seed_everything",) if lecture.get(k) == base[k]]
    repeated += [f"trainer.{k}" for k, v in base["trainer"].items() if (lecture.get("trainer") or {}).get(k) == v]
    assert not repeated, f"{config.name} repeats configs/base.yaml: {repeated}"


def test_a_restated_default_is_found():
    node = {"class_path": "lecture_modules.classification.Classification",
            "init_args": {"label_smoothing": 0.0, "net": {"kind": "cnn", "widths": [4]}}}  # fmt: skip
    assert restated_defaults({"model": node}) == ["model.init_args.label_smoothing", "model.init_args.net.kind"]
