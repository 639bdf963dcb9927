"""Generic top-level names resolve inside this repository; importing the CLI stays light."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

from tests.helpers import REPO


@pytest.mark.parametrize("name", ["lecture_modules", "datamodules", "callbacks", "cli"])
def test_top_level_names_resolve_inside_repo(name):
    module = importlib.import_module(name)
    assert module.__file__.startswith(str(REPO) + "/"), module.__file__


def test_importing_cli_and_lecture_modules_loads_no_lightning_torch_or_plugin():
    probe = "import sys, cli, lecture_modules; print(sorted(m for m in ('lightning', 'torch') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == "[]"


def test_loading_every_plugin_adds_no_heavy_import_over_bare_lightning_cli():
    # torchmetrics (imported by lightning) may already import some of these; discovery must add none of its own.
    heavy = "('transformers', 'datasets', 'sklearn', 'matplotlib', 'PIL', 'wandb')"
    probe = f"print(sorted(m for m in {heavy} if m in sys.modules))"
    bare = f"import sys, lightning.pytorch.cli; {probe}"
    ours = f"import sys, cli; from lecture_modules.registry import load_all; load_all(); {probe}"
    outs = [
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True).stdout
        for code in (bare, ours)
    ]
    assert outs[0] == outs[1], f"bare LightningCLI imports {outs[0]}, ml-lectures imports {outs[1]}"
