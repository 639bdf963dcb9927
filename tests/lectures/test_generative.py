"""Generative models (lecture 6, HW6): invariants of the GAN pieces and the quality metrics, then the lectures."""

from __future__ import annotations

import json
import tarfile

import pytest
import torch
from torch import nn

from lecture_modules.checkpoints import load_classifier
from lecture_modules.generative import core, metrics
from tests.helpers import (
    CONFIGS,
    CPU,
    QUICK,
    SMOKE,
    crash_after_checkpoint,
    run_cli,
    run_cli_subprocess,
    state_dict_equal,
)

GAN_CONFIGS = ["dcgan", "wgan", "wgan_gp", "sngan"]
OFFLINE = ["--trainer.logger", "false", *QUICK]
# One short epoch with its validation (fast_dev_run stops after one batch here: manual optimisation counts the D and
# G steps of a batch as two global steps, so its max_steps=2 ends the epoch before validation).
SHORT = ["--config", CPU, *QUICK, "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2",
         "--trainer.limit_val_batches", "1", "--trainer.callbacks=[]"]  # fmt: skip


def _config(name: str) -> str:
    return str(CONFIGS / f"{name}.yaml")


# ------------------------------------------------------------------------------------------- WGAN-GP, WGAN, SN-GAN
class _LinearCritic(nn.Module):
    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ self.weight + 0.3  # (B,): its input gradient is `weight` everywhere


def test_the_gradient_penalty_is_zero_for_a_unit_norm_linear_critic_and_positive_otherwise():
    torch.manual_seed(0)
    real, fake = torch.randn(16, 1, 4, 4), torch.randn(16, 1, 4, 4)
    w = torch.randn(16)
    unit = core.gradient_penalty(_LinearCritic(w / w.norm()), real, fake)
    steep = core.gradient_penalty(_LinearCritic(3 * w / w.norm()), real, fake)
    assert unit.abs() < 1e-10
    torch.testing.assert_close(steep, torch.tensor(4.0))  # (3 - 1)^2
    critic = _LinearCritic(3 * w / w.norm())
    core.gradient_penalty(critic, real, fake).backward()
    assert critic.weight.grad is not None and critic.weight.grad.norm() > 0  # it trains the critic


def test_weight_clipping_keeps_every_critic_weight_in_minus_c_to_c():
    torch.manual_seed(0)
    critic = core.Critic((1, 16, 16), width=8, norm="batch")
    with torch.no_grad():
        for p in critic.parameters():
            p.mul_(10)
    assert max(p.abs().max() for p in critic.parameters()) > 0.01
    core.clip_weights(critic, 0.01)
    assert all(p.abs().max() <= 0.01 for p in critic.parameters())


def test_spectral_normalisation_keeps_the_largest_singular_value_of_every_reshaped_weight_near_one():
    torch.manual_seed(0)
    critic = core.Critic((1, 16, 16), width=8, norm="spectral", num_classes=10)
    x, y = torch.randn(32, 1, 16, 16), torch.arange(32) % 10
    constrained = [m for m in critic.modules() if hasattr(m, "parametrizations")]
    assert len(constrained) == 4  # two convolutions, the score layer and the projection embedding
    with torch.no_grad():
        for module in constrained:
            module.parametrizations.weight.original.mul_(5.0)  # raw weights far from norm 1
    for _ in range(30):  # power iterations run in train mode, one per forward pass
        critic(x, y)
    for module in constrained:
        assert abs(core.largest_singular_value(module.weight) - 1.0) < 0.02
        assert core.largest_singular_value(module.parametrizations.weight.original) > 1.2  # it really divides


@pytest.mark.parametrize(("size", "channels"), [(16, 1), (28, 1), (64, 3)])
def test_the_generator_and_critic_fit_the_image_size(size, channels):
    gen = core.Generator(100, (channels, size, size), width=8, num_classes=10)
    critic = core.Critic((channels, size, size), width=8, norm="none", num_classes=10)
    labels = torch.arange(4)
    images = gen(torch.randn(4, 100), labels)
    assert images.shape == (4, channels, size, size) and images.abs().max() <= 1.0
    assert critic(images, labels).shape == (4,)


def test_the_losses_push_real_and_fake_scores_apart():
    real, fake = torch.tensor([2.0, 1.0]), torch.tensor([-1.0, 0.0])
    assert core.discriminator_loss(real, fake, "wasserstein") == -2.0  # E[f(G(z))] - E[f(x)]
    assert core.discriminator_loss(real, fake, "hinge") == 0.5  # reals: relu(1 - 2), relu(1 - 1) = 0; fakes: 0, 1
    assert core.generator_loss(fake, "wasserstein") == 0.5
    better = core.discriminator_loss(real + 1, fake - 1, "bce")
    assert better < core.discriminator_loss(real, fake, "bce")


# ------------------------------------------------------------------------------------------- metrics
def test_fid_of_a_set_against_itself_is_zero_and_grows_with_added_noise():
    torch.manual_seed(0)
    real = torch.randn(500, 16) @ torch.randn(16, 16)
    assert abs(metrics.frechet_distance(real, real)) < 1e-6
    fids = [metrics.frechet_distance(real, real + s * torch.randn_like(real)) for s in (0.1, 0.5, 1.0, 2.0)]
    assert fids == sorted(fids) and fids[0] > 0
    shifted = metrics.frechet_distance(real, real + torch.tensor(3.0))  # a mean shift of 3 in 16 dims: 16 * 9
    assert shifted == pytest.approx(144.0, rel=1e-6)


def test_kid_is_near_zero_for_the_same_set_and_leaves_the_training_rng_alone():
    torch.manual_seed(0)
    real = torch.randn(300, 8)
    state = torch.get_rng_state()
    same = metrics.kernel_distance(real, real)
    assert torch.equal(torch.get_rng_state(), state)
    shifted = metrics.kernel_distance(real, real + 1.0)
    assert abs(same) < 0.05 * shifted  # unbiased MMD^2 of a set against itself: -O(1/n), not exactly 0


def test_precision_and_recall_of_a_set_against_itself_are_one_and_fall_for_a_collapsed_or_distant_set():
    torch.manual_seed(0)
    real = torch.randn(400, 8)
    assert metrics.precision_recall(real, real) == (1.0, 1.0)
    collapsed = real[:1].repeat(400, 1) + 0.01 * torch.randn(400, 8)  # one mode: precise, no recall
    precision, recall = metrics.precision_recall(real, collapsed)
    assert precision == 1.0 and recall < 0.05
    assert metrics.precision_recall(real, real + 100.0) == (0.0, 0.0)


def test_recognisability_and_the_class_histogram():
    probs = torch.tensor([[0.95, 0.05], [0.6, 0.4], [0.02, 0.98], [0.97, 0.03]])
    assert metrics.recognisability(probs, 0.9) == 0.75
    assert metrics.class_histogram(probs).tolist() == [3, 1]


@pytest.fixture(scope="module")
def digits_judge():
    from datamodules.generation import GenerationDataModule

    dm = GenerationDataModule()
    dm.setup("fit")
    model = load_classifier("builtin:digits_cnn", input_shape=dm.input_shape, num_classes=10, label="digits")
    return metrics.FeatureClassifier(model.net, *dm.real_stats, name="digits-cnn"), dm


def test_the_shipped_digits_cnn_recognises_real_digits_and_rejects_noise_in_its_own_feature_space(digits_judge):
    judge, dm = digits_judge
    assert judge.space == "digits-cnn-128d"
    reference, _ = judge.embed(dm.reference_images())
    val_x, val_y = dm._data["val"].tensors
    features, probs = judge.embed(val_x)
    assert (probs.argmax(1) == val_y).float().mean() > 0.95
    torch.manual_seed(0)
    noise_features, noise_probs = judge.embed(torch.rand(500, 1, 16, 16) * 2 - 1)
    real_scores = metrics.quality_scores(reference, features, probs, tau=0.9)
    noise_scores = metrics.quality_scores(reference, noise_features, noise_probs, tau=0.9)
    assert real_scores["fid"] < 5 < 50 < noise_scores["fid"]
    assert real_scores["recognisable"] > 0.8 > 0.2 > noise_scores["recognisable"]
    assert real_scores["precision"] > 0.8 and noise_scores["precision"] < 0.1


# ------------------------------------------------------------------------------------------- the lectures
OWN_FIGURES = {"ddpm": {"val_trajectory"}, "vae": {"val_reconstructions", "val_latent_2d"}}
QUICK_SAMPLING = {"ddpm": ["--model.init_args.sample_steps", "4", "--model.init_args.metrics_every_n_epochs", "1",
                           "--trainer.callbacks+=callbacks.ema.EMA"],
                  "vae": ["--model.init_args.latent_dim", "2", "--model.init_args.iwae_samples", "4"]}  # fmt: skip


@pytest.mark.parametrize("name", [*GAN_CONFIGS, "ddpm", "vae"])
def test_every_config_runs_and_logs_its_metrics_and_figures(name, tmp_path):
    cli = run_cli("fit", "--config", _config(name), *SHORT, "--trainer.default_root_dir", str(tmp_path),
                  "--model.init_args.num_eval_samples", "100", *QUICK_SAMPLING.get(name, []))  # fmt: skip
    logged = cli.trainer.callback_metrics
    assert {"val/fid", "val/kid", "val/precision", "val/recall", "val/recognisable"} <= set(logged)
    assert cli.model.feature_space == "digits-cnn-128d"
    figures = {p.name.split("-step")[0] for p in tmp_path.rglob("*.png")}
    assert {"val_samples", "val_interpolation", "val_fid_curve", *OWN_FIGURES.get(name, ())} <= figures
    if name == "wgan":
        assert all(p.abs().max() <= 0.01 for p in cli.model.critic.parameters())
    if name == "vae":
        assert logged["val/iwae"] >= logged["val/elbo"] - 1.0 and logged["val/elbo"] < 0  # nats per image
    if name == "wgan":
        assert all(p.abs().max() <= 0.01 for p in cli.model.critic.parameters())


def test_the_conditional_gan_draws_the_class_it_is_given(tmp_path):
    cli = run_cli("fit", "--config", _config("dcgan"), "--config", SMOKE, "--trainer.default_root_dir", str(tmp_path),
                  "--model.init_args.conditional", "true", "--model.init_args.num_eval_samples", "100")  # fmt: skip
    model = cli.model
    assert model.generator.embed is not None and model.critic.embed is not None
    z = model.noise(2).repeat(2, 1)
    images = model.sample(z, torch.tensor([0, 0, 7, 7]))
    torch.testing.assert_close(model.sample(z[:1], torch.tensor([0])), images[:1])  # eval mode: per sample
    assert not torch.allclose(images[0], images[2], atol=1e-3)  # same z, another class


def test_a_wgan_resumes_exactly_with_its_two_optimisers_and_critic_schedule(tmp_path):
    """Two optimisers and a generator step every n_critic-th batch: a run interrupted after global step 4 (three
    batches: D+G, D, D) and resumed ends with the weights of one that never stopped."""
    base = [
        "fit", "--config", _config("wgan"), "--config", CPU, *OFFLINE, "--trainer.callbacks=[]",
        "--trainer.max_steps", "12", "--trainer.limit_val_batches", "0", "--data.init_args.limit_train_samples", "256",
    ]  # fmt: skip
    full = run_cli(*base, "--trainer.default_root_dir", str(tmp_path / "full"))
    reference = {k: v.clone() for k, v in full.model.state_dict().items()}
    ckpt = crash_after_checkpoint(base, 4, tmp_path / "ckpt")
    checkpoint = torch.load(ckpt, weights_only=True)  # plain data only
    assert len(checkpoint["optimizer_states"]) == 2 and checkpoint["hyper_parameters"]["net"]["critic_norm"] == "batch"
    resumed = run_cli(
        *base, "--seed_everything", "123", "--trainer.default_root_dir", str(tmp_path / "resumed"),
        "--ckpt_path", str(ckpt),
    )  # fmt: skip
    assert resumed.trainer.global_step == 12 == full.trainer.global_step
    assert state_dict_equal(resumed.model.state_dict(), reference), "resumed weights differ from the full run"


def test_predict_writes_hw6s_numbered_jpegs_and_a_tgz_never_overwriting(tmp_path):
    args = ["--config", _config("dcgan"), "--config", CPU, *OFFLINE, "--trainer.default_root_dir", str(tmp_path)]
    fit = run_cli("fit", *args, "--trainer.max_steps", "2", "--trainer.limit_val_batches", "0")
    ckpt = next(tmp_path.rglob("*.ckpt"))
    for _ in range(2):
        run_cli("predict", *args, "--data.init_args.num_generate", "12", "--ckpt_path", str(ckpt))
    first, second = tmp_path / "generated", tmp_path / "generated-1"
    names = sorted(p.name for p in first.glob("*.jpg"))
    assert names == sorted(f"{i}.jpg" for i in range(1, 13))
    with tarfile.open(tmp_path / "generated.tgz") as tar:
        assert sorted(tar.getnames()) == names
    assert sorted(p.name for p in second.glob("*.jpg")) == names  # a second run: a new folder, same images
    assert (first / "5.jpg").read_bytes() == (second / "5.jpg").read_bytes()
    assert fit.model.hparams.latent_dim == 100


@pytest.mark.parametrize(
    ("config", "extra", "named"),
    [
        ("wgan", ["--model.init_args.n_critic", "0"], "model.init_args.n_critic"),
        ("wgan", ["--model.init_args.clip", "0"], "model.init_args.clip"),
        ("wgan_gp", ["--model.init_args.gp_weight", "-1"], "model.init_args.gp_weight"),
        ("wgan", ["--model.init_args.tau", "1.5"], "model.init_args.tau"),
        ("wgan", ["--data.init_args.source", "datamodules.generation.FlatImageFolderSource",
                  "--data.init_args.source.init_args.root", "/no/such/faces"], "data.init_args.source.init_args.root"),
        ("wgan", ["--model.init_args.metric_classifier", "builtin:no_such"], "model.init_args.metric_classifier"),
        ("ddpm", ["--model.init_args.eta", "1.5"], "model.init_args.eta"),
        ("ddpm", ["--model.init_args.sample_steps", "1001"], "model.init_args.sample_steps"),
        ("ddpm", ["--model.init_args.net.channels", "12"], "model.init_args.net.channels"),
        ("vae", ["--model.init_args.beta", "-1"], "model.init_args.beta"),
        ("vae", ["--data.init_args.image_size", "18"], "model.init_args.input_shape"),
    ],
)  # fmt: skip
def test_bad_settings_end_in_one_line_naming_the_setting(config, extra, named, capsys):
    from cli import main

    assert main(["fit", "--config", _config(config), "--config", SMOKE, *extra]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and named in errors[0] and "Traceback" not in err


def test_a_face_folder_with_the_digits_classifier_says_to_turn_the_metrics_off(tmp_path, capsys):
    from cli import main
    from tests.datamodules.test_generation import _write_images

    _write_images(tmp_path / "faces", 20, (24, 24))
    code = main(["fit", "--config", _config("dcgan"), "--config", SMOKE,
                 "--data.init_args.source", "datamodules.generation.FlatImageFolderSource",
                 "--data.init_args.source.init_args.root", str(tmp_path / "faces"),
                 "--trainer.default_root_dir", str(tmp_path / "run")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "model.init_args.metric_classifier" in err and "null" in err


@pytest.mark.slow
def test_ddp_gan_training_agrees_across_ranks_on_every_metric(tmp_path):
    result = run_cli_subprocess(
        "fit", "--config", _config("dcgan"), "--trainer.accelerator", "cpu", "--trainer.strategy", "ddp",
        "--trainer.devices", "2", *OFFLINE, "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "3",
        "--model.init_args.num_eval_samples", "200",
        "--trainer.callbacks+=tests.helpers.MetricsDump", "--trainer.callbacks.out_dir", str(tmp_path / "dump"),
        "--trainer.default_root_dir", str(tmp_path), cwd=tmp_path, timeout=300, env={"OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    rank0, rank1 = (json.loads((tmp_path / "dump" / f"fit-rank{r}.json").read_text()) for r in (0, 1))
    assert {"val/fid", "val/precision", "val/recognisable"} <= set(rank0) and rank0 == rank1


# ------------------------------------------------------------------------------------------- diffusion
def test_the_closed_form_q_xt_given_x0_matches_t_sequential_noising_steps_in_mean_and_variance():
    from lecture_modules.generative.noising import NoiseSchedule

    schedule = NoiseSchedule()
    torch.manual_seed(0)
    x0 = torch.tensor([0.8, -0.5, 0.0], dtype=torch.float64).repeat(20000, 1)  # (N, 3): three pixels, many draws
    x = x0.clone()
    for t in range(schedule.num_steps):  # x_t = sqrt(1 - beta_t) x_{t-1} + sqrt(beta_t) eps_t
        x = (1 - schedule.betas[t]).sqrt() * x + schedule.betas[t].sqrt() * torch.randn_like(x)
        if t in (9, 299, 999):
            closed = schedule.q_sample(x0, torch.full((len(x0),), t), torch.randn_like(x0))
            abar = schedule.alpha_bars[t]
            for draws in (x, closed):
                torch.testing.assert_close(draws.mean(0), abar.sqrt() * x0[0], atol=0.02, rtol=0)
                torch.testing.assert_close(draws.var(0), (1 - abar).expand(3), atol=0.02 * (1 - abar), rtol=0.03)


def test_ddim_with_eta_zero_is_deterministic_and_with_eta_one_over_all_steps_is_ddpms_posterior():
    from lecture_modules.generative.noising import NoiseSchedule

    schedule = NoiseSchedule(clip_sample=False)
    torch.manual_seed(0)
    x_t, eps = torch.randn(4, 1, 8, 8), torch.randn(4, 1, 8, 8)
    a = schedule.ddim_step(x_t, 500, 480, eps, eta=0.0, noise=torch.randn_like(x_t))
    b = schedule.ddim_step(x_t, 500, 480, eps, eta=0.0, noise=torch.randn_like(x_t))
    assert torch.equal(a, b)
    for t in (999, 500, 10, 1):
        x0 = schedule.predict_x0(x_t, t, eps)
        mean, variance = schedule.posterior(x0, x_t, t)
        torch.testing.assert_close(schedule.ddim_step(x_t, t, t - 1, eps, eta=1.0, noise=None), mean)
        noise = torch.randn_like(x_t)
        spread = schedule.ddim_step(x_t, t, t - 1, eps, eta=1.0, noise=noise) - mean
        torch.testing.assert_close(spread, variance**0.5 * noise)  # sigma_t^2 = beta~_t
        torch.testing.assert_close(schedule.ddpm_step(x_t, t, eps, noise), mean + variance**0.5 * noise)


def test_our_samplers_equal_diffusers_ddpm_and_ddim_schedulers():
    diffusers = pytest.importorskip("diffusers")
    from lecture_modules.generative.noising import NoiseSchedule, ddim_timesteps

    ours = NoiseSchedule(clipped_eps=False)  # diffusers' default: the network's eps in DDIM's direction term
    torch.manual_seed(0)
    x, eps = torch.randn(4, 1, 8, 8), torch.randn(4, 1, 8, 8)
    ddpm = diffusers.DDPMScheduler(num_train_timesteps=1000)
    t = torch.tensor([3, 100, 500, 999])
    torch.testing.assert_close(ours.q_sample(x, t, eps), ddpm.add_noise(x, eps, t))
    for step in (999, 500, 1, 0):
        theirs = ddpm.step(eps, step, x, generator=torch.Generator().manual_seed(5)).prev_sample
        noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(5))
        torch.testing.assert_close(ours.ddpm_step(x, step, eps, noise), theirs, atol=1e-4, rtol=1e-4)
    ddim = diffusers.DDIMScheduler(num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4, beta_end=0.02)
    for steps in (10, 50):
        ddim.set_timesteps(steps)
        times = ddim_timesteps(1000, steps)
        assert ddim.timesteps.tolist() == times
        for i in (0, 1, steps - 2, steps - 1):
            t_prev = times[i + 1] if i + 1 < steps else -1
            for eta in (0.0, 0.5, 1.0):
                noise = torch.randn_like(x)
                theirs = ddim.step(eps, times[i], x, eta=eta, variance_noise=noise).prev_sample
                torch.testing.assert_close(ours.ddim_step(x, times[i], t_prev, eps, eta, noise), theirs,
                                           atol=1e-5, rtol=1e-5)  # fmt: skip
    clipped = NoiseSchedule()  # the default: the eps implied by the clipped x0, diffusers' use_clipped_model_output
    x = x * 3  # far outside [-1, 1]: x0_hat is clipped at every step below
    ddim.set_timesteps(10)
    times = ddim_timesteps(1000, 10)
    for i in (0, 1, 8, 9):
        t_prev = times[i + 1] if i + 1 < 10 else -1
        theirs = ddim.step(eps, times[i], x, eta=0.0, use_clipped_model_output=True).prev_sample
        torch.testing.assert_close(clipped.ddim_step(x, times[i], t_prev, eps, 0.0, None), theirs, atol=1e-4, rtol=1e-4)
        differs = not torch.allclose(ours.ddim_step(x, times[i], t_prev, eps, 0.0, None), theirs, atol=1e-3)
        assert differs or t_prev == -1  # the last step returns x0_hat itself either way


def test_the_unet_predicts_noise_of_the_images_shape_and_uses_its_labels():
    from lecture_modules.generative.unet import UNet, UNetSpec

    torch.manual_seed(0)
    net = UNet((1, 16, 16), UNetSpec(channels=8, multipliers=(1, 2)), num_classes=10)
    x, t = torch.randn(2, 1, 16, 16), torch.tensor([5, 900])
    out = net(x, t, torch.tensor([1, 2]))
    assert out.shape == x.shape
    assert not torch.allclose(out, net(x, t, torch.tensor([3, 4])))  # the class changes the prediction
    assert not torch.allclose(out, net(x, t))  # "no label" is its own embedding


# ------------------------------------------------------------------------------------------- VAE
def test_the_elbo_is_below_the_iwae_bound_for_k_above_one_and_the_kl_is_the_closed_form():
    from lecture_modules.generative.vae import VAE, gaussian_kl, iwae_bound

    torch.manual_seed(0)
    model = VAE(input_shape=(1, 16, 16), latent_dim=4, width=8, metric_classifier=None)
    x01 = torch.bernoulli(torch.rand(64, 1, 16, 16))
    mu, logvar = model.encoder(x01 * 2 - 1)
    args = (x01, mu, logvar, model.decoder, "bernoulli", model.log_scale)
    with torch.no_grad():
        bounds = {k: torch.stack([iwae_bound(*args, k=k).mean() for _ in range(20)]).mean() for k in (1, 5, 50)}
    assert bounds[1] < bounds[5] < bounds[50]  # log-mean-exp of more importance weights: tighter
    q = torch.distributions.Normal(mu, (0.5 * logvar).exp())
    expected = torch.distributions.kl_divergence(q, torch.distributions.Normal(0.0, 1.0)).sum(1)
    torch.testing.assert_close(gaussian_kl(mu, logvar), expected)


def test_classifier_free_guidance_mixes_the_conditional_and_unconditional_predictions():
    from lecture_modules.generative.diffusion import DDPM

    torch.manual_seed(0)
    model = DDPM(conditional=True, guidance_scale=3.0, net={"channels": 8, "multipliers": [1, 2]},
                 metric_classifier=None).eval()  # fmt: skip
    x, labels = torch.randn(3, 1, 16, 16), torch.tensor([1, 5, 9])
    t = torch.full((3,), 400)
    with torch.no_grad():
        cond, uncond = model.model(x, t, labels), model.model(x, t, torch.full_like(labels, 10))
        torch.testing.assert_close(model.predict_eps(x, 400, labels), uncond + 3.0 * (cond - uncond))
        torch.testing.assert_close(model.predict_eps(x, 400, None), uncond)  # no labels: the unconditional model
    first, again = model.sample(x, labels, steps=5), model.sample(x, labels, steps=5)
    assert torch.equal(first, again) and first.abs().max() <= 1.0 + 1e-5  # DDIM eta 0: deterministic


def test_hw6s_face_folder_trains_without_a_metric_classifier_and_hands_in_rgb_jpegs(tmp_path):
    from PIL import Image

    from tests.datamodules.test_generation import _write_images

    _write_images(tmp_path / "faces", 24, (40, 40))  # 17 training images: batches 8, 8 and 1 (skipped: batch norm)
    faces = ["--config", _config("sngan"), "--config", CPU, *OFFLINE, "--trainer.default_root_dir", str(tmp_path),
             "--data.init_args.source", "datamodules.generation.FlatImageFolderSource",
             "--data.init_args.source.init_args.root", str(tmp_path / "faces"), "--data.init_args.image_size", "32",
             "--data.init_args.batch_size", "8", "--model.init_args.metric_classifier", "null"]  # fmt: skip
    fit = run_cli("fit", *faces, "--trainer.max_epochs", "1")
    assert fit.model.feature_space is None and "val/fid" not in fit.trainer.callback_metrics
    assert fit.model.generator(torch.randn(2, 100)).shape == (2, 3, 32, 32)
    ckpt = next(tmp_path.rglob("last.ckpt"))
    run_cli("predict", *faces, "--data.init_args.num_generate", "3", "--ckpt_path", str(ckpt))
    with Image.open(tmp_path / "generated" / "3.jpg") as image:
        assert image.mode == "RGB" and image.size == (32, 32)
