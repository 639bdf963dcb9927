"""The command line: listing, name resolution, and errors a user can act on."""

from __future__ import annotations

import pytest

from cli import _rewrite_model_arg, main
from lecture_modules import NonFiniteLossError
from lecture_modules.registry import discover
from tests.helpers import CLASSIFICATION, QUICK, SMOKE, SMOKE_FIT, run_cli, run_cli_subprocess


def test_lectures_command_lists_name_path_distribution_status_description():
    out = run_cli_subprocess("lectures")
    assert out.returncode == 0, out.stderr
    header, *rows = out.stdout.splitlines()
    assert header.split()[:4] == ["NAME", "CLASS", "PATH", "DISTRIBUTION"]
    row = next(r for r in rows if r.startswith("classification"))
    for field in ("lecture_modules.classification.Classification", "ml-lectures", "ok", "Image classification"):
        assert field in row


def test_python_m_lecture_modules_lists_too():
    import subprocess
    import sys

    from tests.helpers import REPO

    out = subprocess.run([sys.executable, "-m", "lecture_modules"], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0 and "classification" in out.stdout


@pytest.mark.parametrize("flag", [["--model", "classification"], ["--model=Classification"]])
def test_model_names_become_class_paths(flag):
    argv = _rewrite_model_arg(["fit", *flag], discover())
    assert "lecture_modules.classification.Classification" in " ".join(argv)


def test_unknown_model_exits_2_with_closest_match(capsys):
    assert main(["fit", "--model", "Clasification"]) == 2
    err = capsys.readouterr().err
    assert "unknown lecture 'Clasification'" in err and "Did you mean 'Classification'?" in err


def test_bad_yaml_key_is_named(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("trainer:\n  max_epochz: 3\n")
    with pytest.raises(SystemExit) as info:
        run_cli("fit", "--config", CLASSIFICATION, "--config", str(bad))
    assert info.value.code != 0
    assert "max_epochz" in capsys.readouterr().err


def test_bad_type_is_named(capsys):
    with pytest.raises(SystemExit):
        run_cli("fit", "--config", CLASSIFICATION, "--model.init_args.net.dropout", "lots")
    assert "dropout" in capsys.readouterr().err


def test_bad_value_prints_the_lectures_own_message(capsys):
    """A value of the right type that __init__ rejects: exit 2 with the lecture's message, not jsonargparse's
    "does not validate against any of the Union subtypes" wrapper around it."""
    assert main(["fit", "--config", CLASSIFICATION, "--config", SMOKE, "--model.init_args.net.dropout", "1.5"]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last == "error: ValueError: Classification.net.dropout must be in [0, 1), got 1.5"


def test_yaml_python_tags_are_rejected(tmp_path, capsys):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.yaml"
    evil.write_text(f"trainer:\n  max_epochs: !!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(SystemExit):
        run_cli("fit", "--config", CLASSIFICATION, "--config", str(evil))
    assert not marker.exists()


def test_missing_data_path_is_named():
    with pytest.raises(FileNotFoundError, match="/no/such/mnist"):
        run_cli(
            *SMOKE_FIT,
            "--data.init_args.source",
            "datamodules.sources.IDXSource",
            "--data.init_args.source.init_args.root",
            "/no/such/mnist",
        )


def test_non_finite_loss_stops_with_step_and_term():
    with pytest.raises(NonFiniteLossError, match=r"'blowup'.*global step 3"):
        run_cli(
            *SMOKE_FIT,
            *QUICK,
            "--model",
            "tests.helpers.NaNAfterSteps",
            "--trainer.fast_dev_run",
            "false",
            "--trainer.logger",
            "false",
            "--trainer.callbacks=[]",
            "--trainer.max_steps",
            "10",
        )


def test_fit_help_lists_lecture_arguments():
    out = run_cli_subprocess("fit", "--model.help", "Classification")
    assert out.returncode == 0, out.stderr
    assert "--model.net.kind {mlp,cnn}" in out.stdout and "--model.net.dropout" in out.stdout


def test_broken_plugin_stops_the_cli_with_its_name_and_cause(tmp_path, monkeypatch, capsys):
    from types import SimpleNamespace

    import cli

    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "tmp_plugin_cli_broken.py").write_text("raise KeyError('bad plugin state')\n")
    ep = SimpleNamespace(name="broken", value="tmp_plugin_cli_broken:X", dist=SimpleNamespace(metadata={"Name": "bd"}))
    monkeypatch.setattr(cli, "discover", lambda: discover([ep]))
    assert cli.main(["fit", "--model", "Classification"]) == 2
    err = capsys.readouterr().err
    assert "tmp_plugin_cli_broken.py" in err and "KeyError" in err  # the original traceback
    assert "lecture plugin 'broken' (distribution 'bd')" in err
