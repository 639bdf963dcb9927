"""Generative models on MNIST (issue 22): the metric classifier trained once by command with its normalisation
stated in the file, the benchmark's MNIST pieces, and the binarised-MNIST VAE bounds in nats — on tiny IDX files
the tests write (never ../shared/data)."""

from __future__ import annotations

import argparse
import importlib.util
import math

import numpy as np
import pytest
import torch

from lecture_modules.generative.metrics import classifier_normalisation
from lecture_modules.generative.vae import VAE, importance_bounds, iwae_bound, log_likelihood
from tests.datamodules.test_generation import _write_idx
from tests.helpers import CONFIGS, CPU, QUICK, REPO, run_cli


def _write_mnist(root, n_train: int = 120, n_test: int = 30) -> None:
    """MNIST-format IDX files of 28x28 images: class c is a bright vertical bar at column 3 + 2c, plus noise."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = np.arange(n) % 10
        images = rng.integers(0, 40, (n, 28, 28))
        for i, c in enumerate(labels):
            images[i, 4:24, 3 + 2 * c : 5 + 2 * c] = 255
        _write_idx(root / f"{prefix}-images-idx3-ubyte.gz", images)
        _write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", labels)


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    """benchmarks/generative.py as a module (benchmarks/ is on sys.path when it runs as a script)."""
    import sys

    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        spec = importlib.util.spec_from_file_location("generative_bench", REPO / "benchmarks" / "generative.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    return module


@pytest.fixture(scope="module")
def mnist_judge(bench, tmp_path_factory):
    """The tiny MNIST, and the metric classifier trained on it by the benchmark's command (1 epoch)."""
    root = tmp_path_factory.mktemp("mnist")
    _write_mnist(root / "idx")
    args = argparse.Namespace(data_dir=root / "idx", judge=root / "judge" / "mnist_cnn.ckpt", epochs=1,
                              out_dir=root / "bench", dataset="mnist", samples=20, ddpm_samples=5, iwae_k=20,
                              test_images=10)  # fmt: skip
    result = bench.train_judge(args)
    return args, result


def test_the_mnist_metric_classifier_is_trained_by_command_and_states_its_normalisation(mnist_judge):
    from datamodules.generation import GenerationDataModule
    from datamodules.sources import IDXSource

    args, result = mnist_judge
    saved = torch.load(args.judge, weights_only=True)  # plain data only
    assert set(saved) >= {"state_dict", "hyper_parameters", "pixel_stats", "metric_name"}
    assert "optimizer_states" not in saved and saved["metric_name"] == "mnist-cnn"
    assert result["space"] == "mnist-cnn-128d" and 0.0 <= result["test_acc"] <= 1.0
    dm = GenerationDataModule(source=IDXSource(root=str(args.data_dir)), image_size=28)
    dm.setup("fit")
    mean, std = dm.real_stats  # the same split: the stated statistics are the classifier's training split's
    assert saved["pixel_stats"]["mean"] == pytest.approx(mean.flatten().tolist(), rel=1e-5)
    assert saved["pixel_stats"]["std"] == pytest.approx(std.flatten().tolist(), rel=1e-5)
    other = (torch.zeros(1, 1, 1, 1), torch.ones(1, 1, 1, 1))
    stated = classifier_normalisation(args.judge, other)  # the file's statistics win over the data's
    assert stated["stated"] and stated["name"] == "mnist-cnn" and stated["mean"].item() == pytest.approx(mean.item())
    builtin = classifier_normalisation("builtin:digits_cnn", other)
    assert not builtin["stated"] and builtin["name"] == "digits-cnn" and builtin["mean"] is other[0]
    with pytest.raises(FileExistsError):  # never overwritten
        from lecture_modules.generative.metrics import save_metric_classifier

        save_metric_classifier(args.judge, args.judge, other, name="x")


def test_a_gan_on_mnist_scores_in_the_mnist_classifiers_space(mnist_judge, tmp_path):
    args, _ = mnist_judge
    cli = run_cli("fit", "--config", str(CONFIGS / "sngan.yaml"), "--config", CPU, *QUICK, "--trainer.logger", "false",
                  "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--trainer.callbacks=[]",
                  "--trainer.default_root_dir", str(tmp_path), "--data.init_args.image_size", "28",
                  "--data.init_args.source", "datamodules.sources.IDXSource",
                  "--data.init_args.source.init_args.root", str(args.data_dir),
                  "--model.init_args.metric_classifier", str(args.judge),
                  "--model.init_args.num_eval_samples", "20")  # fmt: skip
    assert cli.model.feature_space == "mnist-cnn-128d" and "val/fid" in cli.trainer.callback_metrics
    stated = torch.tensor(torch.load(args.judge, weights_only=True)["pixel_stats"]["mean"])
    assert torch.allclose(cli.model._judge["judge"].mean.flatten(), stated)


@pytest.fixture(scope="module")
def mnist_pieces(bench, mnist_judge):
    """One SN-GAN piece and one binarised-VAE piece on the tiny MNIST (1 epoch each), written as the CLI does."""
    args, judge = mnist_judge
    out = args.out_dir / "pieces"
    out.mkdir(parents=True)
    results = {"sngan": bench.piece("sngan", 0, args), "vae_binarized": bench.vae_binarized(0, args)}
    for name, result in results.items():
        bench.write(out / f"{name}-seed0.json", result)
    bench.write(out / "judge.json", judge)  # other parts' files in the folder are skipped by the merge
    return results, out


def test_an_mnist_piece_records_its_budget_training_time_and_sampling_time(mnist_pieces):
    result = mnist_pieces[0]["sngan"]
    row = result["rows"]["sngan"]
    assert result["space"] == "mnist-cnn-128d" and result["dataset"] == "mnist"
    assert result["train_seconds"] > 0 and row["seconds_per_1000"] > 0 and row["samples"] == 20
    assert result["train_batches"] == 2  # the tiny set: 2 batches of 64 per epoch, 1 epoch (--epochs 1)
    assert {"fid", "kid", "precision", "recall", "recognisable"} <= set(row)


def test_the_binarised_mnist_vae_piece_reports_both_bounds_in_nats_per_784_pixels(mnist_pieces):
    result = mnist_pieces[0]["vae_binarized"]
    bounds = result["bounds"]
    assert bounds["pixels"] == 784 and bounds["iwae_k"] == 20 and bounds["test_images"] == 10
    assert -784 * math.log(2) * 3 < bounds["test_elbo_nats"] <= bounds["test_iwae_nats"] < 0
    assert "-86.76" in result["reference"]


def test_the_merge_names_the_feature_space_and_lists_the_binarised_vae_bounds(bench, mnist_pieces):
    results, folder = mnist_pieces
    text = bench.merge(folder)
    assert "Feature space: mnist-cnn-128d" in text and "| sngan | [0] | 20 |" in text
    assert f"IWAE k=20 {results['vae_binarized']['bounds']['test_iwae_nats']:.2f} nats per image" in text
    bench.write(folder / "sngan-seed0.json", results["sngan"])  # never overwritten: a second file
    assert len(list(folder.glob("sngan-seed0*.json"))) == 2


def _vae(latent_dim: int = 4) -> VAE:
    torch.manual_seed(0)
    return VAE(input_shape=(1, 28, 28), latent_dim=latent_dim, width=4, metric_classifier=None)


def test_a_decoder_of_zero_logits_and_a_posterior_equal_to_the_prior_give_784_ln2_nats_exactly():
    """Units: with q(z | x) = p(z) the weights are p(x | z) = 2^-784 for any binary x, so both bounds are
    -784 ln 2 nats per image whatever k."""
    vae = _vae()
    for layer in (vae.encoder.body[-1], vae.decoder.body[-1]):
        torch.nn.init.zeros_(layer.weight)
        torch.nn.init.zeros_(layer.bias)
    x01 = torch.bernoulli(torch.full((6, 1, 28, 28), 0.3))
    elbo, iwae = vae.test_bounds(x01, k=7, batch_size=4, chunk=3)
    assert elbo.shape == iwae.shape == (6,)
    torch.testing.assert_close(elbo, torch.full((6,), -784 * math.log(2)))
    torch.testing.assert_close(iwae, torch.full((6,), -784 * math.log(2)))


def test_the_chunked_bounds_equal_the_one_shot_iwae_bound_and_the_elbo_is_below_it():
    vae = _vae().eval()
    x01 = torch.bernoulli(torch.full((5, 1, 28, 28), 0.2))
    with torch.no_grad():
        mu, logvar = vae.encoder(x01 * 2 - 1)
        torch.manual_seed(3)
        one_shot = iwae_bound(x01, mu, logvar, vae.decoder, "bernoulli", vae.log_scale, 16)
        torch.manual_seed(3)
        elbo, iwae = importance_bounds(x01, mu, logvar, vae.decoder, "bernoulli", vae.log_scale, 16, chunk=16)
        chunked = importance_bounds(x01, mu, logvar, vae.decoder, "bernoulli", vae.log_scale, 12, chunk=5,
                                    generator=torch.Generator().manual_seed(7))  # fmt: skip
        gen = torch.Generator().manual_seed(7)  # the same draws, (5, 5, 2) at a time, weighed in one go
        z = mu + (0.5 * logvar).exp() * torch.cat([torch.randn(c, *mu.shape, generator=gen) for c in (5, 5, 2)])
        log_px = torch.stack([log_likelihood(x01, vae.decoder(zi), "bernoulli", vae.log_scale) for zi in z])
        prior = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1)
        posterior = torch.distributions.Normal(mu, (0.5 * logvar).exp()).log_prob(z).sum(-1)
        log_w = log_px + prior - posterior  # (12, B)
    torch.testing.assert_close(iwae, one_shot)
    assert (elbo < iwae).all() and (elbo > iwae - 200).all()
    torch.testing.assert_close(chunked[0], log_w.mean(0))
    torch.testing.assert_close(chunked[1], torch.logsumexp(log_w, 0) - math.log(12))
