"""Explainable AI (lecture 9): invariants of the attributions, the evaluation and the feature visualisation, then the
lecture end to end (CLI, settings, DDP)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lecture_modules.xai import core
from lecture_modules.xai.methods import METHODS, MethodSettings, attribute
from tests.helpers import (
    CONFIGS,
    QUICK,
    crash_after_checkpoint,
    digits_8x8,
    run_cli,
    run_cli_subprocess,
    state_dict_equal,
)

XAI = str(CONFIGS / "xai.yaml")
OFFLINE = ["--trainer.logger", "false", *QUICK]
# Small settings for end-to-end runs on 2 CPU cores: four methods, few samples and steps, one layer visualised.
FAST = [
    "--model.init_args.methods", "[saliency, integrated_gradients, gradcam, occlusion]",
    "--model.init_args.ig_steps", "16", "--model.init_args.metric_samples", "2", "--model.init_args.units", "2",
    "--model.init_args.am_steps", "8", "--model.init_args.visualise_layers", "[net.0]",
]  # fmt: skip


@pytest.fixture(scope="module")
def trained():
    """A small CNN trained on the 8x8 digits (inputs in [0, 1]) in about a second."""
    torch.manual_seed(0)
    x, y = digits_8x8()
    model = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(64, 10),
    )  # fmt: skip
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(60):
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
    model.eval().requires_grad_(False)
    return model, x[:16], y[:16]


def _settings(model: nn.Module | None = None, **kw) -> MethodSettings:
    layer = model[2] if model is not None else None
    defaults = {"ig_steps": 32, "smoothgrad_samples": 4, "surrogate_samples": 32, "window": 2}
    return MethodSettings(gradcam_layer=layer, **{**defaults, **kw})


# ------------------------------------------------------------------------------------------------ attributions
def test_integrated_gradients_are_complete_within_tolerance_and_more_steps_help(trained):
    model, x, y = trained
    baseline = torch.zeros(1, 1, 8, 8)
    with torch.no_grad():
        f_x, f_b = model(x).gather(1, y[:, None])[:, 0], model(baseline).expand(len(y), -1).gather(1, y[:, None])[:, 0]
    errors = {}
    for steps in (4, 128):
        settings = _settings(model, ig_steps=steps, ig_internal_batch_size=16)  # bounded memory: 16 images a pass
        ig = attribute("integrated_gradients", model, x, y, settings=settings, baseline=baseline)
        errors[steps] = core.completeness_error(ig, f_x, f_b)
    assert errors[128].max() < 0.02, errors[128]
    assert errors[128].mean() < errors[4].mean()


def test_saliency_of_a_linear_model_is_the_absolute_weight_of_the_target_class():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    x, target = torch.randn(4, 1, 3, 4), torch.tensor([0, 1, 2, 1])
    saliency = attribute("saliency", model, x, target, settings=_settings(), baseline=torch.zeros(1, 1, 3, 4))
    expected = model[1].weight.detach().abs()[target].view(4, 1, 3, 4)
    assert torch.allclose(saliency, expected)
    ixg = attribute("input_x_gradient", model, x, target, settings=_settings(), baseline=torch.zeros(1, 1, 3, 4))
    assert torch.allclose(ixg, x * model[1].weight.detach()[target].view(4, 1, 3, 4))


class _TwoHeads(nn.Module):
    """Logit 0 reads a convolution; logit 1 reads the raw pixels only (it does not depend on the convolution)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.head = nn.Linear(4, 1)
        self.direct = nn.Linear(64, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = F.relu(self.conv(x)).mean(dim=(2, 3))  # (N, 4)
        return torch.cat([self.head(features), self.direct(x.flatten(1))], dim=1)


def test_gradcam_is_zero_for_a_class_whose_logit_does_not_depend_on_the_layer():
    torch.manual_seed(0)
    model, x = _TwoHeads().eval(), torch.rand(3, 1, 8, 8)
    settings = MethodSettings(gradcam_layer=model.conv)
    base = torch.zeros(1, 1, 8, 8)
    ignored = attribute("gradcam", model, x, torch.ones(3, dtype=torch.long), settings=settings, baseline=base)
    assert ignored.shape == (3, 1, 8, 8) and torch.count_nonzero(ignored) == 0
    used = attribute("gradcam", model, x, torch.zeros(3, dtype=torch.long), settings=settings, baseline=base)
    assert used.abs().sum() > 0  # the check has teeth: the other class reads the layer


def test_occlusion_of_a_region_the_model_ignores_changes_nothing():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 2))
    with torch.no_grad():
        model[1].weight.view(2, 8, 8)[:, :, :4] = 0  # the left half of the image is ignored
    x = torch.rand(2, 1, 8, 8)
    occlusion = attribute("occlusion", model, x, torch.tensor([0, 1]), settings=_settings(window=2),
                          baseline=torch.zeros(1, 1, 8, 8))  # fmt: skip
    assert torch.count_nonzero(occlusion[..., :3]) == 0  # windows (stride 1) that touch only the ignored half
    assert torch.count_nonzero(occlusion[..., 5:]) > 0


@pytest.mark.parametrize("method", METHODS)
def test_every_method_is_deterministic_for_a_fixed_seed_and_gives_the_input_shape(trained, method):
    model, x, y = trained
    runs = []
    for _ in range(2):
        torch.manual_seed(3)
        runs.append(attribute(method, model, x[:2], y[:2], settings=_settings(model), baseline=torch.zeros(1, 1, 8, 8)))
    assert runs[0].shape[-2:] == x.shape[-2:] and torch.equal(runs[0], runs[1])
    assert all(p.grad is None for p in model.parameters())


# ------------------------------------------------------------------------------------------------ evaluation
def test_deletion_curve_of_a_pixel_sum_model_follows_the_order_of_the_map():
    x = torch.tensor([[[[1.0, 0.0], [3.0, 2.0]]]])  # (1, 1, 2, 2)

    def total(images):
        return images.flatten(1).sum(1)

    best = core.perturbation_curve(total, x, torch.zeros_like(x), x[:, 0], steps=4)  # biggest pixel first
    worst = core.perturbation_curve(total, x, torch.zeros_like(x), -x[:, 0], steps=4)
    assert best.tolist() == [[6.0, 3.0, 1.0, 0.0, 0.0]] and worst.tolist() == [[6.0, 6.0, 5.0, 3.0, 0.0]]
    assert core.auc(best) < core.auc(worst)
    assert core.auc(torch.ones(1, 17)).item() == pytest.approx(1.0)
    curves = core.insertion_deletion(total, x / 3, x[:, 0], steps=4)
    assert curves["deletion"][0, -1] == 0 and curves["insertion"][0, -1] == pytest.approx(2.0)


def test_map_similarity_is_one_for_the_same_map_and_matches_scipy_spearman():
    from scipy.stats import spearmanr

    torch.manual_seed(0)
    a, b = torch.randn(3, 8, 8), torch.randn(3, 8, 8)
    same = core.map_similarity(a, a)
    assert all(torch.allclose(v, torch.ones(3)) for v in same.values())
    other = core.map_similarity(a, b)
    for i in range(3):
        assert other["spearman"][i].item() == pytest.approx(spearmanr(a[i].flatten(), b[i].flatten())[0], abs=1e-5)
        assert other["spearman_abs"][i].item() == pytest.approx(
            spearmanr(a[i].flatten().abs(), b[i].flatten().abs())[0], abs=1e-5
        )
    assert core.map_similarity(a, -a)["spearman"].max() < -0.99 and torch.allclose(
        core.map_similarity(a, -a)["spearman_abs"], torch.ones(3)
    )


def test_randomising_every_layer_makes_the_sanity_correlation_fall(trained):
    model, x, y = trained
    base = torch.zeros(1, 1, 8, 8)
    original = attribute("saliency", model, x, y, settings=_settings(model), baseline=base)[:, 0]
    names, stages = [], []
    for name, randomised in core.cascade_randomisation(model, seed=0):
        maps = attribute("saliency", randomised, x, y, settings=_settings(randomised), baseline=base)[:, 0]
        names.append(name)
        stages.append(core.map_similarity(original, maps)["spearman_abs"].mean().item())
    assert names == ["6", "2", "0"]  # top (logits) first
    assert stages[-1] < 0.5 and stages[-1] < stages[0]
    assert torch.equal(attribute("saliency", model, x, y, settings=_settings(model), baseline=base)[:, 0], original)


def test_activation_maximisation_beats_real_inputs_on_its_unit_and_is_deterministic(trained):
    model = trained[0]
    layer, unit = model[2], 5
    captured = {}
    handle = layer.register_forward_hook(lambda _m, _i, out: captured.__setitem__("out", out))
    with torch.no_grad():
        model(digits_8x8()[0][:500])
    handle.remove()
    real = core.unit_activation(captured["out"], unit).max().item()
    runs = [
        core.activation_maximisation(model, layer, unit, shape=(1, 8, 8), normalize=lambda z: z, steps=64, seed=1)
        for _ in range(2)
    ]
    image, trace = runs[0]
    assert trace[-1] > real, (trace[-1], real)
    assert image.min() >= 0 and image.max() <= 1
    assert torch.equal(image, runs[1][0]) and torch.equal(trace, runs[1][1])
    assert all(p.grad is None for p in model.parameters())


# ------------------------------------------------------------------------------------------------ the lecture
def test_config_explains_the_shipped_cnn_with_metrics_figures_and_a_saved_file(tmp_path):
    cli = run_cli("test", "--config", XAI, *OFFLINE, *FAST, "--trainer.default_root_dir", str(tmp_path))
    metrics = cli.trainer.callback_metrics
    assert metrics["test/acc"] > 0.95
    for method in ("saliency", "integrated_gradients", "gradcam", "occlusion"):
        for key in ("deletion_auc", "insertion_auc", "sanity_spearman", "sanity_spearman_abs", "sanity_ssim"):
            assert torch.isfinite(metrics[f"test/{key}_{method}"]), key
    assert metrics["test/ig_completeness_error"] < 0.2
    figures = {p.name.split("-step")[0] for p in (tmp_path / "figures").glob("*.png")}
    assert {"test_explanations", "test_sanity_cascade", "test_sanity_similarity", "test_deletion_insertion",
            "test_feature_vis_net.0"} <= figures  # fmt: skip
    saved = torch.load(tmp_path / "explanations.pt", weights_only=True)
    assert saved["maps"].shape == (10, 4, 16, 16) and sorted(saved["label"].tolist()) == list(range(10))
    assert (saved["image"] >= 0).all() and (saved["image"] <= 1).all()  # drawn in pixels, not standardised


def test_most_confident_mistakes_are_selected_in_order_of_confidence(tmp_path):
    cli = run_cli(
        "test", "--config", XAI, *OFFLINE, *FAST, "--trainer.default_root_dir", str(tmp_path),
        "--model.init_args.select", "mistakes", "--model.init_args.mistakes", "2", "--model.init_args.methods",
        "[saliency]", "--model.init_args.visualise_layers", "[]",
    )  # fmt: skip
    saved = torch.load(tmp_path / "explanations.pt", weights_only=True)
    assert len(saved["label"]) >= 1 and (saved["pred"] != saved["label"]).all()
    assert (saved["prob"][:-1] >= saved["prob"][1:]).all()
    assert "test/sanity_spearman_saliency" in cli.trainer.callback_metrics


def test_a_checkpoint_that_does_not_fit_the_data_or_indices_outside_the_split_are_named():
    from datamodules.errors import CheckpointError, SettingError
    from lecture_modules.xai.explain import Explain

    with pytest.raises(CheckpointError, match=r"model\.init_args\.checkpoint \(builtin:digits_cnn\) has 10 classes"):
        Explain(num_classes=5, input_shape=(1, 16, 16)).prepare()
    with pytest.raises(CheckpointError, match=r"model\.init_args\.checkpoint .*does not take the data's images"):
        Explain(input_shape=(3, 16, 16)).prepare()
    with pytest.raises(SettingError, match=r"model\.init_args\.indices must be a non-empty list"):
        Explain(input_shape=(1, 16, 16), select="indices")
    model = Explain(input_shape=(1, 16, 16), select="indices", indices=[3, 400])
    dataset = torch.utils.data.TensorDataset(torch.zeros(360, 1, 16, 16), torch.zeros(360, dtype=torch.long))
    with pytest.raises(SettingError, match=r"model\.init_args\.indices must be indices of the test split \(0\.\.359\)"):
        model._select(dataset)


def test_the_summary_table_has_one_row_per_method_with_the_logged_values():
    from lecture_modules.xai.explain import Explain

    model = Explain(input_shape=(1, 16, 16), methods=["saliency", "gradcam"])
    results = {
        "deletion": torch.linspace(1, 0, 17).expand(3, 2, 17), "insertion": torch.linspace(0, 1, 17).expand(3, 2, 17),
        "similarity": torch.full((3, 2, 7, 3), 0.25), "random_labels": torch.full((3, 2, 3), float("nan")),
    }  # fmt: skip
    columns, rows = model.summary(results)
    assert columns == ["method", "deletion_auc", "insertion_auc", "sanity_spearman", "sanity_spearman_abs",
                       "sanity_ssim"]  # fmt: skip
    assert rows == [["saliency", 0.5, 0.5, 0.25, 0.25, 0.25], ["gradcam", 0.5, 0.5, 0.25, 0.25, 0.25]]


def test_fit_trains_the_randomised_labels_network_only():
    from lecture_modules.xai.explain import Explain

    model = Explain(input_shape=(1, 16, 16), methods=["saliency"])
    model.prepare()
    trained = {id(p) for p in model.random_labels.parameters()}
    optimised = {id(p) for group in model.configure_optimizers().param_groups for p in group["params"]}
    assert optimised == trained and not any(p.requires_grad for p in model.lecture.parameters())
    assert all(not k.startswith("lecture.") for k in model.state_dict())  # the checkpoint is not copied in
    labels = model.random_label(torch.arange(1000))
    assert labels.min() == 0 and labels.max() == 9 and torch.equal(labels, model.random_label(torch.arange(1000)))


def test_the_randomised_labels_fit_resumes_exactly(tmp_path):
    """The topic's one training run (the data randomisation test's network) stopped after a checkpoint at step 3 and
    resumed ends with the weights of a run that never stopped: shuffling, dropout-free steps and the optimiser state
    all come back."""
    base = [
        "fit", "--config", XAI, *OFFLINE, "--trainer.callbacks=[]", "--trainer.max_steps", "6",
        "--trainer.limit_val_batches", "0", "--data.init_args.batch_size", "32",
    ]  # fmt: skip
    full = run_cli(*base, "--trainer.default_root_dir", str(tmp_path / "full"))
    reference = {k: v.clone() for k, v in full.model.state_dict().items()}
    assert any(k.startswith("random_labels.") for k in reference)
    ckpt = crash_after_checkpoint(base, 3, tmp_path / "ckpt")
    # Another seed for the resumed process: only the checkpoint (weights, optimiser, sampler and RNG states) can
    # make it end where the uninterrupted run ended; a run that ignored it would start from other weights.
    resumed = run_cli(
        *base, "--seed_everything", "123", "--trainer.default_root_dir", str(tmp_path / "resumed"),
        "--ckpt_path", str(ckpt),
    )  # fmt: skip
    assert resumed.trainer.global_step == 6
    assert state_dict_equal(resumed.model.state_dict(), reference), "resumed weights differ from the full run"


@pytest.mark.parametrize(
    "flag, value, key",
    [
        ("methods", "[saliency, deeplift]", "model.init_args.methods"),
        ("gradcam_layer", "net.99", "model.init_args.gradcam_layer"),
        ("ig_steps", "0", "model.init_args.ig_steps"),
        ("am_steps", "0", "model.init_args.am_steps"),
        ("visualise_layers", "[conv9]", "model.init_args.visualise_layers"),
    ],
)
def test_a_bad_setting_ends_in_one_line_naming_its_key(capsys, flag, value, key):
    from cli import main

    assert main(["test", "--config", XAI, *OFFLINE, f"--model.init_args.{flag}", value]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and key in errors[0] and value.strip("[]").split(", ")[-1] in errors[0], err[-2000:]
    assert "Traceback" not in err


@pytest.mark.slow
def test_ddp_explanations_gathered_from_two_processes_equal_one_process(tmp_path):
    runs = {}
    for devices in (1, 2):
        root = tmp_path / f"devices{devices}"
        result = run_cli_subprocess(
            "test", "--config", XAI, *OFFLINE, *FAST, "--trainer.accelerator", "cpu", "--trainer.devices",
            str(devices), "--trainer.strategy", "ddp" if devices == 2 else "auto", "--trainer.default_root_dir",
            str(root), cwd=tmp_path, timeout=300,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr[-3000:]
        runs[devices] = torch.load(root / "explanations.pt", weights_only=True)
    one, two = runs[1], runs[2]
    assert one.keys() == two.keys() and one["index"].tolist() == two["index"].tolist()
    for key in one:
        if isinstance(one[key], torch.Tensor):
            assert torch.allclose(one[key], two[key], atol=1e-6, equal_nan=True), key


# ------------------------------------------------------------------------------------------------ BERT part
@pytest.fixture(scope="module")
def tiny_bert():
    """A 2-layer, 2-head BERT classifier at random initialisation, with sentences of 6 tokens (one padded)."""
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=32, num_labels=3)  # fmt: skip
    model = BertForSequenceClassification(config).eval().requires_grad_(False)
    ids = torch.tensor([[2, 11, 12, 13, 14, 3], [2, 21, 22, 3, 0, 0]])  # [CLS]=2, [SEP]=3, [PAD]=0
    mask = (ids != 0).long()
    return model, ids, mask


def test_token_integrated_gradients_are_complete_and_zero_on_padding(tiny_bert):
    from lecture_modules.xai import text

    model, ids, mask = tiny_bert
    target = torch.tensor([0, 2])
    out = text.token_attributions(model, ids, mask, target, special_ids=[2, 3], pad_id=0, steps=128)
    attributions, delta = out["attributions"], out["delta"]
    assert attributions.shape == (2, 6) and torch.count_nonzero(attributions[1, 4:]) == 0
    baseline = torch.tensor([[2, 0, 0, 0, 0, 3], [2, 0, 0, 3, 0, 0]])
    with torch.no_grad():
        gap = model(input_ids=ids, attention_mask=mask).logits - model(input_ids=baseline, attention_mask=mask).logits
    gap = gap.gather(1, target[:, None])[:, 0]
    assert torch.allclose(attributions.sum(1), gap, atol=2e-3 * gap.abs().max().item() + 1e-4)
    assert delta.abs().max() < 2e-3 * gap.abs().max() + 1e-4 and torch.allclose(out["gap"], gap, atol=1e-5)


def test_attention_maps_are_distributions_over_the_unpadded_tokens_and_restore_fused_attention(tiny_bert):
    from lecture_modules.xai import text

    model, ids, mask = tiny_bert
    before = model.config._attn_implementation
    maps = text.attention_maps(model, ids, mask)
    assert maps.shape == (2, 2, 2, 6, 6)  # (B, L, H, T, T)
    assert torch.allclose(maps.sum(-1), torch.ones(2, 2, 2, 6), atol=1e-5)
    assert maps[1, ..., 4:].abs().max() < 1e-6  # no attention on padding
    assert model.config._attn_implementation == before


def test_layer_pca_matches_scikit_learn_and_separates_two_contexts(tiny_bert):
    from sklearn.decomposition import PCA

    from lecture_modules.xai import text

    model, ids, mask = tiny_bert
    states = text.hidden_states(model, ids, mask)  # (B, L + 1, T, D)
    assert states.shape == (2, 3, 6, 16)
    with torch.no_grad():
        embedded = model.bert.embeddings(input_ids=ids)
    assert torch.allclose(states[:, 0], embedded, atol=1e-5)  # layer 0 is the embedding output
    torch.manual_seed(0)
    groups = torch.tensor([0] * 5 + [1] * 5)
    points = torch.randn(3, 10, 8) + 4.0 * groups[None, :, None] * torch.eye(8)[0]  # two contexts apart on axis 0
    projected, explained = text.layer_pca(points)
    for k in range(3):
        reference = PCA(n_components=2).fit(points[k].numpy())
        ours = projected[k].numpy()
        theirs = reference.transform(points[k].numpy())
        assert all(abs(abs((ours[:, c] * theirs[:, c]).sum()) / ((ours[:, c] ** 2).sum())) - 1 < 1e-4 for c in (0, 1))
        assert explained[k].numpy() == pytest.approx(reference.explained_variance_ratio_, abs=1e-5)
        first = projected[k, :, 0]
        assert (first[groups == 0].max() < first[groups == 1].min()) or (
            first[groups == 1].max() < first[groups == 0].min()
        )


def _bert_checkpoint(path) -> str:
    """A bert_classification checkpoint as cli.py writes it (tiny random BERT, 2 labels)."""
    from lecture_modules.bert.classification import BertClassification

    torch.manual_seed(0)
    model = BertClassification()
    hparams = {**model.hparams, "_class_path": "lecture_modules.bert.classification.BertClassification"}
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": hparams}, path)
    return str(path)


TEXT = [
    "--model", "lecture_modules.xai.explain_text.ExplainText",
    "--data", "datamodules.text.TextClassificationDataModule", "--data.init_args.max_length", "64", *OFFLINE,
]  # fmt: skip


def test_explain_text_attributes_tokens_draws_attention_and_follows_cls_across_layers(tmp_path):
    ckpt = _bert_checkpoint(tmp_path / "bert.ckpt")
    cli = run_cli("test", *TEXT, "--model.init_args.checkpoint", ckpt, "--model.init_args.count", "3",
                  "--model.init_args.ig_steps", "16", "--trainer.default_root_dir", str(tmp_path / "run"))  # fmt: skip
    metrics = cli.trainer.callback_metrics
    assert metrics["test/ig_completeness_error"] < 0.05 and 0 < metrics["test/acc"] <= 1
    figures = {p.name.split("-step")[0] for p in (tmp_path / "run" / "figures").glob("*.png")}
    assert figures == {"test_token_attributions", "test_attention_0", "test_layer_pca"}
    saved = torch.load(tmp_path / "run" / "explanations_text.pt", weights_only=True)
    assert saved["index"].tolist() == [0, 1, 2] and saved["tokens"][0][0] == "[CLS]"
    assert saved["attributions"].shape[0] == 3 and saved["pca"].shape[0] == 3  # embeddings + 2 encoder layers
    (html,) = (tmp_path / "run" / "figures").glob("test_token_attributions_html-*.html")
    spans = html.read_text().count("<span ")
    assert spans == sum(len(tokens) for tokens in saved["tokens"])  # one coloured span per token of each sentence
    assert "test/random_labels_spearman" not in metrics  # no randomised-labels network was trained


def test_token_html_colours_by_sign_and_size_and_escapes_tokens():
    from lecture_modules.xai.report import token_html

    html = token_html([["<b>", "good", "bad"]], [torch.tensor([0.0, 2.0, -1.0])], ["#0 & co"])
    assert "&lt;b&gt;" in html and "#0 &amp; co" in html and "<b><b>" not in html
    assert "background:rgb(255,255,255)" in html  # zero: white
    assert "background:rgb(255,0,0)" in html  # the largest |value|, for the class: full red
    assert "background:rgb(128,128,255)" in html  # half the largest, against: half blue


def test_token_spearman_uses_only_the_real_tokens_of_each_sentence():
    from lecture_modules.xai.text import token_spearman

    a = torch.tensor([[9.0, 1.0, 2.0, 3.0, 4.0, -9.0], [0.0, 1.0, 2.0, 3.0, 0.0, 0.0]])
    b = torch.tensor([[-5.0, 4.0, 3.0, 2.0, 1.0, 7.0], [0.0, 1.0, 2.0, 3.0, 0.0, 0.0]])
    real = torch.tensor([[0, 1, 1, 1, 1, 0], [0, 1, 1, 0, 0, 0]], dtype=torch.bool)
    out = token_spearman(a, b, real)
    assert out[0] == pytest.approx(-1.0) and torch.isnan(out[1])  # specials ignored; 2 tokens: undefined
    assert token_spearman(a, a, real.fill_(True))[0] == pytest.approx(1.0)


def test_explain_text_random_labels_depend_on_the_tokens_not_the_padding_and_only_that_network_trains(tmp_path):
    from lecture_modules.xai.explain_text import ExplainText

    model = ExplainText(checkpoint=_bert_checkpoint(tmp_path / "bert.ckpt"))
    ids = torch.tensor([[2, 10, 11, 12, 3, 0, 0], [2, 10, 11, 13, 3, 0, 0]])
    mask = (ids != 0).long()
    labels = model.random_label(ids, mask)
    assert torch.equal(labels, model.random_label(ids[:, :5], mask[:, :5]))  # less padding: the same labels
    many = torch.randint(4, 500, (400, 12))
    drawn = model.random_label(many, torch.ones_like(many))
    assert set(drawn.tolist()) == {0, 1} and 0.35 < drawn.float().mean() < 0.65  # both labels, roughly balanced
    model.random_labels = type(model.encoder)(model.encoder.config)
    optimised = {id(p) for group in model.configure_optimizers().param_groups for p in group["params"]}
    assert optimised == {id(p) for p in model.random_labels.parameters()}
    assert not any(p.requires_grad for p in model.lecture.parameters())
    assert all(not k.startswith("lecture.") for k in model.state_dict())  # the checkpoint is not copied in


def test_the_shipped_sentiment_bert_is_explained_and_a_random_labels_fit_is_compared(tmp_path):
    """configs/xai_text.yaml on the shipped checkpoint: accurate on the embedded test split; a short randomised-labels
    fit, then test with its checkpoint, logs the data randomisation correlations."""
    config = ["--config", str(CONFIGS / "xai_text.yaml"), *OFFLINE, "--model.init_args.count", "2",
              "--model.init_args.ig_steps", "8", "--model.init_args.pca_sentences", "8"]  # fmt: skip
    fit = run_cli("fit", *config, "--trainer.max_steps", "3", "--trainer.default_root_dir", str(tmp_path / "fit"))
    assert fit.trainer.global_step == 3 and bool(fit.model.fitted)
    (ckpt,) = (tmp_path / "fit").rglob("last.ckpt")
    cli = run_cli("test", *config, "--trainer.default_root_dir", str(tmp_path / "test"), "--ckpt_path", str(ckpt))
    metrics = cli.trainer.callback_metrics
    assert metrics["test/acc"] >= 0.9  # the shipped classifier (0.99 on this split)
    for key in ("test/random_labels_spearman", "test/random_labels_spearman_abs"):
        assert -1 <= float(metrics[key]) <= 1, key


@pytest.mark.parametrize(
    "args, named",
    [
        (["--model.init_args.checkpoint", "null"], "model.init_args.checkpoint"),
        (["--model.init_args.checkpoint", "builtin:digits_cnn"], "not a BERT classifier"),
        (["--model.init_args.pca_token", "zzzz"], "model.init_args.pca_token"),
        (["--model.init_args.model_name_or_path", "minilm"], "model.init_args.model_name_or_path"),
    ],
)
def test_explain_text_bad_settings_end_in_one_line(tmp_path, capsys, args, named):
    from cli import main

    ckpt = ["--model.init_args.checkpoint", _bert_checkpoint(tmp_path / "bert.ckpt")]  # later arguments win
    code = main(["test", *TEXT, *ckpt, *args, "--trainer.default_root_dir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1 and named in errors[0] and "Traceback" not in err, err[-2000:]
