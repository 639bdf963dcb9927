"""The command line: listing, name resolution, and errors a user can act on."""

from __future__ import annotations

import logging
import subprocess
import sys
from types import SimpleNamespace

import pytest

from cli import main
from lecture_modules import NonFiniteLossError, registry
from tests.helpers import CLASSIFICATION, FIT_CPU, QUICK, REPO, SMOKE, SMOKE_FIT, run_cli, run_cli_subprocess


def test_lectures_command_lists_name_path_distribution_status_description():
    out = run_cli_subprocess("lectures")
    assert out.returncode == 0, out.stderr
    header, *rows = out.stdout.splitlines()
    assert header.split() == ["NAME", "CLASS", "PATH", "DISTRIBUTION", "STATUS", "DESCRIPTION"]
    row = next(r for r in rows if r.startswith("classification"))
    for field in ("lecture_modules.classification.Classification", "ml-lectures", "found", "Image classification"):
        assert field in row


def test_lectures_listing_imports_neither_lightning_nor_torch_nor_any_plugin():
    code = (
        "import sys, cli; code = cli.main(['lectures']); "
        "print(code, sorted(m for m in sys.modules if m.split('.')[0] in ('lightning', 'torch', 'yaml') "
        "or m.startswith('lecture_modules.') and m not in ('lecture_modules.registry',)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.splitlines()[-1] == "0 []"


def test_lectures_check_imports_each_plugin_and_says_ok(capsys):
    assert main(["lectures", "--check"]) == 0
    row = next(r for r in capsys.readouterr().out.splitlines() if r.startswith("classification"))
    assert "  ok  " in row and "Image classification" in row


def test_lectures_markdown_is_a_table_of_name_lecture_description(capsys):
    assert main(["lectures", "--markdown"]) == 0
    header, rule, *rows = capsys.readouterr().out.splitlines()
    assert (header, rule) == ("| name | lecture | description |", "|---|---|---|")
    assert any(r.startswith("| `classification` | ") and "Image classification" in r for r in rows)
    assert any(r.startswith("| `fomaml` | ") and "meta_learning" in r for r in rows)


def test_python_m_lecture_modules_lists_too():
    import subprocess
    import sys

    from tests.helpers import REPO

    out = subprocess.run([sys.executable, "-m", "lecture_modules"], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0 and "classification" in out.stdout


@pytest.mark.parametrize("flag", [["--model", "classification"], ["--model=Classification"]])
def test_model_names_become_class_paths(flag, capsys):
    with pytest.raises(SystemExit) as info:
        main(["fit", *flag, "--print_config"])
    assert info.value.code == 0
    assert "class_path: lecture_modules.classification.Classification" in capsys.readouterr().out


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
    [line] = [x for x in capsys.readouterr().err.splitlines() if x.startswith("error:")]
    assert line == "error: model.init_args.net.dropout must be in [0, 1), got 1.5"


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


BROKEN_DIST = SimpleNamespace(metadata={"Name": "bd"})
BROKEN_EP = SimpleNamespace(name="broken", value="tmp_plugin_cli_broken:X", dist=BROKEN_DIST)
BROKEN_SAYS = "lecture plugin 'broken' (distribution 'bd') failed to import 'tmp_plugin_cli_broken:X': KeyError"


@pytest.fixture
def broken_plugin(tmp_path, monkeypatch):
    """The installed lectures plus a third-party plugin whose import raises."""
    import cli

    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "tmp_plugin_cli_broken.py").write_text("raise KeyError('bad plugin state')\n")
    real = registry.discover

    def discover(eps=None):
        return {**real(eps), **real([BROKEN_EP])}

    monkeypatch.setattr(cli, "discover", discover)
    monkeypatch.setattr(registry, "discover", discover)
    monkeypatch.delenv(registry.DEBUG_ENV, raising=False)


def test_broken_plugin_is_one_warning_and_the_other_lectures_run(broken_plugin, caplog, capsys):
    with caplog.at_level(logging.WARNING, logger="lecture_modules.registry"):
        assert main([*SMOKE_FIT, *QUICK]) == 0
    [warning] = [r.getMessage() for r in caplog.records if r.name == "lecture_modules.registry"]
    assert "lecture plugin 'broken' (distribution 'bd') is broken (KeyError: 'bad plugin state')" in warning
    assert "\n" not in warning


def test_selecting_the_broken_plugin_is_one_line_and_exit_2(broken_plugin, capsys):
    assert main(["fit", "--model", "broken"]) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith(f"error: {BROKEN_SAYS}: 'bad plugin state'") and "--debug" in line


def test_a_config_selecting_the_broken_plugin_is_the_same_error(broken_plugin, tmp_path, capsys):
    config = tmp_path / "broken.yaml"
    config.write_text("model:\n  class_path: tmp_plugin_cli_broken.X\n")
    assert main(["fit", "--config", str(config)]) == 2
    assert capsys.readouterr().err.splitlines()[-1].startswith(f"error: {BROKEN_SAYS}")


def test_debug_shows_the_broken_plugins_traceback(broken_plugin, capsys):
    assert main(["fit", "--model", "broken", "--debug"]) == 2
    err = capsys.readouterr().err
    assert "tmp_plugin_cli_broken.py" in err and "Traceback" in err  # the original traceback
    assert err.splitlines()[-1] == f"error: {BROKEN_SAYS}: 'bad plugin state'"


def test_lectures_lists_the_broken_plugin_and_check_says_why(broken_plugin, capsys):
    assert main(["lectures"]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert any(r.startswith("broken ") and "tmp_plugin_cli_broken.X" in r and "found" in r for r in rows)
    assert main(["lectures", "--check"]) == 1  # loud: a plugin is not usable
    rows = capsys.readouterr().out.splitlines()
    assert any(r.startswith("broken ") and "broken (KeyError: 'bad plugin state')" in r for r in rows)
    assert any(r.startswith("classification ") and "  ok  " in r for r in rows)


def test_logger_false_runs_a_config_that_lists_a_learning_rate_monitor(tmp_path):
    cli = run_cli(
        *FIT_CPU, "--trainer.logger", "false", "--trainer.max_steps", "2", "--trainer.limit_val_batches", "1",
        "--trainer.default_root_dir", str(tmp_path),
    )  # fmt: skip
    assert cli.trainer.global_step == 2 and not cli.trainer.loggers
    assert not [c for c in cli.trainer.callbacks if type(c).__name__ == "LearningRateMonitor"]
