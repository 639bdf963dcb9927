"""Adversarial attacks and defences (lecture 10): invariants of the pure attacks and defences, then the lectures."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lecture_modules.adversarial import core
from lecture_modules.adversarial.defences import (
    BitDepth,
    InputTransformDefence,
    JpegCompression,
    MedianSmoothing,
    make_defence,
)
from tests.helpers import (
    CONFIGS,
    CPU,
    QUICK,
    SMOKE,
    crash_after_checkpoint,
    digits_8x8,
    run_cli,
    run_cli_subprocess,
    state_dict_equal,
    with_checkpoints,
)

LINF_SIGN_ATTACKS = ["fgsm", "ifgsm", "pgd", "mifgsm", "difgsm"]


@pytest.fixture(scope="module")
def trained():
    """A small MLP trained on the 8x8 digits (pixels standardised by the model's Normalize), in under a second."""
    torch.manual_seed(0)
    x, y = digits_8x8()
    normalize = core.Normalize(x.mean().reshape(1), x.std().reshape(1))
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Dropout(0.1), nn.Linear(64, 10))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(150):
        optimizer.zero_grad()
        F.cross_entropy(model(normalize(x)), y).backward()
        optimizer.step()
    optimizer.zero_grad()  # no .grad left: the attacks must not create any
    model.eval()
    return model, normalize, x[:128], y[:128]


def _run(name: str, model, x, y, normalize, eps: float = 0.1, **kw) -> torch.Tensor:
    fn, norm = core.ATTACKS[name]
    if name == "cw":
        x_adv = fn(model, x, y, normalize=normalize, steps=30, search_steps=2, lr=0.1, **kw)
        return core.within_budget(x, x_adv, eps, norm)
    if name == "pgd_l2":
        kw["norm"] = "l2"
    return fn(model, x, y, eps=eps, normalize=normalize, **kw)


def _loss(model, x, y, normalize) -> torch.Tensor:
    with torch.no_grad():
        return F.cross_entropy(model(normalize(x)), y, reduction="none")


# ------------------------------------------------------------------------------------------------ the budget
@pytest.mark.parametrize("name", sorted(core.ATTACKS))
def test_every_attack_respects_its_budget_and_the_box_in_pixel_space(trained, name):
    model, normalize, x, y = trained
    eps = 0.1 if core.ATTACKS[name][1] == "linf" else 0.8
    x_adv = _run(name, model, x, y, normalize, eps=eps)
    norm = core.ATTACKS[name][1]
    sizes = core.perturbation_norm(x_adv - x, norm)
    assert sizes.max() <= eps + 1e-6, f"{name} exceeds its {norm} budget: {sizes.max():.6f} > {eps}"
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    # the budget is in pixels, not in the model's standardised units (std here is about 0.4, so a budget applied
    # after normalisation would move pixels by only 0.4 eps)
    if name in LINF_SIGN_ATTACKS:
        assert sizes.max() >= 0.99 * eps
    # round trip: standardise and map back, still the same images inside the box
    back = normalize.inverse(normalize(x_adv))
    assert torch.allclose(back, x_adv, atol=1e-6) and back.min() >= 0 and back.max() <= 1


def test_l2_projection_rescales_only_the_samples_outside_the_ball():
    delta = torch.stack([torch.full((1, 2, 2), 0.1), torch.full((1, 2, 2), 1.0)])  # L2 norms 0.2 and 2.0
    projected = core.project(delta, 0.5, "l2")
    assert torch.equal(projected[0], delta[0])
    assert core.perturbation_norm(projected, "l2")[1].item() == pytest.approx(0.5)
    assert torch.allclose(projected[1] / projected[1].norm(), delta[1] / delta[1].norm())


# ------------------------------------------------------------------------------------------ attack geometry
@pytest.mark.parametrize("label, sign", [(0, 1.0), (1, -1.0)])
def test_fgsm_on_a_linear_model_moves_exactly_along_sign_w(label, sign):
    torch.manual_seed(0)
    w = torch.randn(16)
    w[w.abs() < 0.05] = 0.1  # no zero weights: sign(w) is +-1 everywhere
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
    with torch.no_grad():
        model[1].weight.copy_(torch.stack([torch.zeros(16), w]))  # logit 1 - logit 0 = w . x
        model[1].bias.zero_()
    x = 0.2 + 0.6 * torch.rand(3, 1, 4, 4)  # inside the box by more than eps: no clipping
    y = torch.full((3,), label)
    normalize = core.Normalize([0.5], [0.25])
    x_adv = core.fgsm(model, x, y, eps=0.05, normalize=normalize)
    expected = sign * 0.05 * w.sign().reshape(1, 1, 4, 4).expand_as(x)  # y = 0 raises w.x, y = 1 lowers it
    assert torch.allclose(x_adv - x, expected, atol=1e-6)


def test_more_restarts_never_lower_the_loss_of_any_sample(trained):
    model, normalize, x, y = trained
    runs = {}
    for restarts in (1, 3):
        generator = torch.Generator().manual_seed(0)  # the first restart is the same run in both
        x_adv = core.pgd(model, x, y, eps=0.05, steps=3, restarts=restarts, normalize=normalize, generator=generator)
        runs[restarts] = _loss(model, x_adv, y, normalize)
    assert (runs[3] >= runs[1] - 1e-6).all()
    assert (runs[3] > runs[1] + 1e-4).any()  # the extra restarts found something: the check has teeth


def test_more_pgd_steps_raise_the_mean_loss(trained):
    model, normalize, x, y = trained
    losses = []
    for steps in (1, 5, 20):
        generator = torch.Generator().manual_seed(0)
        x_adv = core.pgd(model, x, y, eps=0.05, steps=steps, alpha=0.01, normalize=normalize, generator=generator)
        losses.append(_loss(model, x_adv, y, normalize).mean().item())
    clean = _loss(model, x, y, normalize).mean().item()
    assert clean < losses[0] < losses[1] < losses[2]


def test_eps_zero_gives_clean_accuracy_in_eval_mode_and_restores_train_mode():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.BatchNorm1d(32), nn.Dropout(0.5), nn.Linear(32, 10))
    model.train()
    x, y = digits_8x8()
    x, y = x[:64], y[:64]
    running = model[2].running_mean.clone()
    for name in LINF_SIGN_ATTACKS:
        x_adv = core.ATTACKS[name][0](model, x, y, eps=0.0)
        assert torch.equal(x_adv, x), name
        assert model.training and all(m.training for m in model.modules()), f"{name} left the model in eval mode"
    assert torch.equal(model[2].running_mean, running)  # the attack ran in eval mode: no batch-norm update
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x).argmax(1), model(core.pgd(model, x, y, eps=0.0)).argmax(1))


@pytest.mark.parametrize("name", ["pgd", "mifgsm", "pgd_l2", "cw"])
def test_a_targeted_attack_raises_the_target_logit(trained, name):
    model, normalize, x, y = trained
    target = (y + 1) % 10
    eps = 0.1 if core.ATTACKS[name][1] == "linf" else 2.0
    x_adv = _run(name, model, x, target, normalize, eps=eps, targeted=True)
    with torch.no_grad():
        before = model(normalize(x)).gather(1, target[:, None])
        after = model(normalize(x_adv)).gather(1, target[:, None])
    assert after.mean() > before.mean() + 1.0 and (after > before).float().mean() > 0.5


@pytest.mark.parametrize("name", sorted(core.ATTACKS))
def test_the_victims_weights_gradients_and_mode_are_unchanged(trained, name):
    model, normalize, x, y = trained
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    _run(name, model, x[:16], y[:16], normalize)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())
    assert model.training
    model.eval()


def test_momentum_zero_is_i_fgsm_and_diversity_zero_is_mi_fgsm(trained):
    model, normalize, x, y = trained
    plain = core.ifgsm(model, x, y, eps=0.05, steps=4, normalize=normalize)
    assert torch.equal(core.mifgsm(model, x, y, eps=0.05, steps=4, decay=0.0, normalize=normalize), plain)
    mi = core.mifgsm(model, x, y, eps=0.05, steps=4, normalize=normalize)
    assert not torch.equal(mi, plain)
    assert torch.equal(core.difgsm(model, x, y, eps=0.05, steps=4, diversity_prob=0.0, normalize=normalize), mi)


def test_input_diversity_keeps_the_size_and_follows_its_generator():
    x = torch.rand(2, 1, 16, 16)
    outs = [core.input_diversity(x, 1.0, 0.8, torch.Generator().manual_seed(s)) for s in (0, 0, 1, 2, 3)]
    assert all(o.shape == x.shape for o in outs) and torch.equal(outs[0], outs[1])
    assert any(not torch.equal(o, outs[0]) for o in outs[2:]) and not torch.equal(outs[0], x)
    assert torch.equal(core.input_diversity(x, 0.0), x)


def test_ensembles_average_logits_or_losses(trained):
    model, normalize, x, y = trained
    single = core.pgd(model, x, y, eps=0.05, normalize=normalize, generator=torch.Generator().manual_seed(0))
    for mode in ("logits", "loss"):
        twice = core.Ensemble([model, model], mode=mode)
        same = core.pgd(twice, x, y, eps=0.05, normalize=normalize, generator=torch.Generator().manual_seed(0))
        assert torch.allclose(same, single, atol=1e-6), mode
    other = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    z = normalize(x)
    by_loss = core.attack_loss(core.Ensemble([model, other], mode="loss"), z, y)
    manual = (F.cross_entropy(model(z), y, reduction="none") + F.cross_entropy(other(z), y, reduction="none")) / 2
    assert torch.allclose(by_loss, manual)
    by_logits = core.attack_loss(core.Ensemble([model, other]), z, y)
    assert torch.allclose(by_logits, F.cross_entropy((model(z) + other(z)) / 2, y, reduction="none"))


def test_carlini_wagner_finds_small_successful_perturbations(trained):
    model, normalize, x, y = trained
    x_adv = core.carlini_wagner_l2(model, x, y, steps=50, search_steps=3, normalize=normalize)
    with torch.no_grad():
        fooled = model(normalize(x_adv)).argmax(1) != y
        clean_wrong = model(normalize(x)).argmax(1) != y
    sizes = core.perturbation_norm(x_adv - x, "l2")
    assert fooled.float().mean() > 0.8
    assert torch.equal(sizes[~fooled], torch.zeros_like(sizes[~fooled]))  # failures return x itself
    assert sizes[fooled & ~clean_wrong].median() < 2.0  # small: the 8x8 image itself has L2 norm about 4


def test_uint8_rounding_is_what_a_png_keeps():
    x = torch.rand(4, 3, 5, 5)
    q = core.quantize_uint8(x)
    assert torch.equal(q * 255, torch.round(q * 255)) and (q - x).abs().max() <= 0.5 / 255 + 1e-7
    assert torch.equal(core.quantize_uint8(q), q)


# ------------------------------------------------------------------------------------------------- defences
def test_each_defence_is_marked_differentiable_or_not_and_bpda_restores_a_gradient(trained):
    model, normalize, x, y = trained
    x = x[:8].requires_grad_(True)
    for transform, differentiable in ((JpegCompression(50), False), (BitDepth(3), False), (MedianSmoothing(3), True)):
        out = transform(x.detach())
        assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
        defended = InputTransformDefence(model, transform, normalize=normalize)
        assert defended.differentiable is differentiable
        loss = F.cross_entropy(defended(x), y[:8])
        grad = torch.autograd.grad(loss, x, allow_unused=True)[0] if loss.requires_grad else None
        has_gradient = grad is not None and bool(grad.abs().sum() > 0)
        assert has_gradient is differentiable, type(transform).__name__
        bpda = InputTransformDefence(model, transform, normalize=normalize, bpda=True)
        assert bpda.differentiable and bpda.mode == "bpda"
        (bpda_grad,) = torch.autograd.grad(F.cross_entropy(bpda(x), y[:8]), x)
        assert bpda_grad.abs().sum() > 0
        assert torch.allclose(bpda(x), defended(x))  # the same defence forward


def test_defences_change_images_as_their_strength_says():
    x = torch.rand(2, 1, 8, 8)
    assert torch.equal(BitDepth(1)(x), (x > 0.5).float())
    assert len(torch.unique(BitDepth(2)(x))) <= 4
    smooth = torch.zeros(1, 1, 5, 5)
    smooth[0, 0, 2, 2] = 1.0  # one bright pixel: a 3x3 median removes it
    assert torch.equal(MedianSmoothing(3)(smooth), torch.zeros_like(smooth))
    err = {q: (JpegCompression(q)(x) - x).abs().mean() for q in (10, 95)}
    assert err[95] < err[10]
    with pytest.raises(ValueError, match="unknown defence 'blur'"):
        make_defence("blur", 3)


# ------------------------------------------------------------------------------------------------- lectures
PGD_AT, FAST_AT, ATTACK_EVAL = (str(CONFIGS / f"{name}.yaml") for name in ("pgd_at", "fast_at", "attack_eval"))
OFFLINE = ["--trainer.logger", "false", *QUICK]


def test_image_data_module_says_how_it_standardises():
    from datamodules.image import ImageDataModule

    data = ImageDataModule(image_size=16)
    data.setup("fit")
    mean, std = data.pixel_stats
    x = data.train_dataloader().dataset.tensors[0]
    pixels = x * std + mean
    assert mean.shape == (1, 1, 1, 1) and pixels.min() >= -1e-5 and pixels.max() <= 1 + 1e-5
    assert ImageDataModule(normalize=False).pixel_stats is None


@pytest.mark.parametrize("config", [PGD_AT, FAST_AT])
def test_adversarial_training_configs_run_and_log_clean_and_robust_accuracy(config):
    cli = run_cli("fit", "--config", config, "--config", SMOKE)
    metrics = cli.trainer.callback_metrics
    assert {"train/loss", "train/adv_acc", "val/acc", "val/robust_acc"} <= set(metrics)
    mean, std = cli.datamodule.pixel_stats  # the budget is in pixels: the lecture took the data's standardisation
    assert torch.equal(cli.model.normalize.mean, mean) and torch.equal(cli.model.normalize.std, std)
    assert cli.model.hparams.steps == (1 if config == FAST_AT else 7)


def test_bad_settings_name_their_config_keys():
    from datamodules.errors import SettingError
    from lecture_modules.adversarial.attack_eval import AttackEvaluation
    from lecture_modules.adversarial.pgd_at import PGDAdversarialTraining

    with pytest.raises(SettingError, match=r"model\.init_args\.epsilon must be a finite number >= 0.*-0\.1"):
        PGDAdversarialTraining(epsilon=-0.1)
    with pytest.raises(SettingError, match=r"model\.init_args\.eval_steps must be >= 1.*got 0"):
        PGDAdversarialTraining(eval_steps=0)
    with pytest.raises(
        SettingError, match=r"model\.init_args\.attacks: unknown attack\(s\) \['deepfool'\]; known: fgsm"
    ):
        AttackEvaluation(attacks=["pgd", "deepfool"])
    with pytest.raises(SettingError, match=r"model\.init_args\.epsilons must list budgets >= 0"):
        AttackEvaluation(epsilons=[0.1, -1.0])
    with pytest.raises(SettingError, match=r"model\.init_args\.steps must be >= 1"):
        AttackEvaluation(steps=0)
    with pytest.raises(SettingError, match=r"model\.init_args\.defences\[0\] is 'jpeg'; write <name>:<strength>"):
        AttackEvaluation(defences=["jpeg"])
    with pytest.raises(SettingError, match=r"model\.init_args\.transfer_attack must be one of"):
        AttackEvaluation(transfer_attack="cw")
    ckpt = "builtin:digits_cnn"
    with pytest.raises(SettingError, match=r"model\.init_args\.victims\[0\]: give mean and std together"):
        AttackEvaluation(victims=[{"name": "a", "path": ckpt, "mean": [0.5]}])
    with pytest.raises(SettingError, match=r"model\.init_args\.proxies\[0\]\.mean/std are for a checkpoint"):
        AttackEvaluation(proxies=[{"name": "b", "mean": [0.5], "std": [0.2]}])
    with pytest.raises(SettingError, match=r"model\.init_args\.victims\[0\]\.std must be positive.*\[0\.0\]"):
        AttackEvaluation(victims=[{"name": "a", "path": ckpt, "mean": [0.5], "std": [0.0]}])
    with pytest.raises(SettingError, match=r"victims\[0\]\.mean and \.std need one value per image channel \(1\)"):
        AttackEvaluation(victims=[{"name": "a", "path": ckpt, "mean": [0.5, 0.5, 0.5], "std": [0.2, 0.2, 0.2]}])


def test_a_checkpoint_trained_with_other_statistics_sees_its_own_inputs_and_pixel_gradients(tmp_path):
    """Zoo models with their own mean/std: the DataModule's standardised batch is mapped to each model's own
    standardisation (affine, no clamp), so logits and pixel gradients equal those of the model fed its own inputs,
    also at black pixels; a model without mean/std gets the DataModule's inputs unchanged."""
    from lecture_modules.adversarial.attack_eval import AttackEvaluation
    from lecture_modules.checkpoints import load_lecture

    net = {"kind": "cnn", "widths": [4, 8]}
    path = _classifier_checkpoint(tmp_path / "own.ckpt", net, input_shape=(1, 8, 8))
    module = AttackEvaluation(
        victims=[{"name": "own", "path": path, "mean": [0.5], "std": [0.25]}, {"name": "data", "path": path}],
    )
    module.setup("test")  # no Trainer: the DataModule's statistics are set by hand below
    module.normalize.mean.fill_(0.2)
    module.normalize.std.fill_(0.3)
    raw = load_lecture(path).eval()
    x01 = torch.rand(3, 1, 8, 8)
    x01[:, :, :2] = 0.0  # black rows: a clamped round trip would stop the gradient there
    x01.requires_grad_(True)
    ours = module.model("own")(module.normalize(x01))
    theirs = raw.logits((x01 - 0.5) / 0.25)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
    (g_ours,) = torch.autograd.grad(ours[:, 0].sum(), x01)
    (g_theirs,) = torch.autograd.grad(theirs[:, 0].sum(), x01)
    torch.testing.assert_close(g_ours, g_theirs, rtol=1e-4, atol=1e-6)
    assert g_ours[:, :, :2].abs().sum() > 0
    plain = module.model("data")(module.normalize(x01))
    torch.testing.assert_close(plain, raw.logits((x01 - 0.2) / 0.3), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(plain, ours)  # the two standardisations really differ


def test_a_bad_epsilon_on_the_command_line_ends_in_one_line(capsys):
    from cli import main

    assert main(["fit", "--config", PGD_AT, "--config", SMOKE, "--model.init_args.epsilon", "-1"]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "model.init_args.epsilon" in errors[0] and "Traceback" not in err


def test_attack_evaluation_fits_its_zoo_and_tests_every_attack_transfer_and_defence(tmp_path):
    args = [
        "fit", "--config", ATTACK_EVAL, *OFFLINE, "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "3",
        "--trainer.limit_val_batches", "1", "--trainer.callbacks=[]", "--trainer.default_root_dir", str(tmp_path),
        "--data.init_args.eval_batch_size", "16",
        "--model.init_args.attacks", "[fgsm, pgd, cw]", "--model.init_args.epsilons", "[0, 0.1]",
        "--model.init_args.l2_epsilons", "[1.0]", "--model.init_args.steps", "2", "--model.init_args.cw_steps", "3",
        "--model.init_args.defences", "[bit_depth:3]",
    ]  # fmt: skip
    cli = run_cli(*args)
    val = cli.trainer.callback_metrics
    assert {"val/acc", "val/robust_acc", "val/transfer_acc", "val/acc_mlp_victim", "val/acc_cnn_proxy"} <= set(val)
    assert float(val["val/acc_digits_cnn"]) > 0.9  # the shipped CNN, loaded through load_lecture
    cli.trainer.test(cli.model, datamodule=cli.datamodule, verbose=False)
    m = {k: float(v) for k, v in cli.trainer.callback_metrics.items() if k.startswith("test/")}
    assert m["test/robust_acc_fgsm_eps0"] == m["test/acc"] == m["test/acc_digits_cnn"]  # eps = 0 is clean
    assert m["test/robust_acc_pgd_eps0.1"] <= m["test/robust_acc_fgsm_eps0.1"] + 0.25
    assert m["test/robust_acc"] <= min(m["test/robust_acc_fgsm_eps0.1"], m["test/robust_acc_pgd_eps0.1"])
    assert {"test/robust_acc_pgd_eps0.1_uint8", "test/robust_acc_cw_eps1_uint8"} <= set(m)  # after PNG rounding
    # success rate: of the images right before the attack, the fraction flipped (untargeted)
    acc, robust, success = m["test/acc"], m["test/robust_acc_pgd_eps0.1"], m["test/success_rate_pgd_eps0.1"]
    assert 1 - robust / acc - 1e-6 <= success <= (1 - robust) / acc + 1e-6 and success > 0
    assert m["test/success_rate_fgsm_eps0"] == 0.0 and "test/success_rate_cw_eps1_uint8" in m
    assert m["test/success_rate"] >= max(m["test/success_rate_fgsm_eps0.1"], success) - 1e-6
    rows, victims = ("cnn_proxy", "mlp_proxy", "ensemble"), ("digits_cnn", "mlp_victim")
    assert {f"test/transfer_{k}_{r}_to_{v}" for k in ("acc", "success_rate") for r in rows for v in victims} <= set(m)
    assert {f"test/defence_bit_depth3_digits_cnn_{k}" for k in ("acc", "robust_acc_masked", "robust_acc_bpda")} <= set(
        m
    )
    figures = {p.name.split("-step")[0] for p in (tmp_path / "figures").glob("*.png")}
    assert {"test_robust_acc_vs_eps", "test_transfer_matrix", "test_perturbation_examples"} <= figures


def test_attack_evaluation_refuses_to_test_networks_it_has_not_trained(tmp_path):
    from datamodules.errors import SettingError

    with pytest.raises(SettingError, match="run fit first, or test with --ckpt_path"):
        run_cli(
            "test", "--config", ATTACK_EVAL, *OFFLINE, "--trainer.callbacks=[]", "--trainer.limit_test_batches", "1",
            "--trainer.default_root_dir", str(tmp_path),
        )  # fmt: skip


def test_fast_adversarial_training_resumes_exactly(tmp_path):
    """The random starts come from the global RNG, which the checkpoint carries: a run interrupted after step 3 and
    resumed ends with the weights of one that never stopped."""
    base = [
        "fit", "--config", FAST_AT, "--config", CPU, *OFFLINE, "--trainer.callbacks=[]", "--trainer.max_steps", "6",
        "--trainer.limit_val_batches", "0", "--data.init_args.limit_train_samples", "256",
        "--model.init_args.net.dropout", "0.2",
    ]  # fmt: skip
    full = run_cli(*base, "--trainer.default_root_dir", str(tmp_path / "full"))
    reference = {k: v.clone() for k, v in full.model.state_dict().items()}
    ckpt = crash_after_checkpoint(base, 3, tmp_path / "ckpt")
    resumed = run_cli(  # another seed: only the checkpoint can bring this process back onto the full run
        *base, "--seed_everything", "123", "--trainer.default_root_dir", str(tmp_path / "resumed"),
        "--ckpt_path", str(ckpt),
    )  # fmt: skip
    assert resumed.trainer.global_step == 6
    assert state_dict_equal(resumed.model.state_dict(), reference), "resumed weights differ from the full run"
    assert torch.load(ckpt, weights_only=True)["hyper_parameters"]["net"]["kind"] == "cnn"


@pytest.mark.slow
def test_ddp_adversarial_training_agrees_across_ranks_and_the_hw10_flow_writes_each_image_once(tmp_path):
    import json

    result = run_cli_subprocess(
        "fit", "--config", FAST_AT, "--trainer.accelerator", "cpu", "--trainer.strategy", "ddp",
        "--trainer.devices", "2", *OFFLINE, "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "3",
        "--trainer.callbacks+=tests.helpers.MetricsDump", "--trainer.callbacks.out_dir", str(tmp_path / "dump"),
        "--trainer.default_root_dir", str(tmp_path), cwd=tmp_path, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    rank0, rank1 = (json.loads((tmp_path / "dump" / f"fit-rank{r}.json").read_text()) for r in (0, 1))
    assert {"val/acc", "val/robust_acc"} <= set(rank0) and rank0 == rank1
    _hw10_flow_under_ddp_writes_each_image_once(tmp_path / "hw10")


def _hw10_flow_under_ddp_writes_each_image_once(tmp_path) -> None:
    """HW10's predict on 2 processes: 5 images (an odd count: Lightning's predict sampler splits them 3 + 2 with no
    repeat), each written once under its name into one folder that rank 0 named, one archive holding all five, and
    the accuracy summary counts all five."""
    import tarfile

    from PIL import Image

    sources = _write_hw10_folder(tmp_path / "images")
    Image.fromarray(sources["cat/cat1.png"]).save(tmp_path / "images" / "cat" / "cat3.png")
    proxy = [{"name": "cnn", "path": _classifier_checkpoint(tmp_path / "cnn.ckpt", {"kind": "cnn", "widths": [4]})}]
    result = run_cli_subprocess(
        "predict", "--config", HW10, "--trainer.accelerator", "cpu", "--trainer.strategy", "ddp",
        "--trainer.devices", "2", "--trainer.logger", "false", "--data.init_args.root", str(tmp_path / "images"),
        "--data.init_args.batch_size", "2", "--model.init_args.proxies", str(proxy), "--model.init_args.steps", "2",
        "--trainer.default_root_dir", str(tmp_path / "run"), cwd=tmp_path, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    names = sorted([*sources, "cat/cat3.png"])
    out = tmp_path / "run" / "adversarial"
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == names
    assert sorted(p.name for p in (tmp_path / "run").iterdir() if p.name.startswith("adversarial")) == [
        "adversarial", "adversarial.tgz"
    ]  # fmt: skip
    with tarfile.open(tmp_path / "run" / "adversarial.tgz") as tar:
        assert sorted(tar.getnames()) == names
    assert re.search(r"wrote 5 adversarial images", result.stderr + result.stdout)


# ------------------------------------------------------------------------------------------ success rate
def test_attack_success_counts_only_the_images_the_victim_got_right():
    y = torch.tensor([0, 1, 2, 3, 4, 5])
    clean = torch.tensor([0, 1, 2, 3, 0, 0])  # the last two were wrong before any attack: not eligible
    adv = torch.tensor([0, 2, 3, 3, 4, 1])  # flips 1 and 2; image 4 becomes right, image 5 stays wrong
    succeeded, eligible = core.attack_success(clean, adv, y)
    assert eligible.tolist() == [True, True, True, True, False, False]
    assert succeeded.tolist() == [False, True, True, False, False, False]
    assert succeeded[eligible].float().mean() == 0.5  # not 1 - robust accuracy (4/6 wrong) nor 3/6
    target = (y + 1) % 10  # targeted: only image 2's flip (to 3) reaches its target; image 1 went to 2 = target
    succeeded, _ = core.attack_success(clean, adv, y, target)
    assert succeeded.tolist() == [False, True, True, False, False, False]
    succeeded, _ = core.attack_success(clean, torch.tensor([0, 3, 3, 3, 5, 6]), y, target)
    assert succeeded.tolist() == [False, False, True, False, False, False]  # 1 -> 3 flips but misses target 2


def test_uint8_within_keeps_the_budget_where_plain_rounding_steps_over():
    source = torch.tensor([[[[100.0, 100.0, 0.0, 255.0]]]])  # (1, 1, 1, 4) grey levels
    x_adv = (source + torch.tensor([25.5, -25.5, -3.0, 9.0])) / 255  # eps 0.1 = 25.5 levels, at its edges
    plain = torch.round(x_adv.clamp(0, 1) * 255)
    assert (plain - source).abs().max() == 26  # plain rounding leaves the budget
    ours = core.to_uint8_within(x_adv, source.to(torch.uint8), 0.1)
    assert ours.dtype == torch.uint8 and ours.flatten().tolist() == [125, 75, 0, 255]


# ------------------------------------------------------------------------------------------ HW10 flow
HW10 = str(CONFIGS / "attack_hw10.yaml")


def _write_hw10_folder(root, size: int = 32) -> dict[str, np.ndarray]:
    """HW10's layout, 2 classes x 2 images: <root>/<class>/<class><n>.png, 32x32 RGB."""
    from PIL import Image

    rng, images = np.random.default_rng(0), {}
    for name in ("cat", "dog"):
        (root / name).mkdir(parents=True)
        for n in (1, 2):
            images[f"{name}/{name}{n}.png"] = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
            Image.fromarray(images[f"{name}/{name}{n}.png"]).save(root / name / f"{name}{n}.png")
    return images


def _classifier_checkpoint(path, net: dict, input_shape=(3, 32, 32), num_classes: int = 10) -> str:
    """A classification lecture's checkpoint as cli.py writes it (hyper-parameters with _class_path, weights)."""
    from lecture_modules.classification import Classification

    model = Classification(num_classes=num_classes, input_shape=input_shape, net=net)
    hparams = {**model.hparams, "_class_path": "lecture_modules.classification.Classification"}
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": hparams}, path)
    return str(path)


def test_hw10_flow_writes_pngs_within_eps_under_their_names_and_a_tgz_never_overwriting(tmp_path):
    import tarfile

    from PIL import Image

    sources = _write_hw10_folder(tmp_path / "hw10")
    torch.manual_seed(0)
    proxies = [
        {"name": "cnn", "path": _classifier_checkpoint(tmp_path / "cnn.ckpt", {"kind": "cnn", "widths": [4, 8]})},
        {"name": "mlp", "path": _classifier_checkpoint(tmp_path / "mlp.ckpt", {"kind": "mlp", "widths": [16]})},
    ]
    args = [
        "predict", "--config", HW10, *QUICK, "--data.init_args.root", str(tmp_path / "hw10"),
        "--model.init_args.proxies", str(proxies), "--model.init_args.epsilon", "0.1",
        "--model.init_args.steps", "2", "--trainer.default_root_dir", str(tmp_path / "run"),
    ]  # fmt: skip
    run_cli(*args)  # eps 0.1 is 25.5 grey levels: plain rounding could write 26
    out = tmp_path / "run" / "adversarial"
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert written == sorted(sources)
    moved = 0
    for name, source in sources.items():
        with Image.open(out / name) as img:
            assert img.mode == "RGB" and img.size == (32, 32)
            adv = np.asarray(img).astype(int)
        assert np.abs(adv - source.astype(int)).max() <= 25  # within eps = 0.1 after the uint8 rounding
        moved = max(moved, int(np.abs(adv - source.astype(int)).max()))
    assert moved == 25  # the sign attack used the whole budget
    with tarfile.open(tmp_path / "run" / "adversarial.tgz") as tar:
        assert sorted(tar.getnames()) == sorted(sources)
    first = {name: (out / name).read_bytes() for name in sources}
    run_cli(*args)  # the same run folder again: a new folder and archive, the first untouched
    assert sorted(p.name for p in (tmp_path / "run").glob("adversarial*")) == [
        "adversarial", "adversarial-1", "adversarial-1.tgz", "adversarial.tgz"
    ]  # fmt: skip
    assert all((out / name).read_bytes() == data for name, data in first.items())


@pytest.mark.parametrize(
    "damage, named",
    [
        (lambda root: (root / "dog" / "notes.txt").write_text("not an image"), "dog/notes.txt"),
        (lambda root: (root / "bird").mkdir(), "bird"),
        (lambda root: (root / "cat" / "cat3.png").write_bytes(b"\x89PNG broken"), "cat/cat3.png"),
        (lambda root: (root / "readme.md").write_text("x"), "readme.md"),
    ],
    ids=["non-image file", "class folder without images", "corrupt png", "loose file"],
)
def test_a_bad_hw10_folder_names_the_file(tmp_path, damage, named):
    from datamodules.attack_folder import read_attack_folder
    from datamodules.errors import DataFileError

    _write_hw10_folder(tmp_path / "hw10", size=4)
    damage(tmp_path / "hw10")
    with pytest.raises(DataFileError, match=re.escape(str(tmp_path / "hw10" / named))):
        read_attack_folder(tmp_path / "hw10")


def test_a_bad_hw10_folder_ends_in_one_line(tmp_path, capsys):
    from cli import main

    _write_hw10_folder(tmp_path / "hw10", size=4)
    (tmp_path / "hw10" / "dog" / "notes.txt").write_text("x")
    common = ["predict", "--config", HW10, "--model.init_args.proxies", "[{name: p, path: builtin:digits_cnn}]"]
    for root, named in ((tmp_path / "missing", "data.init_args.root does not exist"), (tmp_path / "hw10", "notes.txt")):
        assert main([*common, "--data.init_args.root", str(root)]) == 2
        err = capsys.readouterr().err
        errors = [line for line in err.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and named in errors[0] and "Traceback" not in err


# ------------------------------------------------------------------------------------------ real formats
def test_builtin_checkpoint_names_resolve_in_the_shared_layer():
    from lecture_modules.checkpoints import CheckpointNotFoundError, load_lecture, resolve_checkpoint_path

    assert resolve_checkpoint_path("builtin:digits_cnn").is_file()
    assert load_lecture("builtin:digits_cnn").hparams.input_shape == (1, 16, 16)
    with pytest.raises(CheckpointNotFoundError, match=r"unknown built-in checkpoint 'builtin:nope'; .*digits_cnn"):
        resolve_checkpoint_path("builtin:nope")


def test_attack_eval_attacks_a_pgd_at_checkpoint_and_scores_targeted_success(tmp_path):
    """A pgd_at checkpoint from a short fit becomes attack_eval's victim through load_lecture; its clean accuracy and
    targeted success rate equal what the checkpoint and the attack give directly."""
    from lecture_modules.checkpoints import load_lecture

    run_cli(
        "fit", "--config", PGD_AT, "--config", CPU, *OFFLINE, "--trainer.callbacks=[]",
        *with_checkpoints(tmp_path / "ckpt"), "--trainer.max_steps", "8", "--trainer.limit_val_batches", "0",
        "--model.init_args.steps", "1", "--model.init_args.epsilon", "0.02", "--model.init_args.net",
        "{kind: mlp, widths: [64]}", "--optimizer.init_args.lr", "0.01",
        "--trainer.default_root_dir", str(tmp_path / "fit"),
    )  # fmt: skip
    [ckpt] = (tmp_path / "ckpt").glob("*.ckpt")
    cli = run_cli(
        "test", "--config", ATTACK_EVAL, *OFFLINE, "--trainer.callbacks=[]", "--trainer.limit_test_batches", "1",
        "--data.init_args.eval_batch_size", "32", "--model.init_args.victims", f"[{{name: at, path: {ckpt}}}]",
        "--model.init_args.proxies", "[]", "--model.init_args.defences", "[]", "--model.init_args.attacks", "[pgd]",
        "--model.init_args.epsilons", "[0, 0.3]", "--model.init_args.steps", "3", "--model.init_args.targeted", "true",
        "--trainer.default_root_dir", str(tmp_path / "test"),
    )  # fmt: skip
    m = {k: float(v) for k, v in cli.trainer.callback_metrics.items()}
    x, y = next(iter(cli.datamodule.test_dataloader()))
    victim = load_lecture(ckpt)
    with torch.no_grad():
        clean = victim.logits(x).argmax(-1)
    assert m["test/acc_at"] == pytest.approx((clean == y).float().mean().item())
    normalize = cli.model.normalize
    target = (y + 1) % 10
    x01 = normalize.inverse(x)
    x_adv = core.pgd(victim.net, x01, target, eps=0.3, steps=3, targeted=True, normalize=normalize,
                     generator=torch.Generator().manual_seed(0))  # fmt: skip
    with torch.no_grad():
        adv = victim.logits(normalize(x_adv)).argmax(-1)
    expected = (adv == target)[clean == y].float().mean().item()
    assert m["test/success_rate_pgd_eps0.3"] == pytest.approx(expected) and expected > 0
    assert m["test/success_rate_pgd_eps0"] == 0.0 and m["test/robust_acc_pgd_eps0"] == m["test/acc"]


def _write_idx(path, array: np.ndarray) -> None:
    """An IDX file as MNIST's: 00 00 08 ndim, big-endian sizes, uint8 values (gzipped when the name says .gz)."""
    import gzip
    import struct

    payload = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    payload += array.astype(np.uint8).tobytes()
    with (gzip.open if str(path).endswith(".gz") else open)(path, "wb") as fh:
        fh.write(payload)


def test_fast_at_trains_on_mnist_idx_files(tmp_path):
    rng = np.random.default_rng(0)
    for prefix, n, suffix in (("train", 40, ".gz"), ("t10k", 20, "")):
        _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte{suffix}", rng.integers(0, 256, (n, 28, 28)))
        _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte{suffix}", np.arange(n) % 10)
    cli = run_cli(
        "fit", "--config", FAST_AT, "--config", SMOKE, "--data.init_args.source.class_path",
        "datamodules.sources.IDXSource", "--data.init_args.source.init_args.root", str(tmp_path),
        "--data.init_args.image_size", "28", "--trainer.default_root_dir", str(tmp_path / "run"),
    )  # fmt: skip
    assert cli.datamodule.input_shape == (1, 28, 28) and cli.model.hparams.input_shape == (1, 28, 28)
    assert len(cli.datamodule.test_dataloader().dataset) == 20  # t10k is the test split
    assert {"train/loss", "val/acc", "val/robust_acc"} <= set(cli.trainer.callback_metrics)
    assert torch.equal(cli.model.normalize.mean, cli.datamodule.pixel_stats[0])


# ------------------------------------------------------------------------- parity with torchattacks 3.5.1
# torchattacks' ``set_normalization_used(mean, std)`` makes an attack take and return *standardised* images (it
# un-standardises them, attacks in [0, 1] and standardises the result); ours take and return [0, 1] pixels. So the
# reference is called on ``normalize(x)`` and its output mapped back with ``* std + mean``; the round trip costs a
# few float32 ulps, hence the tolerance. Its losses are batch means, ours sums of per-sample losses: a positive
# factor that the sign steps (and MI-FGSM's per-sample normalisation) remove.
# One difference is bookkeeping, not definition: we keep delta and evaluate x + delta, torchattacks keeps x_adv.
# The points differ by float32 rounding, which on a trained CNN with max pooling can flip sign(g) where a gradient
# component is near zero (PGD-40 on the digits victim CNN: 0.43% of pixels; see benchmarks/adversarial.py
# --throughput); on this small untrained CNN nothing flips, so the comparisons below can be tight.
PARITY_MEAN, PARITY_STD = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)
PARITY_ATOL = 1e-6


@pytest.fixture(scope="module")
def parity():
    """A tiny fixed (seeded, untrained) CNN on 3 x 8 x 8 images, its per-channel standardisation, a batch."""
    torchattacks = pytest.importorskip("torchattacks")
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, stride=2),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(8 * 4 * 4, 10),
    ).eval()
    x, y = torch.rand(16, 3, 8, 8), torch.randint(0, 10, (16,))
    return torchattacks, net, core.Normalize(PARITY_MEAN, PARITY_STD), x, y


def _reference(attack, normalize, x, y, seed: int | None = None) -> torch.Tensor:
    """A torchattacks attack with the same standardisation, in and out in [0, 1] pixels (see above)."""
    attack.set_normalization_used(PARITY_MEAN, PARITY_STD)
    if seed is not None:
        torch.manual_seed(seed)  # torchattacks draws from the global generator
    return attack(normalize(x), y) * normalize.std + normalize.mean


def test_fgsm_bim_pgd_and_mifgsm_equal_torchattacks(parity):
    ta, net, normalize, x, y = parity
    eps, alpha, steps = 0.05, 0.01, 10
    pairs = {
        "FGSM": (
            core.fgsm(net, x, y, eps=eps, normalize=normalize),
            _reference(ta.FGSM(net, eps=eps), normalize, x, y),
        ),
        "BIM": (
            core.ifgsm(net, x, y, eps=eps, steps=steps, alpha=alpha, normalize=normalize),
            _reference(ta.BIM(net, eps=eps, alpha=alpha, steps=steps), normalize, x, y),
        ),
        "PGD, no random start": (
            core.pgd(net, x, y, eps=eps, steps=steps, alpha=alpha, random_start=False, normalize=normalize),
            _reference(ta.PGD(net, eps=eps, alpha=alpha, steps=steps, random_start=False), normalize, x, y),
        ),
        # The random starts draw the same numbers: our torch.rand(generator) * 2 - 1 and their uniform_(-eps, eps)
        # on the global generator, both seeded alike, agree to float32 rounding.
        "PGD, random start": (
            core.pgd(
                net,
                x,
                y,
                eps=eps,
                steps=steps,
                alpha=alpha,
                normalize=normalize,
                generator=torch.Generator().manual_seed(3),
            ),
            _reference(ta.PGD(net, eps=eps, alpha=alpha, steps=steps), normalize, x, y, seed=3),
        ),
        # torchattacks normalises each gradient by its mean |g| (L1 / numel), the paper and we by its L1 norm: the
        # momentum differs by the constant factor numel, which sign() removes. Our alpha is eps / steps; theirs is
        # a parameter (default 2/255), set equal here.
        "MI-FGSM": (
            core.mifgsm(net, x, y, eps=eps, steps=steps, decay=1.0, normalize=normalize),
            _reference(ta.MIFGSM(net, eps=eps, alpha=eps / steps, steps=steps, decay=1.0), normalize, x, y),
        ),
    }
    for name, (ours, theirs) in pairs.items():
        assert torch.allclose(ours, theirs, atol=PARITY_ATOL, rtol=0), (name, (ours - theirs).abs().max())
        assert (ours - x).abs().amax() > eps / 2, name  # a real attack, not two unchanged batches


def test_pgd_l2_equals_torchattacks_and_its_random_start_is_uniform_in_the_ball(parity):
    ta, net, normalize, x, y = parity
    eps, alpha, steps = 0.5, 0.1, 10
    ours = core.pgd(net, x, y, eps=eps, steps=steps, alpha=alpha, norm="l2", random_start=False, normalize=normalize)
    theirs = _reference(ta.PGDL2(net, eps=eps, alpha=alpha, steps=steps, random_start=False), normalize, x, y)
    assert torch.allclose(ours, theirs, atol=PARITY_ATOL, rtol=0), (ours - theirs).abs().max()
    # The random starts differ on purpose: both take a Gaussian direction and a uniform u per sample from the same
    # draws (so the directions agree), but torchattacks puts the start at radius eps u, which crowds the starts
    # towards the centre in d dimensions; we use eps u^(1/d), uniform in the ball's volume (Madry et al.'s
    # "uniformly random point"). torchattacks with steps=0 returns its start; x = 0.5 keeps the box out of it.
    x_mid, d = torch.full_like(x, 0.5), x[0].numel()
    start_theirs = _reference(ta.PGDL2(net, eps=eps, alpha=alpha, steps=0), normalize, x_mid, y, seed=7) - x_mid
    start_ours = core._random_start(x_mid, eps, "l2", torch.Generator().manual_seed(7))
    r_theirs, r_ours = core.perturbation_norm(start_theirs, "l2"), core.perturbation_norm(start_ours, "l2")
    assert torch.allclose(r_ours, eps * (r_theirs / eps) ** (1 / d), atol=1e-5, rtol=0)
    directions = start_ours / r_ours[:, None, None, None] - start_theirs / r_theirs[:, None, None, None]
    assert directions.abs().amax() < 1e-5
    assert r_ours.min() > 0.9 * eps > r_theirs.min()  # in 192 dimensions nearly all the volume is near the sphere


def test_di2_fgsm_differs_from_torchattacks_only_in_its_random_transform(parity):
    ta, net, normalize, x, y = parity
    eps, steps = 0.05, 10

    def reference(prob: float):  # torchattacks' DIFGSM defaults to decay 0 (plain DI2-FGSM); ours to 1 (M-DI2-FGSM)
        return ta.DIFGSM(net, eps=eps, alpha=eps / steps, steps=steps, decay=1.0, diversity_prob=prob)

    ours = core.difgsm(net, x, y, eps=eps, steps=steps, diversity_prob=0.0, normalize=normalize)
    assert torch.allclose(ours, _reference(reference(0.0), normalize, x, y), atol=PARITY_ATOL, rtol=0)
    # With the transform on, the two differ: torchattacks resizes bilinearly and draws size, offsets, then the coin;
    # we resize nearest-neighbour (a digit's strokes stay sharp) and toss the coin first. Give torchattacks our
    # transform with an identically seeded generator and the adversarial examples agree again: the loop (momentum,
    # step, projection) is the same; only T differs.
    ours = core.difgsm(
        net,
        x,
        y,
        eps=eps,
        steps=steps,
        diversity_prob=1.0,
        normalize=normalize,
        generator=torch.Generator().manual_seed(5),
    )
    theirs_own_transform = _reference(reference(1.0), normalize, x, y, seed=5)
    assert (ours - theirs_own_transform).abs().amax() > 1e-3
    patched, same_draws = reference(1.0), torch.Generator().manual_seed(5)
    patched.input_diversity = lambda v: core.input_diversity(v, 1.0, generator=same_draws)
    assert torch.allclose(ours, _reference(patched, normalize, x, y), atol=PARITY_ATOL, rtol=0)
