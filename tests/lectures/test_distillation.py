"""Distillation lecture: KD/hint losses, compact students, teacher loading and freezing, the budget gate,
the teacher-logit cache, and end-to-end runs (resume exactness; the DDP run is in tests/test_ddp.py)."""

from __future__ import annotations

import math
import pickle
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.investigations.distillation_scratch import DistillationWithScratch
from cli import main
from datamodules.errors import SettingError
from lecture_modules.checkpoints import export_checkpoint
from lecture_modules.classification import Classification
from lecture_modules.distillation import Distillation, ParameterBudgetError, StudentSpec, TeacherSpec
from lecture_modules.distillation.losses import HintAdapter, distillation_terms, kd_loss, soft_targets
from lecture_modules.distillation.students import (
    DepthwiseSeparableConv2d,
    LowRankLinear,
    build_student,
    count_parameters,
    separable_ratio,
)
from lecture_modules.distillation.teachers import load_teacher
from tests.helpers import (
    CONFIGS,
    CPU,
    QUICK,
    SMOKE,
    crash_after_checkpoint,
    optimised_params,
    run_cli,
    state_dict_equal,
    with_checkpoints,
)

DISTILLATION = str(CONFIGS / "distillation.yaml")
NO_LOG = ["--trainer.logger", "false", "--trainer.callbacks=[]"]
FIT = ["fit", "--config", CPU, "--config", DISTILLATION, *QUICK, *NO_LOG]
SCRATCH = ["--model.init_args.alpha", "0", "--model.init_args.teachers", "[]"]


# ---------------------------------------------------------------------------------------------- losses
@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_kd_loss_is_zero_when_student_equals_teacher(temperature):
    z = torch.randn(5, 7, generator=torch.Generator().manual_seed(0))
    # float32 rounding leaves ~1e-7 per element, times T^2
    assert kd_loss(z, soft_targets([z], temperature), temperature).item() == pytest.approx(0.0, abs=1e-5)
    # softmax ignores a constant shift of the logits, so the loss does too
    assert kd_loss(z + 3.0, soft_targets([z], temperature), temperature).item() == pytest.approx(0.0, abs=1e-5)
    assert kd_loss(z.flip(-1), soft_targets([z], temperature), temperature).item() > 1e-2


def test_kd_loss_matches_hand_computation_at_t2():
    zs, zt, t = [1.0, 0.0, -1.0], [2.0, 0.5, 0.0], 2.0

    def softmax(z):
        e = [math.exp(v / t) for v in z]
        return [v / sum(e) for v in e]

    ps, pt = softmax(zs), softmax(zt)
    expected = t * t * sum(p * math.log(p / q) for p, q in zip(pt, ps))
    got = kd_loss(torch.tensor([zs]), soft_targets([torch.tensor([zt])], t), t)
    assert got.item() == pytest.approx(expected, rel=1e-5)
    # and the full objective weighs KD by alpha and the hard-label CE by 1 - alpha
    terms = distillation_terms(torch.tensor([zs]), soft_targets([torch.tensor([zt])], t), torch.tensor([2]), 0.7, t)
    assert terms["kd"].item() == pytest.approx(0.7 * expected, rel=1e-5)
    assert terms["ce"].item() == pytest.approx(0.3 * -math.log(softmax([v * t for v in zs])[2]), rel=1e-5)


def test_ensemble_targets_average_the_softened_teachers():
    a, b = torch.randn(4, 3), torch.randn(4, 3)
    expected = (F.softmax(a / 3, -1) + F.softmax(b / 3, -1)) / 2
    assert torch.allclose(soft_targets([a, b], 3.0), expected)
    assert torch.allclose(soft_targets([a], 1.0).sum(-1), torch.ones(4))
    assert set(distillation_terms(a, None, torch.zeros(4, dtype=torch.long), 0.0, 2.0)) == {"ce"}
    assert set(distillation_terms(a, soft_targets([b], 2.0), torch.zeros(4, dtype=torch.long), 1.0, 2.0)) == {"kd"}


def test_hint_adapter_maps_student_features_to_teacher_shape():
    conv = HintAdapter((8, 4, 4), (16, 2, 2))
    assert conv(torch.randn(3, 8, 4, 4)).shape == (3, 16, 2, 2)
    lin = HintAdapter((32,), (64,))
    teacher = torch.randn(3, 64)
    assert lin(torch.randn(3, 32)).shape == (3, 64)
    assert lin.loss(torch.randn(3, 32), teacher) > 0
    with pytest.raises(ValueError, match="hint features"):
        HintAdapter((8, 4, 4), (64,))


# ---------------------------------------------------------------------------------------------- students
@pytest.mark.parametrize(("i", "o", "k"), [(16, 32, 3), (8, 64, 5)])
def test_depthwise_separable_saves_1_over_o_plus_1_over_k2(i, o, k):
    layer = DepthwiseSeparableConv2d(i, o, k)
    standard = nn.Conv2d(i, o, k, bias=False)
    n_sep, n_std = sum(count_parameters(layer)), sum(count_parameters(standard))
    assert n_sep == k * k * i + i * o
    assert n_sep / n_std == pytest.approx(separable_ratio(o, k)) == pytest.approx(1 / o + 1 / k**2)
    assert layer(torch.randn(2, i, 9, 9)).shape == (2, o, 9, 9)
    assert f"1/{o} + 1/{k * k}" in repr(layer)


def test_low_rank_linear_from_svd():
    linear = nn.Linear(12, 8)
    full = LowRankLinear.from_linear(linear, rank=8)  # full rank: the same map
    x = torch.randn(5, 12)
    assert torch.allclose(full(x), linear(x), atol=1e-5)
    low = LowRankLinear.from_linear(linear, rank=3)
    w_low = low.up.weight @ low.down.weight  # (8, 12)
    s = torch.linalg.svdvals(linear.weight.detach())
    # Eckart-Young: the rank-3 error is exactly the discarded singular values
    assert torch.linalg.matrix_norm(linear.weight - w_low).item() == pytest.approx(s[3:].norm().item(), rel=1e-4)
    assert sum(count_parameters(low)) == 3 * (12 + 8) + 8
    with pytest.raises(ValueError, match="rank"):
        LowRankLinear(4, 4, 5)


@pytest.mark.parametrize("kind", ["cnn", "depthwise_separable", "mlp", "low_rank_mlp"])
def test_students_map_images_to_logits(kind):
    net = build_student(kind, (1, 16, 16), 10, [8, 16], rank=4)
    assert net(torch.randn(3, 1, 16, 16)).shape == (3, 10)


# ---------------------------------------------------------------------------------------------- budget gate
def test_budget_gate_fires_with_the_actual_count():
    student = StudentSpec(widths=[8, 16])
    ok = Distillation(input_shape=(1, 16, 16), alpha=0.0, student=student)
    n = ok.student_params
    assert n == sum(p.numel() for p in ok.student.parameters())
    with pytest.raises(ParameterBudgetError, match=f"{n:,} parameters") as info:
        Distillation(input_shape=(1, 16, 16), alpha=0.0, student=student, max_params=n - 1)
    assert "max_params" in str(info.value)
    Distillation(input_shape=(1, 16, 16), alpha=0.0, student=student, max_params=n)  # at the budget is allowed


def test_budget_counts_non_trainable_parameters():
    model = Distillation(input_shape=(1, 16, 16), alpha=0.0, student=StudentSpec(widths=[8, 16]))
    model.student[0].weight.requires_grad_(False)
    trainable, frozen = count_parameters(model.student)
    assert frozen == model.student[0].weight.numel() and trainable + frozen == model.student_params


def test_budget_gate_stops_fit_from_the_cli(capsys):
    code = main(["fit", "--config", DISTILLATION, "--config", SMOKE, "--model.init_args.max_params", "1000"])
    assert code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]  # the cause itself, not jsonargparse's wrapper
    assert last.startswith("error: the 'cnn' student with widths [8, 16, 16] has 3,778 par")
    assert "max_params = 1,000" in last


def test_a_non_finite_loss_hint_names_the_distillation_settings_of_its_term():
    model = Distillation(alpha=0.5, temperature=0.001, teachers=[TeacherSpec("builtin:digits_cnn")])
    assert "model.init_args.temperature (now 0.001)" in model.non_finite_hint("kd")
    assert "model.init_args.hint_weight (now 1)" in model.non_finite_hint("hint")
    assert model.non_finite_hint("ce").startswith("lower the learning rate optimizer.init_args.lr;")


def test_settings_are_validated_by_name():
    with pytest.raises(SettingError, match=r"^model\.init_args\.teachers is empty, but model\.init_args\.alpha 0\.5"):
        Distillation(alpha=0.5)  # distillation without a teacher
    with pytest.raises(SettingError, match=r"^model\.init_args\.temperature must be > 0, got 0$"):
        Distillation(alpha=0.0, temperature=0)
    with pytest.raises(SettingError, match=r"^model\.init_args\.alpha must be in \[0, 1\], got 1\.5$"):
        Distillation(alpha=1.5)
    with pytest.raises(SettingError, match=r"^model\.init_args\.hint_layers: the student has no layer 'nope'"):
        Distillation(alpha=0.0, teachers=[TeacherSpec("builtin:digits_cnn")], hint_layers={"nope": "net.0"})
    with pytest.raises(SettingError, match=r"^model\.init_args\.student\.kind must be one of .* got 'resnet'"):
        Distillation(alpha=0.0, student={"kind": "resnet"})
    with pytest.raises(SettingError, match=r"^model\.init_args\.student\.dropout must be in \[0, 1\), got 1\.5"):
        Distillation(alpha=0.0, student=StudentSpec(dropout=1.5))
    with pytest.raises(SettingError, match=r"^model\.init_args\.student: unknown field\(s\) \['hidden'\]"):
        Distillation(alpha=0.0, student={"hidden": [8]})


@pytest.mark.parametrize("kind", ["cnn", "depthwise_separable", "mlp", "low_rank_mlp"])
def test_student_spec_builds_the_kind_with_its_default_widths(kind):
    torch.manual_seed(0)
    spec = StudentSpec(kind=kind, rank=4)
    net = spec.build((1, 16, 16), 10)
    torch.manual_seed(0)
    assert state_dict_equal(net.state_dict(), build_student(kind, (1, 16, 16), 10, spec.layer_widths, 4).state_dict())
    model = Distillation(input_shape=(1, 16, 16), alpha=0.0, student=spec)
    assert model.hparams["student"] == {"kind": kind, "widths": None, "rank": 4, "batch_norm": True, "dropout": 0.0}


OLD_HPARAMS = {  # what a checkpoint written before the student became one spec holds
    "num_classes": 10,
    "input_shape": [1, 16, 16],
    "student": "low_rank_mlp",
    "widths": [32, 16],
    "rank": 4,
    "batch_norm": False,
    "dropout": 0.1,
    "teachers": [],
    "alpha": 0.0,
    "temperature": 2.0,
    "hint_layers": None,
    "hint_weight": 1.0,
    "hint_only_epochs": 0,
    "cache_teacher_logits": False,
    "max_params": None,
    "compare_with_scratch": True,
}


def test_upgrade_hparams_folds_the_old_student_arguments_into_the_spec():
    new = Distillation.upgrade_hparams(OLD_HPARAMS)
    assert new["student"] == {"kind": "low_rank_mlp", "widths": [32, 16], "rank": 4, "batch_norm": False,
                              "dropout": 0.1}  # fmt: skip
    assert not {"widths", "rank", "batch_norm", "dropout", "compare_with_scratch"} & set(new)
    assert Distillation.upgrade_hparams(new) == new  # today's hyper-parameters pass unchanged
    torch.manual_seed(0)
    model = Distillation(**new)
    torch.manual_seed(0)
    old_layout = build_student("low_rank_mlp", (1, 16, 16), 10, [32, 16], rank=4, batch_norm=False, dropout=0.1)
    assert state_dict_equal(model.student.state_dict(), old_layout.state_dict())


def test_an_old_distillation_checkpoint_with_its_scratch_twin_still_loads(tmp_path):
    torch.manual_seed(0)
    model = Distillation(**Distillation.upgrade_hparams(OLD_HPARAMS))
    state = {**model.state_dict(), **{f"scratch.{k}": v for k, v in model.student.state_dict().items()}}
    path = tmp_path / "old.ckpt"
    hparams = {**OLD_HPARAMS, "_class_path": "lecture_modules.distillation.Distillation"}
    torch.save({"state_dict": state, "hyper_parameters": hparams}, path)
    loaded = load_teacher(TeacherSpec(str(path)))  # the loader applies upgrade_hparams
    x = torch.randn(3, 1, 16, 16)
    assert isinstance(loaded, Distillation) and torch.equal(loaded(x), model.eval()(x))


# ---------------------------------------------------------------------------------------------- teachers
def test_builtin_teacher_loads_weights_only_and_is_accurate():
    teacher = load_teacher(TeacherSpec("builtin:digits_cnn"))
    assert isinstance(teacher, Classification) and not teacher.training
    assert not any(p.requires_grad for p in teacher.parameters())
    from datamodules.image import ImageDataModule

    data = ImageDataModule(image_size=16, seed=0)
    data.setup()
    x, y = data._data["test"].tensors
    with torch.no_grad():
        acc = (teacher(x).argmax(-1) == y).float().mean().item()
    assert acc > 0.95  # the split it never saw


def test_teacher_from_state_dict_file_and_exported_checkpoint(tmp_path):
    teacher = load_teacher(TeacherSpec("builtin:digits_cnn"))
    x = torch.randn(4, 1, 16, 16)
    path = tmp_path / "weights.pt"
    torch.save(teacher.state_dict(), path)
    spec = TeacherSpec(str(path), lecture="classification", lecture_args={"input_shape": [1, 16, 16]})
    with torch.no_grad():
        assert torch.equal(load_teacher(spec)(x), teacher(x))
    with pytest.raises(ValueError, match="lecture"):
        load_teacher(TeacherSpec(str(path)))  # a state dict alone does not say what network it is
    wrong = TeacherSpec(str(path), lecture="classification", lecture_args={"net": {"widths": [8, 8, 8]}})
    with pytest.raises(ValueError, match="size mismatch"):
        load_teacher(wrong)
    exported = export_checkpoint(load_teacher.__globals__["BUILTIN_TEACHERS"]["digits_cnn"], tmp_path / "t.ckpt")
    with pytest.raises(FileExistsError):
        export_checkpoint(exported, exported)  # never overwrites
    assert torch.equal(load_teacher(TeacherSpec(str(exported)))(x), teacher(x))


class _Payload:
    def __reduce__(self):
        return (print, ("pickled code ran",))


def test_unsafe_or_unknown_teacher_files_are_refused(tmp_path):
    bad = tmp_path / "evil.ckpt"
    with open(bad, "wb") as fh:
        pickle.dump({"state_dict": {}, "x": _Payload()}, fh)
    with pytest.raises(ValueError, match="weights_only"):
        load_teacher(TeacherSpec(str(bad)))
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"_class_path": "os.system"}}, foreign)
    with pytest.raises(ValueError, match="Only registered lectures"):
        load_teacher(TeacherSpec(str(foreign)))
    with pytest.raises(FileNotFoundError, match=r"missing\.ckpt"):
        load_teacher(TeacherSpec(str(tmp_path / "missing.ckpt")))


def test_teacher_from_a_local_hugging_face_model(tmp_path):
    from transformers import ViTConfig, ViTForImageClassification

    config = ViTConfig(
        image_size=8,
        patch_size=4,
        num_channels=3,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        num_labels=10,
    )
    ViTForImageClassification(config).save_pretrained(tmp_path / "vit")
    teacher = load_teacher(TeacherSpec(str(tmp_path / "vit")))
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    assert teacher(torch.randn(2, 1, 16, 16)).shape == (2, 10)  # grey 16 px -> RGB 8 px for the ViT


# ---------------------------------------------------------------------------------------------- end to end
def test_teacher_is_frozen_outside_optimizer_and_checkpoint(tmp_path):
    cli = run_cli(
        *FIT,
        "--trainer.max_epochs",
        "1",
        "--trainer.limit_train_batches",
        "4",
        "--trainer.limit_val_batches",
        "1",
        "--trainer.default_root_dir",
        str(tmp_path),
        *with_checkpoints(tmp_path / "ckpt"),
    )
    model = cli.model
    [teacher] = model.teachers
    reference = load_teacher(TeacherSpec("builtin:digits_cnn"))
    assert state_dict_equal(teacher.state_dict(), reference.state_dict())  # unchanged by 4 steps
    assert not teacher.training and all(p.grad is None and not p.requires_grad for p in teacher.parameters())
    optimised = optimised_params(cli.trainer)
    assert optimised == {id(p) for p in model.parameters()}
    assert not optimised & {id(p) for p in teacher.parameters()}
    [path] = (tmp_path / "ckpt").glob("*.ckpt")
    ckpt = torch.load(path, weights_only=True)
    # the student alone: no teacher weights
    assert ckpt["state_dict"] and {k.split(".")[0] for k in ckpt["state_dict"]} == {"student"}
    assert "val/teacher_acc" in cli.trainer.callback_metrics and "train/loss_kd" in cli.trainer.callback_metrics
    # the student alone reloads and predicts without the teacher
    student = Distillation.load_from_checkpoint(path, weights_only=True)
    assert not student.teachers


def test_hints_from_yaml_build_adapters_and_train(tmp_path):
    cli = run_cli(
        *FIT,
        "--model.init_args.hint_layers",
        "{'5': 'net.8', '9': 'net.12'}",
        "--model.init_args.hint_only_epochs",
        "1",
        "--trainer.max_epochs",
        "2",
        "--trainer.limit_train_batches",
        "3",
        "--trainer.limit_val_batches",
        "1",
        "--trainer.default_root_dir",
        str(tmp_path),
    )
    model = cli.model
    assert set(model.hint_adapters) == {"5", "9"}
    assert model.hint_adapters["5"].proj.out_channels == 64  # the teacher's second block has 64 channels
    metrics = cli.trainer.callback_metrics
    assert "train/loss_hint" in metrics and "train/loss_kd" in metrics  # epoch 2 is past the hint-only stage
    with pytest.raises(ValueError, match=r"the teacher has no layer 'net\.99'"):
        run_cli(
            *FIT, "--model.init_args.hint_layers", "{'5': 'net.99'}", "--trainer.default_root_dir", str(tmp_path / "b")
        )


def test_cached_teacher_logits_equal_live_ones(tmp_path):
    with pytest.raises(ValueError, match="indexed: true"):
        run_cli(*FIT, "--model.init_args.cache_teacher_logits", "true", "--trainer.default_root_dir", str(tmp_path))
    cli = run_cli(
        *FIT,
        "--model.init_args.cache_teacher_logits",
        "true",
        "--data.init_args.indexed",
        "true",
        "--trainer.max_steps",
        "2",
        "--trainer.limit_val_batches",
        "1",
        "--trainer.default_root_dir",
        str(tmp_path / "ok"),
    )
    model, train = cli.model, cli.datamodule._data["train"]
    x, _, index = train[torch.arange(10, 20)]
    cached = model.teacher_logits(x, index)[0]
    live = model.teacher_logits(x)[0]
    assert cached.shape == (10, 10) and torch.allclose(cached, live, atol=1e-5)


def test_model_report_logs_sizes_and_cpu_latency(tmp_path):
    cli = run_cli(
        *FIT,
        "--trainer.max_steps",
        "1",
        "--trainer.limit_val_batches",
        "1",
        "--trainer.default_root_dir",
        str(tmp_path),
        "--trainer.callbacks+=callbacks.model_report.ModelReport",
        "--trainer.callbacks.batch_sizes",
        "[1, 8]",
        "--trainer.callbacks.repeats",
        "2",
    )
    [report] = [c for c in cli.trainer.callbacks if type(c).__name__ == "ModelReport"]
    assert report.results["model/student_params"] == cli.model.student_params
    assert report.results["model/teacher_params"] > 10 * cli.model.student_params
    assert all(report.results[f"model/{n}_cpu_ms_b{b}"] > 0 for n in ("student", "teacher") for b in (1, 8))


# 640 train samples -> 10 batches of 64 per epoch; 2 epochs = 20 steps, interrupted mid-way through the second.
RESUME = [
    *FIT,
    "--trainer.max_epochs",
    "2",
    "--trainer.limit_val_batches",
    "2",
    "--model.init_args.student.dropout",
    "0.2",
    "--data.init_args.limit_train_samples",
    "640",
]


def test_resume_mid_epoch_gives_identical_student(tmp_path):
    full = run_cli(*RESUME, "--trainer.default_root_dir", str(tmp_path / "full"))
    assert full.trainer.global_step == 20
    ckpt = crash_after_checkpoint(RESUME, 13, tmp_path / "ckpt")
    resumed = run_cli(*RESUME, "--trainer.default_root_dir", str(tmp_path / "resumed"), "--ckpt_path", str(ckpt))
    assert resumed.trainer.global_step == 20
    assert state_dict_equal(resumed.model.state_dict(), full.model.state_dict())


def test_scratch_twin_starts_equal_and_leaves_student_gradients_unchanged():
    torch.manual_seed(0)
    twin = DistillationWithScratch(input_shape=(1, 16, 16), alpha=0.0)
    torch.manual_seed(0)
    alone = Distillation(input_shape=(1, 16, 16), alpha=0.0)
    assert state_dict_equal(twin.scratch.state_dict(), twin.student.state_dict())
    assert state_dict_equal(twin.student.state_dict(), alone.student.state_dict())
    assert twin.student_params == alone.student_params  # the twin is outside the budget
    batch = (torch.randn(8, 1, 16, 16), torch.randint(0, 10, (8,)))
    for model in (twin, alone):
        model.training_step(batch, 0).backward()
    for (name, p), q in zip(twin.student.named_parameters(), alone.student.parameters()):
        assert torch.allclose(p.grad, q.grad), name
    assert all(p.grad is not None for p in twin.scratch.parameters())


def test_warns_when_the_teacher_split_the_data_differently(tmp_path):
    quick = ["--trainer.max_steps", "1", "--trainer.limit_val_batches", "0"]
    with pytest.warns(UserWarning, match=r"other data split settings \(seed: teacher 0 vs data 1\)"):
        run_cli(*FIT, *quick, "--data.init_args.seed", "1", "--trainer.default_root_dir", str(tmp_path / "a"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run_cli(*FIT, *quick, "--trainer.default_root_dir", str(tmp_path / "b"))  # the teacher's own split
    assert not [w for w in caught if "data split" in str(w.message)]


def test_offline_wandb_run_has_the_comparison_metrics_and_figure(tmp_path):
    from tests.wandb_reader import read_run

    run_cli(
        "fit",
        "--config",
        CPU,
        "--config",
        DISTILLATION,
        *QUICK,
        "--trainer.max_epochs",
        "1",
        "--trainer.limit_train_batches",
        "3",
        "--trainer.log_every_n_steps",
        "1",
        "--trainer.logger.init_args.save_dir",
        str(tmp_path / "runs"),
        "--trainer.callbacks.init_args.repeats",  # the config's ModelReport (the last callback)
        "2",
    )
    [log_file] = (tmp_path / "runs" / "wandb").glob("offline-run-*/run-*.wandb")
    run = read_run(log_file)
    assert run["group"] == "distillation"
    logged = {key for row in run["history"] for key in row}
    assert {"val/acc", "val/teacher_acc", "train/loss_kd", "model/student_params"} <= logged
    assert "model/student_cpu_ms_b64" in logged and any(k.startswith("val/distillation") for k in logged)
    assert list((log_file.parent / "files" / "figures").glob("val_distillation-*.png"))


def test_scratch_investigation_runs_from_the_lecture_config_and_logs_both_students(tmp_path):
    """The with/without-distillation comparison in one run (benchmarks/investigations/distillation_scratch.py)."""
    from benchmarks.investigations.distillation_scratch import CLASS_PATH

    cli = run_cli(
        *FIT,
        "--model",
        CLASS_PATH,
        "--trainer.max_epochs",
        "1",
        "--trainer.limit_train_batches",
        "3",
        "--trainer.limit_val_batches",
        "1",
        "--trainer.default_root_dir",
        str(tmp_path),
    )
    model = cli.model
    assert isinstance(model, DistillationWithScratch) and model.hparams["student"]["widths"] == [8, 16, 16]
    assert {"val/acc", "val/scratch_acc", "val/teacher_acc", "train/loss_kd"} <= set(cli.trainer.callback_metrics)
    assert not state_dict_equal(model.scratch.state_dict(), model.student.state_dict())  # trained apart
