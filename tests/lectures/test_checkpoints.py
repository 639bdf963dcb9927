"""The shared checkpoint loader rebuilds any registered lecture from its checkpoint, and refuses what it must."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from datamodules.errors import CheckpointError, UserInputError
from lecture_modules import LectureModule, load_lecture
from lecture_modules.checkpoints import (
    CheckpointNotFoundError,
    checkpoint_model_config,
    hparam_differences,
    lecture_from_checkpoint,
    read_checkpoint,
    require_config_lecture,
)
from lecture_modules.classification import Classification
from tests.helpers import FIT_CPU, REPO, run_cli, state_dict_equal, with_checkpoints

SHIPPED_TEACHER = REPO / "lecture_modules" / "distillation" / "assets" / "digits_cnn_teacher.ckpt"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 3-step classification run through cli.run, with the checkpoint it wrote."""
    root = tmp_path_factory.mktemp("run")
    cli = run_cli(
        *FIT_CPU,
        "--trainer.logger",
        "false",
        "--trainer.callbacks=[]",
        *with_checkpoints(root),
        "--trainer.max_steps",
        "3",
        "--trainer.limit_val_batches",
        "1",
        "--trainer.default_root_dir",
        str(root),
    )
    [ckpt] = root.glob("*.ckpt")
    return cli.model, ckpt


def test_a_checkpoint_written_by_the_cli_comes_back_with_its_weights_in_eval_mode(trained):
    model, ckpt = trained
    loaded = load_lecture(ckpt)
    assert type(loaded) is Classification and not loaded.training
    assert state_dict_equal(loaded.state_dict(), model.state_dict())
    assert loaded.hparams["net"] == model.hparams["net"]
    x = torch.randn(4, *model.hparams["input_shape"])
    model.eval()
    assert torch.equal(loaded.logits(x), model(x))


def test_lecture_and_overrides_change_what_is_built(trained):
    _, ckpt = trained
    loaded = load_lecture(ckpt, lecture="classification", overrides={"label_smoothing": 0.2})
    assert loaded.hparams["label_smoothing"] == 0.2


def test_weights_that_do_not_fit_name_the_file(trained):
    _, ckpt = trained
    with pytest.raises(ValueError, match=rf"checkpoint {ckpt}: weights do not fit Classification"):
        load_lecture(ckpt, overrides={"net": {"kind": "mlp", "widths": [7]}})


def test_the_shipped_teacher_loads_through_upgrade_hparams():
    """An older Classification checkpoint: backbone/hidden/batch_norm/dropout, folded into net on load."""
    raw = torch.load(SHIPPED_TEACHER, map_location="cpu", weights_only=True)
    assert "backbone" in raw["hyper_parameters"] and "net" not in raw["hyper_parameters"]
    teacher = load_lecture(SHIPPED_TEACHER)
    assert type(teacher) is Classification and not teacher.training
    assert teacher.hparams["net"]["kind"] == raw["hyper_parameters"]["backbone"]
    assert state_dict_equal(teacher.state_dict(), raw["state_dict"])
    assert teacher.logits(torch.zeros(2, *teacher.hparams["input_shape"])).shape == (2, 10)


class _RunsCode:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_a_pickled_object_is_refused_naming_the_file_and_nothing_runs(tmp_path):
    marker, path = tmp_path / "pwned", tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"x": _RunsCode(marker)}}, path)
    refused = rf"checkpoint {path} is refused: it holds a pickled Python object \(io.open\)"
    with pytest.raises(ValueError, match=refused) as info:
        load_lecture(path)
    assert isinstance(info.value.__cause__, pickle.UnpicklingError)
    assert not marker.exists()


def test_a_class_that_is_not_a_registered_lecture_is_never_built(tmp_path):
    path = tmp_path / "other.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"_class_path": "collections.OrderedDict"}}, path)
    with pytest.raises(ValueError, match=r"unknown lecture 'collections.OrderedDict'.*Only registered lectures"):
        load_lecture(path)


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (b"not a checkpoint", r"is refused: torch.load\(weights_only=True\) cannot read it \(Unsupported operand"),
        (b"PK\x03\x04 truncated zip", "is not a readable PyTorch file"),
        (None, "has no 'state_dict'"),
    ],
)
def test_unreadable_files_name_the_file(tmp_path, content, says):
    path = tmp_path / "bad.ckpt"
    if content is None:
        torch.save({"weights": torch.zeros(1)}, path)
    else:
        path.write_bytes(content)
    with pytest.raises(ValueError, match=rf"checkpoint {path} {says}"):
        read_checkpoint(path)
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        read_checkpoint(tmp_path / "missing.ckpt")


def test_a_bare_state_dict_needs_the_lecture_named():
    raw = torch.load(SHIPPED_TEACHER, map_location="cpu", weights_only=True)
    with pytest.raises(ValueError, match="does not record its lecture class"):
        lecture_from_checkpoint({"state_dict": raw["state_dict"]}, source="weights.pt")
    legacy = {"backbone": "cnn", "hidden": [32, 64, 128], "input_shape": (1, 16, 16)}
    model = lecture_from_checkpoint(
        {"state_dict": raw["state_dict"]}, source="weights.pt", lecture="Classification", overrides=legacy
    )
    assert state_dict_equal(model.state_dict(), raw["state_dict"])


def test_logits_default_to_forward():
    assert Classification.logits is LectureModule.logits
    model = Classification().eval()
    x = torch.randn(3, 1, 8, 8)
    assert torch.equal(model.logits(x), model(x))


# ---------------------------------------------------------------------- --ckpt_path against the config
CLASSIFICATION_PATH = "lecture_modules.classification.Classification"
CNN = {"kind": "cnn", "widths": [32, 64, 128], "batch_norm": True, "dropout": 0.1}


def test_every_refusal_is_a_checkpoint_error_and_a_missing_file_is_also_file_not_found(tmp_path):
    with pytest.raises(CheckpointNotFoundError) as info:
        read_checkpoint(tmp_path / "missing.ckpt")
    assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, UserInputError)
    with pytest.raises(CheckpointError, match="is a folder, not a file"):
        read_checkpoint(tmp_path)
    (tmp_path / "junk.ckpt").write_bytes(b"junk")
    with pytest.raises(CheckpointError):
        read_checkpoint(tmp_path / "junk.ckpt")


def test_a_checkpoint_of_another_lecture_names_both_lectures_and_the_opt_in():
    ckpt = torch.load(SHIPPED_TEACHER, map_location="cpu", weights_only=True)
    distillation = "lecture_modules.distillation.distillation.Distillation"
    with pytest.raises(CheckpointError) as info:
        require_config_lecture(ckpt, source="teacher.ckpt", class_path=distillation, init_args={})
    message = str(info.value)
    assert message.startswith("checkpoint teacher.ckpt is of lecture Classification")
    assert CLASSIFICATION_PATH in message and distillation in message
    assert "--model_from_ckpt true" in info.value.hint


def test_older_argument_names_are_upgraded_before_comparing():
    """The shipped teacher records backbone/hidden/...; Classification's config says net: {...}: the same."""
    ckpt = torch.load(SHIPPED_TEACHER, map_location="cpu", weights_only=True)
    config = {"net": CNN, "label_smoothing": 0.0}
    require_config_lecture(
        ckpt, source="t.ckpt", class_path=CLASSIFICATION_PATH, init_args=config, upgrade=Classification.upgrade_hparams
    )
    with pytest.raises(CheckpointError, match=r"model.init_args.net.dropout=0.1, but the config sets 0.5"):
        require_config_lecture(
            ckpt,
            source="t.ckpt",
            class_path=CLASSIFICATION_PATH,
            init_args={"net": {**CNN, "dropout": 0.5}},
            upgrade=Classification.upgrade_hparams,
        )


def test_differences_name_each_nested_setting_and_ignore_what_only_one_side_gives():
    saved = {"net": {"kind": "cnn", "widths": (32, 64)}, "lr": 0.1, "input_shape": (1, 8, 8), "old": 1}
    wanted = {"net": {"kind": "mlp", "widths": [32, 64], "new": 2}, "lr": 0.2}
    assert hparam_differences(saved, wanted, prefix="model.init_args.") == [
        ("model.init_args.net.kind", "cnn", "mlp"),
        ("model.init_args.lr", 0.1, 0.2),
    ]
    ckpt = {"state_dict": {}, "hyper_parameters": {"_class_path": CLASSIFICATION_PATH, **saved}}
    with pytest.raises(CheckpointError, match=r"net.kind='cnn', but the config sets 'mlp' \(and 1 more: .*\.lr\)"):
        require_config_lecture(ckpt, source="x.ckpt", class_path=CLASSIFICATION_PATH, init_args=wanted)


def test_the_checkpoints_model_section_is_its_registered_lecture_with_todays_argument_names():
    ckpt = torch.load(SHIPPED_TEACHER, map_location="cpu", weights_only=True)
    model = checkpoint_model_config(ckpt, source="t.ckpt")
    assert model["class_path"] == CLASSIFICATION_PATH
    assert model["init_args"]["net"] == {**CNN, "kind": "cnn"} and "backbone" not in model["init_args"]
    with pytest.raises(CheckpointError, match="Only registered lectures"):
        checkpoint_model_config({"hyper_parameters": {"_class_path": "os.system"}}, source="x.ckpt")
