"""Domain adaptation lectures: gradient reversal, the DANN schedules, the network spec and older checkpoints, MCD's
update steps and its optimiser factory, every method's fit on the embedded default, honest target labels, exact
resume (automatic and manual optimisation) and 2-process DDP."""

from __future__ import annotations

import functools
import inspect
import itertools
import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from datamodules.errors import SettingError
from lecture_modules.base import NonFiniteLossError
from lecture_modules.domain_adaptation.core import (
    DomainNetSpec,
    build_feature_extractor,
    build_head,
    classifier_discrepancy,
    dann_lambda,
    describe_optimizer,
    grad_reverse,
    normalized_entropy,
    optimizer_factory,
    proxy_a_distance,
    recompute_batch_norm_statistics,
)
from lecture_modules.domain_adaptation.dann import DANN
from lecture_modules.domain_adaptation.mcd import MCD, PAPER_OPTIMIZER
from lecture_modules.schedules import InverseDecayLR, dann_lr_factor
from tests.helpers import CONFIGS, CPU, QUICK, crash_after_checkpoint, run_cli, run_cli_subprocess, state_dict_equal

METHODS = ["source_only", "dann", "mcd", "target_oracle"]
# 256 samples per domain -> 4 batches of 64 per epoch; PCA figure, small embedding subset.
SMALL = [
    *QUICK,
    "--trainer.accelerator=cpu",
    "--trainer.devices=1",
    "--data.init_args.limit_train_samples=256",
    "--model.init_args.embedding=pca",
    "--model.init_args.embedding_samples=100",
]
NO_LOG = ["--trainer.logger=false", "--trainer.callbacks=[]"]


pytestmark = pytest.mark.usefixtures("one_thread")


def _config(name: str) -> str:
    return str(CONFIGS / f"{name}.yaml")


# ---------------------------------------------------------------------------------------------- pure pieces
@pytest.mark.parametrize("coeff", [0.0, 0.37, 1.0, 2.5])
def test_gradient_reversal_is_identity_forward_and_flips_scaled_gradient(coeff):
    x = torch.randn(5, 3, requires_grad=True)
    upstream = torch.randn(5, 3)
    y = grad_reverse(x, coeff)
    assert torch.equal(y, x)
    y.backward(upstream)
    assert torch.equal(x.grad, -coeff * upstream)


def test_gradient_reversal_inside_a_network_negates_only_the_upstream_part():
    torch.manual_seed(0)
    g, d = nn.Linear(4, 3), nn.Linear(3, 1)
    x = torch.randn(8, 4)
    d(g(x)).sum().backward()
    plain_g, plain_d = g.weight.grad.clone(), d.weight.grad.clone()
    g.zero_grad(), d.zero_grad()
    d(grad_reverse(g(x), 0.5)).sum().backward()
    assert torch.allclose(g.weight.grad, -0.5 * plain_g)  # the extractor gets the reversed, scaled gradient
    assert torch.equal(d.weight.grad, plain_d)  # the domain classifier's own gradient is unchanged


def test_dann_lambda_schedule_endpoints_and_monotone():
    assert dann_lambda(0.0) == 0.0
    assert dann_lambda(1.0) == pytest.approx(2 / (1 + math.exp(-10)) - 1)
    assert dann_lambda(1.0) > 0.9999 and dann_lambda(2.0) == dann_lambda(1.0)  # progress is clamped
    values = [dann_lambda(p / 20) for p in range(21)]
    assert all(a < b for a, b in itertools.pairwise(values))
    assert dann_lambda(0.5, gamma=0.0) == 0.0


def test_dann_lr_schedule_endpoints_and_scheduler():
    assert dann_lr_factor(0.0) == 1.0
    assert dann_lr_factor(1.0) == pytest.approx(11**-0.75)
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.01)
    sched = InverseDecayLR(opt, total_steps=None)
    assert opt.param_groups[0]["lr"] == 0.01  # open length: no decay until the length is known
    sched.set_total_steps(10)
    for _ in range(10):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.01 * 11**-0.75)
    with pytest.raises(SettingError, match=r"InverseDecayLR\.total_steps must be >= 1 or null, got 0 .*lr_scheduler"):
        InverseDecayLR(opt, total_steps=0)


def test_discrepancy_entropy_and_proxy_a_distance():
    a = torch.tensor([[10.0, -10.0], [0.0, 0.0]])
    assert classifier_discrepancy(a, a) == 0
    assert classifier_discrepancy(a, a.flip(1)) == pytest.approx(0.5, abs=1e-4)  # row 1: |1-0|, row 2: 0
    assert normalized_entropy(torch.zeros(3, 4)).tolist() == pytest.approx([1.0] * 3)
    rng = torch.Generator().manual_seed(0)
    same = torch.randn(400, 8, generator=rng).numpy()
    assert proxy_a_distance(same[:200], same[200:]) < 0.5  # one distribution: close to 0
    assert proxy_a_distance(same[:200], same[200:] + 5.0) > 1.9  # separable: close to 2


# ---------------------------------------------------------------------------------------------- the network spec
SMALL_NET = DomainNetSpec(conv_channels=[8, 16], feature_dim=16, hidden=16)


def test_net_spec_builds_the_networks_the_separate_arguments_built():
    spec = DomainNetSpec(conv_channels=[8, 16], feature_dim=12, hidden=10, batch_norm=False, dropout=0.2)
    built, by_hand = [], []
    for out, build in ((built, True), (by_hand, False)):
        torch.manual_seed(0)
        if build:
            shape = (3, 16, 16)
            out += [spec.build_extractor(shape), spec.build_classifier(7, shape), spec.build_domain_classifier(shape)]
        else:
            out += [
                build_feature_extractor((3, 16, 16), [8, 16], 12, False, 0.2),
                build_head(12, 10, 7, False, 0.2),
                build_head(12, 10, 1, False, 0.0),  # the domain classifier has no dropout
            ]
    for a, b in zip(built, by_hand, strict=True):
        assert str(a) == str(b) and all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters(), strict=True))
    assert built[0](torch.randn(4, 3, 16, 16)).shape == (4, 12)
    assert spec.as_dict() == {
        "conv_channels": [8, 16],
        "extractor": "gap",
        "kernel_size": 3,
        "feature_dim": 12,
        "hidden": 10,
        "head_layers": 1,
        "batch_norm": False,
        "dropout": 0.2,
    }


PAPER_NET = {
    "extractor": "flatten",
    "conv_channels": [32, 48],
    "kernel_size": 5,
    "hidden": 100,
    "head_layers": 2,
    "batch_norm": False,
    "dropout": 0.0,
}


def test_flatten_spec_builds_the_papers_mnist_network():
    """Ganin et al. 2016, MNIST -> MNIST-M: conv5x5 32 -> pool -> conv5x5 48 -> pool -> fc100 -> fc100 -> 10, and the
    domain classifier fc100 -> 1, on 3x28x28 inputs (768 features), no batch norm, no dropout."""
    model = DANN(net=PAPER_NET, input_shape=(3, 28, 28))
    shapes = lambda module: [tuple(p.shape) for p in module.parameters()]  # noqa: E731
    assert shapes(model.features) == [(32, 3, 5, 5), (32,), (48, 32, 5, 5), (48,)]
    assert shapes(model.classifier) == [(100, 768), (100,), (100, 100), (100,), (10, 100), (10,)]
    assert shapes(model.domain_classifier) == [(100, 768), (100,), (1, 100), (1,)]
    weighted = (nn.Conv2d, nn.Linear, nn.BatchNorm1d, nn.BatchNorm2d, nn.Dropout, nn.Dropout2d)
    kinds = [type(m).__name__ for m in model.modules() if isinstance(m, (*weighted, nn.MaxPool2d, nn.ReLU))]
    g, f, d = ["Conv2d", "ReLU", "MaxPool2d"] * 2, ["Linear", "ReLU"] * 2 + ["Linear"], ["Linear", "ReLU", "Linear"]
    assert kinds == [*g, *f, *d]
    assert model.features(torch.zeros(2, 3, 28, 28)).shape == (2, 768)
    assert model(torch.zeros(2, 3, 28, 28)).shape == (2, 10)
    # with batch norm and dropout (the variant public re-implementations use): BN after every conv and hidden layer,
    # Dropout2d in the last conv block only, dropout after the first hidden layer of the label classifier only
    bn = DANN(net={**PAPER_NET, "conv_channels": [64, 50], "batch_norm": True, "dropout": 0.5}, input_shape=(3, 28, 28))
    kinds = [type(m).__name__ for m in bn.features.modules() if isinstance(m, weighted)]
    assert kinds == ["Conv2d", "BatchNorm2d", "Conv2d", "BatchNorm2d", "Dropout2d"]
    kinds = [type(m).__name__ for m in bn.classifier.modules() if isinstance(m, weighted)]
    assert kinds == ["Linear", "BatchNorm1d", "Dropout", "Linear", "BatchNorm1d", "Linear"]
    assert bn.classifier[0].in_features == 800 and bn.domain_classifier[0].in_features == 800


@pytest.mark.parametrize(
    ("net", "message"),
    [
        ({"conv_channels": []}, r"^model\.init_args\.net\.conv_channels must be a list of positive widths"),
        ({"feature_dim": 0}, r"^model\.init_args\.net\.feature_dim must be >= 1, got 0$"),
        ({"hidden": -1}, r"^model\.init_args\.net\.hidden must be >= 1"),
        (DomainNetSpec(dropout=1.0), r"^model\.init_args\.net\.dropout must be in \[0, 1\), got 1\.0$"),
        ({"widths": [4]}, r"^model\.init_args\.net: unknown field\(s\) \['widths'\]; allowed: conv_channels, extr"),
        ({"extractor": "pool"}, r"^model\.init_args\.net\.extractor must be 'gap' or 'flatten', got 'pool'$"),
        ({"kernel_size": 0}, r"^model\.init_args\.net\.kernel_size must be >= 1, got 0$"),
        ({"head_layers": 0}, r"^model\.init_args\.net\.head_layers must be >= 1, got 0$"),
        (
            {"extractor": "flatten", "conv_channels": [8, 8, 8], "kernel_size": 5},
            r"^model\.init_args\.net\.conv_channels \[8, 8, 8\] with model\.init_args\.net\.kernel_size 5 shrink "
            r"\(16, 16\) images below 1 px",
        ),
    ],
)
def test_invalid_network_settings_name_the_setting(net, message):
    with pytest.raises(SettingError, match=message):
        DANN(net=net)


def test_each_method_states_only_its_own_arguments_and_stores_the_net_as_plain_data():
    dann_own = ["domain_weight", "grl_gamma", "grl_max", "grl_lambda", "separate_domain_batches"]
    for cls, own in ((DANN, dann_own), (MCD, ["num_k", "optimizer"])):
        params = list(inspect.signature(cls.__init__).parameters)
        assert params == ["self", *own, "kwargs"], params
    model = DANN(net={"conv_channels": [8], "dropout": 0.0}, domain_weight=0.5)
    assert model.hparams.net == {**DomainNetSpec().as_dict(), "conv_channels": [8], "dropout": 0.0}
    assert model.hparams.domain_weight == 0.5 and not any(isinstance(v, DomainNetSpec) for v in model.hparams.values())


def _first_bn_batch_means(model, batches):
    """Run ``model.training_step`` once; return the per-channel batch means the first BatchNorm2d of G saw, in
    call order, and its running mean afterwards."""
    bn = next(m for m in model.features.modules() if isinstance(m, nn.BatchNorm2d))
    seen = []
    hook = bn.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0].mean(dim=(0, 2, 3))))
    model.train()
    with pytest.warns(UserWarning, match="self.log"):  # no Trainer: logging is skipped
        model.training_step(batches, 0)
    hook.remove()
    return seen, bn.running_mean.clone()


def test_batch_norm_evaluates_both_domains_with_a_mixture_of_their_training_statistics():
    """What the lecture's DANN failure on real MNIST -> MNIST-M hid (issue 21): in training G normalises each domain
    with its *own* batch statistics (source and target batches go through G separately), but at evaluation both
    domains are normalised with the running statistics, an exponential average over alternating source and target
    batches (momentum 0.1: about 0.47 source + 0.53 target in steady state), which is neither domain's.
    Source-only has no mismatch in training, but evaluates the target with source-only statistics. The real-data
    configs use the paper's network without batch norm, which has neither problem."""
    torch.manual_seed(0)
    source = torch.randn(16, 3, 16, 16)  # grey-ish domain: mean 0
    target = torch.randn(16, 3, 16, 16) * 2 + 3  # another colour range: mean 3
    batches = {"source": [source, torch.randint(0, 10, (16,))], "target": [target]}
    dann = DANN(net={**SMALL_NET.as_dict(), "dropout": 0.0}, grl_lambda=1.0, embedding="none")
    (m_s, m_t), running = _first_bn_batch_means(dann, batches)
    assert torch.allclose(running, 0.9 * 0.1 * m_s + 0.1 * m_t, atol=1e-5)  # one step: source, then target
    weight_s, weight_t = 0.09 / 0.19, 0.1 / 0.19  # steady state of the alternating exponential average
    assert (weight_s, weight_t) == (pytest.approx(0.474, abs=1e-3), pytest.approx(0.526, abs=1e-3))
    from lecture_modules.domain_adaptation.source_only import SourceOnly

    source_only = SourceOnly(net={**SMALL_NET.as_dict(), "dropout": 0.0}, embedding="none")
    (m_s,), running = _first_bn_batch_means(source_only, batches)  # the target never reaches G in training
    assert torch.allclose(running, 0.1 * m_s, atol=1e-5)


@pytest.mark.parametrize(("separate", "seen"), [(False, [32]), (True, [16, 16])])
def test_domain_classifier_sees_both_domains_together_or_each_on_its_own(separate, seen):
    torch.manual_seed(0)
    model = DANN(net=SMALL_NET, grl_lambda=1.0, separate_domain_batches=separate, embedding="none")
    bn = next(m for m in model.domain_classifier.modules() if isinstance(m, nn.BatchNorm1d))
    sizes = []
    bn.register_forward_hook(lambda module, inputs, output: sizes.append(len(inputs[0])))
    f_s, f_t = torch.randn(16, 16), torch.randn(16, 16) + 3
    logits = model.discriminate(f_s, f_t, 1.0)
    assert sizes == seen and logits.shape == (32,)
    by_domain = [model.domain_classifier(f).squeeze(1) for f in (f_s, f_t)]
    together = model.domain_classifier(torch.cat([f_s, f_t])).squeeze(1)
    assert torch.allclose(logits, torch.cat(by_domain) if separate else together)  # source rows first


def test_recompute_batch_norm_statistics_normalises_with_the_given_domains_statistics():
    torch.manual_seed(0)
    net = DomainNetSpec(extractor="flatten", conv_channels=[4], kernel_size=3, dropout=0.5).build_extractor((3, 8, 8))
    images = torch.randn(64, 3, 8, 8) * 3 + 2
    bn = net[1]
    assert recompute_batch_norm_statistics(net, images, batch_size=64) == 1 and not net.training
    conv_out = net[0](images)
    assert torch.allclose(bn.running_mean, conv_out.mean(dim=(0, 2, 3)), atol=1e-5)
    assert torch.allclose(bn.running_var, conv_out.var(dim=(0, 2, 3)), atol=1e-4)
    assert bn.momentum == 0.1  # restored
    assert recompute_batch_norm_statistics(DomainNetSpec(batch_norm=False).build_extractor((3, 8, 8)), images) == 0


# What a checkpoint written before `net` and `optimizer` holds (recorded from that code; lr set to 1e-3).
OLD_MCD_HPARAMS = {
    "num_classes": 10, "input_shape": (3, 16, 16), "conv_channels": [8, 16], "feature_dim": 16, "hidden": 12,
    "batch_norm": True, "dropout": 0.2, "embedding": "none", "embedding_samples": 500, "num_k": 4, "lr": 0.001,
    "weight_decay": 0.0005,
}  # fmt: skip


def test_checkpoints_from_before_net_and_optimizer_keep_their_network_and_optimisers():
    from lightning.pytorch.cli import instantiate_module

    from lecture_modules.base import LectureModule

    new = MCD.upgrade_hparams(OLD_MCD_HPARAMS)
    net = {"conv_channels": [8, 16], "feature_dim": 16, "hidden": 12, "batch_norm": True, "dropout": 0.2}
    adam = {"class_path": "torch.optim.Adam", "init_args": {"lr": 0.001, "weight_decay": 0.0005}}
    assert new == {
        "num_classes": 10, "input_shape": (3, 16, 16), "embedding": "none", "embedding_samples": 500, "num_k": 4,
        "net": net, "optimizer": adam,
    }  # fmt: skip
    old_dann = {k: v for k, v in OLD_MCD_HPARAMS.items() if k not in ("num_k", "lr", "weight_decay")}
    assert "conv_channels" not in DANN.upgrade_hparams({**old_dann, "conv_channels": None})["net"]  # null: default
    # the loaders rebuild a lecture through jsonargparse (as the CLI would); a direct call takes the same dict
    rebuilt = instantiate_module(LectureModule, {"_class_path": "lecture_modules.domain_adaptation.mcd.MCD", **new})
    for model in (rebuilt, MCD(**new)):
        assert [m.out_channels for m in model.features.modules() if isinstance(m, nn.Conv2d)] == [8, 16]
        assert model.classifier2[0].out_features == 12 and model.hparams.net == DomainNetSpec(**net).as_dict()
        opts = model.configure_optimizers()
        assert [type(o) for o in opts] == [torch.optim.Adam, torch.optim.Adam]
        assert all(o.defaults["lr"] == 0.001 and o.defaults["weight_decay"] == 0.0005 for o in opts)


# ---------------------------------------------------------------------------------------------- MCD's optimisers
def test_optimizer_factory_reads_configs_and_describes_factories_as_plain_data():
    params = [nn.Parameter(torch.zeros(2))]
    adam = optimizer_factory({"class_path": "torch.optim.Adam", "init_args": {"lr": 0.1}})(params)
    assert type(adam) is torch.optim.Adam and adam.defaults["lr"] == 0.1
    sgd = functools.partial(torch.optim.SGD, lr=0.2, momentum=0.5)
    assert optimizer_factory(sgd) is sgd
    assert describe_optimizer(sgd) == {"class_path": "torch.optim.SGD", "init_args": {"lr": 0.2, "momentum": 0.5}}
    assert describe_optimizer(torch.optim.AdamW) == {"class_path": "torch.optim.AdamW", "init_args": {}}
    with pytest.raises(SettingError, match=r"^model\.init_args\.optimizer\.class_path must be a torch\.optim\.Opt"):
        MCD(optimizer={"class_path": "torch.nn.Linear", "init_args": {}})
    with pytest.raises(SettingError, match=r"^model\.init_args\.optimizer must be \{class_path"):
        MCD(optimizer={"class": "torch.optim.Adam"})
    with pytest.raises(SettingError, match=r"^model\.init_args\.num_k must be >= 1, got 0$"):
        MCD(num_k=0)
    with pytest.raises(TypeError, match=r"model\.init_args\.optimizer: cannot record"):
        MCD(optimizer=lambda p: torch.optim.Adam(p))


def test_a_non_finite_loss_names_mcds_own_optimiser_lr_and_dann_the_top_level_one():
    mcd = MCD(embedding="none")
    mcd.check_finite({"step_a": torch.tensor(1.0)})  # finite: nothing happens
    with pytest.raises(NonFiniteLossError, match=r"MCD: loss term 'step_c' is nan") as info:
        mcd.check_finite({"step_c": torch.tensor(float("nan"))})
    assert info.value.hint.startswith("lower the learning rate model.init_args.optimizer.init_args.lr (now 0.0002);")
    assert DANN(embedding="none").non_finite_hint("domain").startswith("lower the learning rate optimizer.init_args.lr")


def test_mcd_default_optimisers_are_the_papers_two_adams_over_g_and_over_both_classifiers():
    model = MCD(net=SMALL_NET)
    opt_g, opt_f = model.configure_optimizers()
    heads = [*model.classifier.parameters(), *model.classifier2.parameters()]
    assert [p for g in opt_g.param_groups for p in g["params"]] == list(model.features.parameters())
    assert [p for g in opt_f.param_groups for p in g["params"]] == heads
    for opt in (opt_g, opt_f):
        assert type(opt) is torch.optim.Adam and (opt.defaults["lr"], opt.defaults["weight_decay"]) == (2e-4, 5e-4)
    assert (
        model.hparams.optimizer
        == PAPER_OPTIMIZER
        == {
            "class_path": "torch.optim.Adam",
            "init_args": {"lr": 2e-4, "weight_decay": 5e-4},
        }
    )
    assert model.hparams.optimizer is not PAPER_OPTIMIZER  # a copy: the default cannot be changed through it


def test_mcd_builds_both_optimisers_from_the_yaml_factory(tmp_path):
    override = tmp_path / "optimizer.yaml"
    override.write_text(
        "model:\n  init_args:\n    optimizer:\n      class_path: torch.optim.SGD\n"
        "      init_args: {lr: 0.05, momentum: 0.5, weight_decay: 0.001}\n"
    )
    cli = run_cli(
        "fit", "--config", _config("mcd"), "--config", str(override), *SMALL, *NO_LOG, "--trainer.max_steps=4",
        "--trainer.limit_val_batches=0", "--model.init_args.embedding=none", f"--trainer.default_root_dir={tmp_path}",
    )  # fmt: skip
    model, optimizers = cli.model, cli.trainer.optimizers
    assert [type(o) for o in optimizers] == [torch.optim.SGD, torch.optim.SGD]
    for opt in optimizers:
        assert (opt.defaults["lr"], opt.defaults["momentum"], opt.defaults["weight_decay"]) == (0.05, 0.5, 0.001)
    heads = [*model.classifier.parameters(), *model.classifier2.parameters()]
    assert [p for g in optimizers[0].param_groups for p in g["params"]] == list(model.features.parameters())
    assert [p for g in optimizers[1].param_groups for p in g["params"]] == heads
    path = tmp_path / "mcd.ckpt"
    cli.trainer.save_checkpoint(path)
    stored = torch.load(path, weights_only=True)["hyper_parameters"]["optimizer"]
    assert stored["class_path"] == "torch.optim.SGD" and stored["init_args"]["momentum"] == 0.5
    reloaded = MCD.load_from_checkpoint(path, weights_only=True)
    assert [(type(o), o.defaults["lr"]) for o in reloaded.configure_optimizers()] == [(torch.optim.SGD, 0.05)] * 2
    assert PAPER_OPTIMIZER == {"class_path": "torch.optim.Adam", "init_args": {"lr": 2e-4, "weight_decay": 5e-4}}


def _mcd_with_plain_optimisers() -> tuple[MCD, dict[str, dict[str, torch.Tensor]]]:
    torch.manual_seed(0)
    model = MCD(net=SMALL_NET, optimizer=functools.partial(torch.optim.Adam, lr=0.01, weight_decay=5e-4))
    opts = model.configure_optimizers()
    model.optimizers = lambda: opts  # what the trainer would hand back
    model.manual_backward = lambda loss: loss.backward()
    return model, opts


def _snapshot(model: MCD) -> dict[str, dict[str, torch.Tensor]]:
    parts = {"G": model.features, "F1": model.classifier, "F2": model.classifier2}
    return {k: {n: p.detach().clone() for n, p in m.named_parameters()} for k, m in parts.items()}


def _changed(before, after) -> dict[str, bool]:
    return {k: any(not torch.equal(before[k][n], after[k][n]) for n in before[k]) for k in before}


def test_mcd_step_b_updates_only_the_classifiers_and_step_c_only_the_generator():
    model, _ = _mcd_with_plain_optimisers()
    model.train()
    x_s, y_s, x_t = torch.randn(8, 3, 16, 16), torch.arange(8) % 10, torch.randn(8, 3, 16, 16) + 1.0
    before = _snapshot(model)
    model.step_b(x_s, y_s, x_t)
    assert _changed(before, _snapshot(model)) == {"G": False, "F1": True, "F2": True}

    before = _snapshot(model)
    model.step_c(x_t)
    assert _changed(before, _snapshot(model)) == {"G": True, "F1": False, "F2": False}


def test_mcd_skipping_the_fixed_parts_gradients_changes_no_result(monkeypatch):
    """Step B without a backward pass through G and step C with F1, F2 frozen (one process) give bit-identical
    parameters and batch-norm statistics to the full backward passes DDP's reducer needs."""
    x_s, y_s, x_t = torch.randn(8, 3, 16, 16), torch.arange(8) % 10, torch.randn(8, 3, 16, 16) + 1.0
    states = {}
    for ddp_like in (False, True):
        model, _ = _mcd_with_plain_optimisers()
        monkeypatch.setattr(MCD, "_reducer_wants_every_parameter", lambda self, on=ddp_like: on)
        model.log = lambda *args, **kwargs: None
        model.log_train_acc = lambda *args, **kwargs: None
        model.train()
        for _ in range(3):
            model.step_a(x_s, y_s)
            model.step_b(x_s, y_s, x_t)
            model.step_c(x_t)
        assert all(p.requires_grad for p in model.parameters())  # step C gives the classifiers back
        states[ddp_like] = {k: v.clone() for k, v in model.state_dict().items()}
    assert state_dict_equal(states[False], states[True])


# ---------------------------------------------------------------------------------------------- fits
@pytest.mark.parametrize("method", METHODS)
def test_each_method_fits_the_embedded_default_and_logs(method, tmp_path):
    cli = run_cli(
        "fit", "--config", _config(method), *SMALL, *NO_LOG, "--trainer.max_epochs=1",
        f"--trainer.default_root_dir={tmp_path}",
    )  # fmt: skip
    metrics = cli.trainer.callback_metrics
    expected = {
        "val/source_acc",
        "val/target_acc",
        "val/target_entropy",
        "val/label_free_score",
        "val/proxy_a_distance",
    }
    assert expected <= set(metrics), sorted(metrics)
    assert any(k.startswith("train/loss") for k in metrics)
    steps_per_batch = 2 + 1 + 4 if method == "mcd" else 1
    assert cli.trainer.global_step == 4 * steps_per_batch
    assert cli.model.hparams.input_shape == (3, 16, 16)  # 8x8 grey source conformed to the 16x16 RGB target
    if method == "dann":
        assert {"val/domain_acc", "train/grl_lambda", "train/domain_acc"} <= set(metrics)
        assert 0 < float(metrics["train/grl_lambda"]) < 1
    figures = list(tmp_path.rglob("val_feature_embedding*.png"))
    assert len(figures) == 1, figures


def test_dann_lambda_and_lr_schedules_span_the_run_step_by_step(tmp_path):
    """Over any run length (a short one included) lambda_p rises from 0 along 2 / (1 + exp(-10 p)) - 1 and the lr
    decays along lr0 / (1 + 10 p)^0.75, with p = step / total steps, and the domain loss enters the total loss."""
    import lightning as L

    from datamodules.domains import TwoDomainDataModule

    class Record(L.Callback):
        rows: list = []

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            self.rows.append((pl_module.grl_coefficient(), trainer.optimizers[0].param_groups[0]["lr"]))

    model = DANN(net=SMALL_NET, embedding="none")
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    model.configure_optimizers = lambda: {
        "optimizer": opt, "lr_scheduler": {"scheduler": InverseDecayLR(opt), "interval": "step"}
    }  # fmt: skip
    recorder = Record()
    trainer = L.Trainer(
        max_steps=8, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False, callbacks=[recorder],
        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0, default_root_dir=tmp_path,
    )  # fmt: skip
    trainer.fit(model, datamodule=TwoDomainDataModule(limit_train_samples=256, normalize="per_domain"))
    lambdas, lrs = zip(*recorder.rows, strict=True)
    assert lambdas == pytest.approx([dann_lambda(step / 8) for step in range(8)])
    assert lrs == pytest.approx([0.01 * dann_lr_factor(step / 8) for step in range(8)])
    assert float(trainer.callback_metrics["train/loss_domain"]) > 0


@pytest.mark.parametrize(
    ("config", "features"),
    [*((f"{method}_mnistm", 800) for method in METHODS), ("dann_paper_mnistm", 768), ("source_only_paper_mnistm", 768)],
)
def test_real_data_configs_fit_on_files_in_the_mnist_layouts(config, features, tmp_path):
    """``configs/*_mnistm.yaml`` on tiny MNIST IDX files and an MNIST-M tar.gz: 28x28 RGB, flattened features (the
    paper's 768 from 5x5 convs [32, 48]; 800 from the wider [64, 50])."""
    from tests.datamodules.test_domains import _mnist, _mnistm, _tar

    mnist = _mnist(tmp_path / "mnist", n=64)
    archive = _tar(_mnistm(tmp_path / "mnistm", n_train=64, n_test=16), tmp_path / "mnist_m.tar.gz")
    cli = run_cli(
        "fit", "--config", _config(config), *QUICK, *NO_LOG, "--trainer.accelerator=cpu",
        "--trainer.devices=1", "--trainer.max_epochs=1", "--data.init_args.batch_size=16",
        "--model.init_args.embedding=none", f"--trainer.default_root_dir={tmp_path}",
        f"--data.init_args.source.init_args.root={mnist}", f"--data.init_args.target.init_args.root={archive}",
    )  # fmt: skip
    assert cli.model.hparams.input_shape == (3, 28, 28)
    assert cli.model.features(torch.zeros(2, 3, 28, 28)).shape == (2, features)
    assert "val/target_acc" in cli.trainer.callback_metrics


def test_real_data_config_without_the_target_path_fails_in_one_line(tmp_path, capsys):
    import cli
    from tests.datamodules.test_domains import _mnist

    argv = ["fit", "--config", _config("dann_mnistm"), f"--data.init_args.source.init_args.root={tmp_path / 'm'}"]
    _mnist(tmp_path / "m")
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: MNISTMSource.root is required"), err


def test_non_oracle_refuses_target_labels_and_oracle_needs_them(tmp_path):
    with pytest.raises(ValueError, match=r"data.init_args.train_on"):
        run_cli(
            "fit", "--config", _config("dann"), *SMALL, *NO_LOG, "--data.init_args.train_on=target",
            "--trainer.max_steps=1", f"--trainer.default_root_dir={tmp_path / 'dann'}",
        )  # fmt: skip
    with pytest.raises(ValueError, match=r"data.init_args.train_on"):
        run_cli(
            "fit", "--config", _config("target_oracle"), *SMALL, *NO_LOG, "--data.init_args.train_on=source",
            "--trainer.max_steps=1", f"--trainer.default_root_dir={tmp_path / 'oracle'}",
        )  # fmt: skip


def test_mcd_refuses_a_top_level_optimizer_section_and_names_its_own_factory(tmp_path):
    """The rule for a lecture with several optimisers: its factories are `model.init_args.optimizer`; a top-level
    `optimizer:` would replace both of MCD's optimisers with one, so it is an error that names the setting to use."""
    with pytest.raises(ValueError, match=r"model\.init_args\.optimizer"):
        run_cli(
            "fit", "--config", _config("mcd"), *SMALL, *NO_LOG, "--optimizer=torch.optim.SGD",
            "--optimizer.lr=0.1", "--trainer.max_steps=1", f"--trainer.default_root_dir={tmp_path}",
        )  # fmt: skip


# ---------------------------------------------------------------------------------------------- resume
def _resume_base(method: str) -> list[str]:
    extra = ["--model.init_args.num_k=1"] if method == "mcd" else []  # 4 optimiser steps per batch
    return ["fit", "--config", _config(method), *SMALL, *NO_LOG, "--trainer.max_epochs=2",
            "--model.init_args.embedding=none", "--model.init_args.net.dropout=0.3", *extra]  # fmt: skip


@pytest.mark.parametrize(("method", "stop_at", "total"), [("dann", 6, 8), ("mcd", 12, 32)])
def test_resume_mid_epoch_is_exact(method, stop_at, total, tmp_path):
    base = _resume_base(method)
    full = run_cli(*base, f"--trainer.default_root_dir={tmp_path / 'full'}")
    assert full.trainer.global_step == total
    ckpt = crash_after_checkpoint(base, stop_at, tmp_path / "ckpt")
    assert len(torch.load(ckpt, weights_only=True)["optimizer_states"]) == (2 if method == "mcd" else 1)
    resumed = run_cli(*base, f"--trainer.default_root_dir={tmp_path / 'resumed'}", f"--ckpt_path={ckpt}")
    assert resumed.trainer.global_step == total
    assert state_dict_equal(resumed.model.state_dict(), full.model.state_dict()), "resumed weights differ"


def test_resume_without_the_sampler_skip_would_differ(tmp_path, monkeypatch):
    """Guards the test above: if the two-domain loader did not skip the batches already trained on, it would fail."""
    import datamodules.domains

    base = _resume_base("dann")
    full = run_cli(*base, f"--trainer.default_root_dir={tmp_path / 'full'}")
    ckpt = crash_after_checkpoint(base, 2, tmp_path / "ckpt")
    monkeypatch.setattr(datamodules.domains, "resume_sampler", lambda trainer, sampler, batch_size: None)
    resumed = run_cli(*base, f"--trainer.default_root_dir={tmp_path / 'resumed'}", f"--ckpt_path={ckpt}")
    assert not state_dict_equal(resumed.model.state_dict(), full.model.state_dict())


# ---------------------------------------------------------------------------------------------- DDP
@pytest.mark.slow
@pytest.mark.parametrize("method", ["dann", "mcd"])  # automatic and manual optimisation
def test_runs_under_two_process_ddp_with_synced_metrics(method, tmp_path):
    result = run_cli_subprocess(
        "fit", "--config", _config(method), "--config", CPU, *QUICK, "--trainer.strategy=ddp",
        "--trainer.devices=2", "--trainer.max_epochs=1", "--data.init_args.limit_train_samples=128",
        "--model.init_args.embedding=pca",  # the config's W&B logger (offline) and checkpoint callback stay
        "--trainer.callbacks+=tests.helpers.MetricsDump", f"--trainer.callbacks.out_dir={tmp_path}",
        cwd=tmp_path, env={"OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    rank0, rank1 = (json.loads(Path(tmp_path / f"fit-rank{r}.json").read_text()) for r in (0, 1))
    assert {"val/target_acc", "val/source_acc", "val/label_free_score", "val/proxy_a_distance"} <= set(rank0)
    assert ("val/domain_acc" in rank0) == (method == "dann")
    assert rank0 == rank1
    assert len(list(tmp_path.rglob("val_feature_embedding*.png"))) == 1  # rank zero only
