"""A third-party package (examples/plugin_template) installed for real with pip is listed and trains."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.helpers import REPO, SMOKE_FIT, run_cli_subprocess


@pytest.mark.slow
def test_installed_plugin_is_listed_and_runs(tmp_path):
    target = tmp_path / "site"
    install = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--target",
            str(target),
            str(REPO / "examples" / "plugin_template"),
        ],
        capture_output=True,
        text=True,
    )
    assert install.returncode == 0, install.stderr
    env = {"PYTHONPATH": f"{target}:{REPO}"}  # the install location, as site-packages would be

    listing = run_cli_subprocess("lectures", env=env, cwd=tmp_path)
    assert listing.returncode == 0, listing.stderr
    row = next(line for line in listing.stdout.splitlines() if line.startswith("linear_probe"))
    assert "lecture_template.linear_probe.LinearProbe" in row and "ml-lectures-plugin-template" in row

    fit = run_cli_subprocess(
        *SMOKE_FIT,
        "--model",
        "LinearProbe",
        "--model.init_args.weight_decay_l2",
        "0.001",
        env=env,
        cwd=tmp_path,
    )
    assert fit.returncode == 0, fit.stderr[-3000:]

    without = run_cli_subprocess("fit", "--model", "LinearProbe", cwd=tmp_path)  # not installed here
    assert without.returncode == 2 and "unknown lecture 'LinearProbe'" in without.stderr
