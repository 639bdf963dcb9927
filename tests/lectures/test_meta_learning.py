"""Meta-learning lecture: inner-loop invariants, meta-gradients against hand-computed references, episodes,
sources, Lightning evaluation with gradients, resume and DDP meta-gradient averaging."""

from __future__ import annotations

import io
import zipfile
from functools import partial
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import nn

from cli import main
from datamodules.episodes import EpisodeSampler, EpisodicDataModule
from datamodules.errors import SettingError
from datamodules.few_shot_sources import GlyphSource, OmniglotSource
from datamodules.sources import HFDatasetSource, ImageFolderSource, ImageSource, ImageSplits
from lecture_modules.meta_learning.anil import ANIL
from lecture_modules.meta_learning.core import ConvNet, ConvNetSpec, adaptation_curve, mean_ci95, over_tasks
from lecture_modules.meta_learning.fomaml import FOMAML
from lecture_modules.meta_learning.maml import MAML, maml_task
from lecture_modules.meta_learning.reptile import Reptile, reptile_task
from tests.helpers import (
    CONFIGS,
    QUICK,
    SMOKE,
    crash_after_checkpoint,
    run_cli,
    run_cli_parse_only,
    run_cli_subprocess,
    state_dict_equal,
)

MAML_YAML = str(CONFIGS / "maml.yaml")
# Small glyph set and meta-batches so a run takes seconds.
SMALL = [
    "--data.init_args.source.init_args.num_classes",
    "60",
    "--data.init_args.source.init_args.samples_per_class",
    "4",
    "--data.init_args.meta_batch_size",
    "4",
    "--data.init_args.eval_meta_batch_size",
    "5",
    "--data.init_args.episodes_per_epoch",
    "8",
    "--data.init_args.val_episodes",
    "10",
    "--data.init_args.test_episodes",
    "10",
    "--data.init_args.rotations",
    "false",
    "--model.init_args.net.hidden",
    "8",
]
NO_LOG = ["--trainer.logger", "false", "--trainer.callbacks=[]"]


def _task_batch(tasks: int = 3, ways: int = 5, shots: int = 1, queries: int = 2, dtype=torch.float64):
    g = torch.Generator().manual_seed(0)
    return (
        torch.randn(tasks, ways * shots, 1, 16, 16, generator=g, dtype=dtype),
        torch.arange(ways).repeat_interleave(shots).repeat(tasks, 1),
        torch.randn(tasks, ways * queries, 1, 16, 16, generator=g, dtype=dtype),
        torch.arange(ways).repeat_interleave(queries).repeat(tasks, 1),
    )


def _meta_grad(model: nn.Module, params: dict, batch, vectorize: bool, **task_kwargs) -> dict[str, torch.Tensor]:
    model.zero_grad()
    losses, _ = over_tasks(partial(maml_task, model, **task_kwargs), params, batch, vectorize)
    losses.mean().backward()
    return {k: p.grad.clone() for k, p in model.named_parameters()}


# ---------------------------------------------------------------------------------------------------- core
def test_adaptation_leaves_meta_parameters_untouched():
    torch.manual_seed(0)
    net = ConvNet((1, 16, 16), 5, hidden=8, blocks=2)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    xs, ys, xq, yq = (t[0].float() if t.is_floating_point() else t[0] for t in _task_batch())
    loss, _ = maml_task(net, dict(net.named_parameters()), xs, ys, xq, yq, steps=3, lr=0.4)
    assert all(p.grad is None for p in net.parameters())  # adaptation used torch.func.grad, not .grad
    assert state_dict_equal(net.state_dict(), before)
    loss.backward()  # the meta-gradient reaches the meta-parameters, which still hold their values
    assert all(p.grad is not None for p in net.parameters()) and state_dict_equal(net.state_dict(), before)
    _, accs = adaptation_curve(net, {k: v.detach() for k, v in net.named_parameters()}, xs, ys, xq, yq, 3, 0.4)
    assert accs.shape == (4,) and state_dict_equal(net.state_dict(), before)


def _softmax_ce_grads(w, b, x, y):
    """Hand-derived gradient of mean softmax cross-entropy of ``x @ w.T + b``: (p - onehot)^T x / n."""
    p = torch.softmax(x @ w.T + b, dim=1)
    d = (p - F.one_hot(y, w.shape[0]).to(p.dtype)) / len(y)
    return d.T @ x, d.sum(0)


def test_first_order_gradient_matches_hand_computed_reference():
    torch.manual_seed(0)
    model = nn.Linear(4, 3).double()
    xs, xq = torch.randn(6, 4, dtype=torch.float64), torch.randn(9, 4, dtype=torch.float64)
    ys, yq = torch.tensor([0, 1, 2, 0, 1, 2]), torch.tensor([0, 1, 2] * 3)
    w, b, lr = model.weight.detach(), model.bias.detach(), 0.5
    for _ in range(2):  # two inner steps by hand
        gw, gb = _softmax_ce_grads(w, b, xs, ys)
        w, b = w - lr * gw, b - lr * gb
    ref_w, ref_b = _softmax_ce_grads(w, b, xq, yq)  # FOMAML: the query gradient at the adapted weights
    loss, _ = maml_task(model, dict(model.named_parameters()), xs, ys, xq, yq, steps=2, lr=lr, first_order=True)
    loss.backward()
    torch.testing.assert_close(model.weight.grad, ref_w)
    torch.testing.assert_close(model.bias.grad, ref_b)


class _Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Linear(4, 6), nn.Tanh())
        self.head = nn.Linear(6, 3)

    def forward(self, x):
        return self.head(self.features(x))


@pytest.mark.parametrize("head_only", [False, True], ids=["maml", "anil"])
def test_second_order_matches_finite_differences_and_differs_from_first_order(head_only):
    torch.manual_seed(0)
    model = _Tiny().double()
    xs, xq = torch.randn(6, 4, dtype=torch.float64), torch.randn(9, 4, dtype=torch.float64)
    ys, yq = torch.tensor([0, 1, 2, 0, 1, 2]), torch.tensor([0, 1, 2] * 3)
    params = dict(model.named_parameters())
    task = partial(maml_task, model, x_support=xs, y_support=ys, x_query=xq, y_query=yq, steps=2, lr=0.8)

    def grads(first_order):
        model.zero_grad()
        task(params, first_order=first_order, head_only=head_only)[0].backward()
        return torch.cat([p.grad.flatten() for p in model.parameters()])

    second, first = grads(False), grads(True)
    direction = torch.randn_like(second)
    flat = torch.cat([p.detach().flatten() for p in model.parameters()])

    def loss_at(vector):
        chunks = torch.split(vector, [p.numel() for p in model.parameters()])
        shifted = {k: c.view_as(p) for (k, p), c in zip(params.items(), chunks, strict=True)}
        return float(task(shifted, first_order=False, head_only=head_only)[0])

    eps = 1e-6
    numeric = (loss_at(flat + eps * direction) - loss_at(flat - eps * direction)) / (2 * eps)
    assert float(second @ direction) == pytest.approx(numeric, rel=1e-6, abs=1e-8)
    assert float(first @ direction) != pytest.approx(numeric, rel=1e-3)  # dropping the Hessian term changes it


@pytest.mark.parametrize("kind", ["maml", "fomaml", "anil"])
def test_vectorized_tasks_match_the_per_task_loop(kind):
    """vmap over tasks gives the per-task loop's meta-gradient (second order included: a regression test for
    batch norm, whose fused kernel under vmap got second-order gradients wrong)."""
    torch.manual_seed(0)
    net = ConvNet((1, 16, 16), 5, hidden=8, blocks=2).double()
    params = dict(net.named_parameters())
    kwargs = {"steps": 2, "lr": 0.4, "first_order": kind == "fomaml", "head_only": kind == "anil"}
    loop = _meta_grad(net, params, _task_batch(), vectorize=False, **kwargs)
    vmapped = _meta_grad(net, params, _task_batch(), vectorize=True, **kwargs)
    for k in loop:
        torch.testing.assert_close(vmapped[k], loop[k], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("adapt", ["all", "head"])
def test_task_by_task_meta_gradient_equals_the_vectorized_one(adapt):
    """The looped training path takes each task's gradient at once (freeing its graph) and carries the sum into
    backward(); the vmapped path backpropagates one graph. Same meta-loss, same meta-gradient."""
    torch.manual_seed(0)
    batch = _task_batch()  # float64, so the comparison is exact up to summation order
    grads, losses = [], []
    for vectorize in (False, True):
        torch.manual_seed(0)
        module = MAML(
            input_shape=(1, 16, 16), net=ConvNetSpec(8, 2), inner_steps=2, adapt=adapt, vectorize=vectorize
        ).double()
        objective, loss, _ = module.meta_loss(batch)
        objective.backward()
        grads.append({k: p.grad for k, p in module.net.named_parameters()})
        losses.append(float(loss))
    assert losses[0] == pytest.approx(losses[1], rel=1e-12)
    for k in grads[0]:
        torch.testing.assert_close(grads[0][k], grads[1][k], rtol=1e-9, atol=1e-12)


def test_reptile_meta_gradient_is_theta_minus_mean_adapted_weights():
    torch.manual_seed(0)
    module = Reptile(input_shape=(1, 16, 16), net={"hidden": 8, "blocks": 2}, inner_lr=0.1, inner_steps=3)
    batch = tuple(t.float() if t.is_floating_point() else t for t in _task_batch())
    theta = {k: v.detach().clone() for k, v in module.net.named_parameters()}
    adapted = []
    for xs, ys, xq, yq in zip(*batch, strict=True):  # plain SGD with a module copy, by hand
        net = ConvNet((1, 16, 16), 5, hidden=8, blocks=2)
        net.load_state_dict(theta)
        opt = torch.optim.SGD(net.parameters(), lr=0.1)
        for _ in range(3):
            opt.zero_grad()
            F.cross_entropy(net(torch.cat([xs, xq])), torch.cat([ys, yq])).backward()
            opt.step()
        adapted.append(dict(net.named_parameters()))
    loss, _, metrics = module.meta_loss(batch)
    loss.backward()
    for k, p in module.net.named_parameters():
        expected = theta[k] - torch.stack([a[k].detach() for a in adapted]).mean(0)
        torch.testing.assert_close(p.grad, expected, rtol=1e-4, atol=1e-6)
    assert float(metrics["train/meta_step"]) > 0
    fast = reptile_task(module.net, theta, *(t[0] for t in batch), steps=3, lr=0.1)
    assert not any(v.requires_grad for v in fast.values())


def test_mean_ci95():
    mean, ci = mean_ci95(torch.tensor([0.0, 1.0] * 50))
    assert mean == pytest.approx(0.5) and ci == pytest.approx(1.96 * np.std([0, 1] * 50, ddof=1) / 10)


def test_invalid_settings_name_the_argument():
    with pytest.raises(SettingError, match=r"^model\.init_args\.inner_lr must be > 0, got 0\.0$"):
        MAML(inner_lr=0.0)
    with pytest.raises(SettingError, match=r"^model\.init_args\.net\.blocks must be at most 3 for \(8, 8\).* got 4$"):
        MAML(input_shape=(1, 8, 8))
    with pytest.raises(SettingError, match=r"^model\.init_args\.net\.hidden must be an integer >= 1, got 0$"):
        ANIL(net=ConvNetSpec(hidden=0))
    with pytest.raises(SettingError, match=r"^model\.init_args\.net: unknown field\(s\) \['widths'\]; allowed: hidden"):
        Reptile(net={"widths": [8]})
    with pytest.raises(SettingError, match=r"^model\.init_args\.adapt must be 'all' or 'head', got 'body'$"):
        FOMAML(adapt="body")
    with pytest.raises(SettingError, match=r"^model\.init_args\.num_classes must be >= 2 \(.* data\.init_args\.ways"):
        MAML(num_classes=1)
    with pytest.raises(SettingError, match=r"^model\.init_args\.eval_inner_steps must be >= 1, got 0$"):
        Reptile(eval_inner_steps=0)
    with pytest.raises(ValueError, match=r"episodes_per_epoch"):
        EpisodicDataModule(meta_batch_size=4, episodes_per_epoch=6)


def test_a_meta_loss_that_blows_up_names_inner_lr_and_the_meta_step_size(capfd):
    """Through cli.main: one error line naming the term, and a hint naming the inner-loop step first."""
    blow_up = ["--model.init_args.inner_lr", "1e30"]
    code = main(["fit", "--config", MAML_YAML, "--config", SMOKE, *SMALL, *NO_LOG, *blow_up])
    err = capfd.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert [line for line in err.splitlines() if line.startswith("error:")] == [
        "error: MAML: loss term 'meta' is nan at global step 0 (epoch 0, stage 'train'). Training stopped."
    ]
    [hint] = [line for line in err.splitlines() if line.startswith("hint:")]
    assert hint.startswith(
        "hint: lower the inner-loop step model.init_args.inner_lr (now 1e+30) or the meta step size "
        "optimizer.init_args.lr (now 0.001); or clip gradients (trainer.gradient_clip_val)"
    )


@pytest.mark.parametrize("cls", [MAML, FOMAML, ANIL, Reptile])
def test_every_meta_learner_names_its_own_step_sizes_for_a_non_finite_loss(cls):
    hint = cls(inner_lr=0.25, net=ConvNetSpec(hidden=4, blocks=1)).non_finite_hint("meta")
    assert "model.init_args.inner_lr (now 0.25)" in hint and "optimizer.init_args.lr" in hint


def test_the_network_is_one_spec_stored_as_plain_data():
    spec = ConvNetSpec(hidden=8, blocks=2)
    assert ConvNetSpec.of(spec.as_dict(), owner="MAML.net") == spec
    torch.manual_seed(0)
    module = MAML(input_shape=(1, 16, 16), net=spec)
    torch.manual_seed(0)
    direct = ConvNet((1, 16, 16), 5, hidden=8, blocks=2)
    assert state_dict_equal(module.net.state_dict(), direct.state_dict())  # same layers, same draws
    assert module.hparams["net"] == {"hidden": 8, "blocks": 2} and type(module.hparams["net"]) is dict
    assert MAML(net={"hidden": 8}).hparams["net"] == {"hidden": 8, "blocks": 4}


@pytest.mark.parametrize(
    ("cls", "old"),
    [
        (MAML, {"hidden": 8, "blocks": 2, "inner_lr": 0.3, "first_order": False, "adapt": "all", "vectorize": False}),
        (FOMAML, {"hidden": 8, "blocks": 2, "inner_lr": 0.3, "first_order": True, "adapt": "all", "vectorize": False}),
        (Reptile, {"hidden": 8, "blocks": 2, "inner_lr": 0.3, "first_order": True, "adapt": "all", "vectorize": False}),
    ],
    ids=["maml", "fomaml", "reptile"],
)
def test_checkpoints_from_before_the_net_argument_keep_their_network(tmp_path, cls, old):
    """Checkpoints written before ``net`` stored ``hidden`` and ``blocks`` (and, for Reptile, the MAML switches
    ``first_order``/``adapt`` the shell saved); upgraded, they rebuild the same module and load its weights."""
    module = cls(input_shape=(1, 16, 16), net={"hidden": 8, "blocks": 2}, inner_lr=0.3)
    path = tmp_path / "old.ckpt"
    torch.save({"hyper_parameters": {"num_classes": 5, "input_shape": (1, 16, 16), **old},
                "state_dict": module.state_dict()}, path)  # fmt: skip
    ckpt = torch.load(path, weights_only=True)
    new = cls.upgrade_hparams(ckpt["hyper_parameters"])
    assert new["net"] == {"hidden": 8, "blocks": 2} and not {"hidden", "blocks"} & set(new)
    if cls is Reptile:
        assert not {"first_order", "adapt"} & set(new)
    rebuilt = cls(**new)
    rebuilt.load_state_dict(ckpt["state_dict"])  # strict: same tensor names and shapes
    assert dict(rebuilt.hparams) == dict(module.hparams)
    assert cls.upgrade_hparams(dict(module.hparams)) == dict(module.hparams)  # today's checkpoints pass unchanged


# ---------------------------------------------------------------------------------------------------- variants
MAML_ARGUMENTS = ["num_classes", "input_shape", "net.hidden", "net.blocks", "inner_lr", "inner_steps",
                  "eval_inner_steps", "first_order", "adapt", "vectorize"]  # fmt: skip


@pytest.mark.parametrize("variant", ["FOMAML", "ANIL"])
def test_a_variants_help_lists_every_maml_argument(variant):
    """FOMAML and ANIL state only the default they change and forward the rest to MAML with ``**kwargs``:
    jsonargparse follows that, so ``--model.help`` still lists every MAML argument."""
    out = run_cli_subprocess("fit", "--model.help", variant)
    assert out.returncode == 0, out.stderr[-3000:]
    missing = [arg for arg in MAML_ARGUMENTS if f"--model.{arg} " not in out.stdout]
    assert not missing, f"{variant}: --model.help does not list {missing}:\n{out.stdout}"


@pytest.mark.parametrize(
    ("config", "own"),
    [("maml", {"first_order": False, "adapt": "all"}), ("fomaml", {"first_order": True, "adapt": "all"}),
     ("anil", {"first_order": False, "adapt": "head"})],
)  # fmt: skip
def test_print_config_shows_each_variants_own_default(config, own):
    out = run_cli_subprocess("fit", "--config", str(CONFIGS / f"{config}.yaml"), "--print_config")
    assert out.returncode == 0, out.stderr[-3000:]
    init_args = yaml.safe_load(out.stdout)["model"]["init_args"]
    assert {k: init_args[k] for k in own} == own
    assert init_args["net"] == {"hidden": 64, "blocks": 4} and init_args["inner_lr"] == 0.4  # MAML's defaults
    torch.manual_seed(0)
    instance = run_cli_parse_only("--config", str(CONFIGS / f"{config}.yaml")).model
    assert (instance.first_order, instance.head_only) == (own["first_order"], own["adapt"] == "head")


# ---------------------------------------------------------------------------------------------------- episodes
class _ArraySource(ImageSource):
    def __init__(self, counts: list[int], size: int = 8) -> None:
        self.counts, self.size = counts, size

    def load(self) -> ImageSplits:
        g = torch.Generator().manual_seed(0)
        x = torch.randint(0, 256, (sum(self.counts), 1, self.size, self.size), generator=g, dtype=torch.uint8)
        y = torch.arange(len(self.counts)).repeat_interleave(torch.tensor(self.counts))
        return ImageSplits({"train": (x, y)}, [f"class{i:02d}" for i in range(len(self.counts))])


def _dm(source, **kwargs) -> EpisodicDataModule:
    defaults = {"ways": 3, "shots": 2, "queries": 2, "meta_batch_size": 4, "episodes_per_epoch": 8, "image_size": 8,
                "val_fraction": 0.25, "test_fraction": 0.25}  # fmt: skip
    dm = EpisodicDataModule(source, **{**defaults, **kwargs})
    dm.setup()
    return dm


def test_episodes_are_deterministic_disjoint_and_well_formed():
    dm = _dm(_ArraySource([5] * 20), rotations=True)
    names = {split: set(s.names) for split, s in dm.splits.items()}
    base = {n.split(" (rot")[0] for n in names["train"]}
    assert not base & names["val"] and not base & names["test"] and not names["val"] & names["test"]
    assert len(names["train"]) == 4 * len(base)  # rotations add three classes per meta-train class
    data = dm._dataset("train")
    xs, ys, xq, yq = data[7]
    assert xs.shape == (6, 1, 8, 8) and xq.shape == (6, 1, 8, 8)
    assert ys.tolist() == [0, 0, 1, 1, 2, 2] and yq.tolist() == ys.tolist()
    again = _dm(_ArraySource([5] * 20), rotations=True)._dataset("train")[7]
    assert all(torch.equal(a, b) for a, b in zip(again, (xs, ys, xq, yq), strict=True))
    assert not torch.equal(data[8][0], xs)
    flat = torch.cat([xs, xq]).flatten(1)
    assert len(torch.unique(flat, dim=0)) == 12  # no image twice in one task


def test_training_episodes_split_across_ranks_and_continue_across_epochs():
    single = EpisodeSampler(8, num_replicas=1, rank=0)
    ranks = [EpisodeSampler(8, num_replicas=2, rank=r) for r in (0, 1)]
    for sampler in (single, *ranks):
        sampler.set_epoch(1)
    one = list(single)
    assert one == list(range(8, 16))  # epoch 1 continues after epoch 0's episodes
    two = [list(s) for s in ranks]
    for step in range(2):  # meta-batch 4: one process takes 4, each of two ranks takes 2
        assert sorted(two[0][2 * step : 2 * step + 2] + two[1][2 * step : 2 * step + 2]) == one[4 * step : 4 * step + 4]


def test_too_few_images_or_classes_name_the_class():
    with pytest.raises(ValueError, match=r"class 'class\d\d' \(meta-test\) has 3 images.*needs 4 per class"):
        _dm(_ArraySource([3] * 20))
    with pytest.raises(ValueError, match=r"meta-test split has 2 classes, but 3-way"):
        _dm(_ArraySource([5] * 10), test_fraction=0.2)
    shared = _ArraySource([5] * 12).load()
    shared.splits["test"] = shared.splits["train"]  # a classification data set: same classes in train and test

    class _Shared(ImageSource):
        def load(self) -> ImageSplits:
            return shared

    with pytest.raises(ValueError, match=r"classes \[.*class.*\] are in the source's train split and in its val/test"):
        _dm(_Shared())


def test_glyph_source_draws_distinct_letters():
    loaded = GlyphSource(num_classes=30, samples_per_class=3, image_size=20).load()
    x, _ = loaded.splits["train"]
    assert x.shape == (90, 1, 20, 20) and x.dtype == torch.uint8 and len(set(loaded.classes)) == 30
    assert all(" (" in name for name in loaded.classes)  # Unicode name plus the letter
    assert not torch.equal(x[0], x[1])  # each sample is distorted differently
    with pytest.raises(ValueError, match=r"GlyphSource\.scripts"):
        GlyphSource(scripts=["KLINGON"])


def _png(value: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    arr = np.full((105, 105), 255, dtype=np.uint8)
    arr[value : value + 20, 30:60] = 0  # a black stroke on white, as Omniglot
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _omniglot_files(part: str, alphabets: int, characters: int, drawers: int = 3):
    for a in range(alphabets):
        for c in range(characters):
            for d in range(drawers):
                yield f"{part}/Alphabet_{a}/character{c + 1:02d}/{a:02d}{c:02d}_{d + 1:02d}.png", _png(10 * c + d)


@pytest.mark.parametrize("layout", ["zip", "folder"])
def test_omniglot_source_reads_the_original_layout(tmp_path, layout):
    for part in ("images_background", "images_evaluation"):
        files = list(_omniglot_files(part, 2, 4))
        if layout == "zip":
            with zipfile.ZipFile(tmp_path / f"{part}.zip", "w") as zf:
                for name, data in files:
                    zf.writestr(name, data)
        else:
            for name, data in files:
                (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
                (tmp_path / name).write_bytes(data)
    dm = _dm(OmniglotSource(str(tmp_path), image_size=28), ways=2, shots=1, queries=1, image_size=28, val_fraction=0.25)
    assert dm.input_shape == (1, 28, 28)
    assert dm.splits["test"].names[0] == "Alphabet_0/character01" and len(dm.splits["test"].names) == 8
    assert len(dm.splits["train"].names) == 6 and len(dm.splits["val"].names) == 2  # background only
    assert float(dm.splits["train"].images.mean()) < 0.5  # inverted: bright strokes on a dark background
    with pytest.raises(FileNotFoundError, match=r"OmniglotSource\.root does not exist"):
        OmniglotSource(str(tmp_path / "missing")).load()
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="images_background"):
        OmniglotSource(str(tmp_path / "empty")).load()


def test_image_folder_and_hf_dataset_sources(tmp_path):
    import datasets
    from PIL import Image

    rows = {"image": [], "label": []}
    for c in range(8):
        for i in range(3):
            arr = np.full((12, 12), 20 * c + i, dtype=np.uint8)
            (tmp_path / "tree" / f"c{c}").mkdir(parents=True, exist_ok=True)
            Image.fromarray(arr).save(tmp_path / "tree" / f"c{c}" / f"{i}.png")
            rows["image"].append(Image.fromarray(arr))
            rows["label"].append(c)
    datasets.Dataset.from_dict(rows).save_to_disk(str(tmp_path / "hf"))
    for source in (ImageFolderSource(str(tmp_path / "tree")), HFDatasetSource(str(tmp_path / "hf"))):
        dm = _dm(source, ways=2, shots=1, queries=2, image_size=12, val_fraction=0.4)
        assert {k: len(v.names) for k, v in dm.splits.items()} == {"test": 2, "val": 2, "train": 4}
        assert dm._dataset("test")[0][0].shape == (2, 1, 12, 12)


# ---------------------------------------------------------------------------------------------------- Lightning
def test_evaluation_under_trainer_defaults_keeps_no_graph_and_reports_ci(tmp_path, caplog):
    """The Trainer's default inference_mode=True: validation and test adapt anyway, leave the meta-parameters
    and their .grad alone, and report the mean accuracy with its 95% confidence interval."""
    dm = EpisodicDataModule(GlyphSource(60, 4), queries=1, meta_batch_size=4, episodes_per_epoch=8,
                            val_episodes=10, test_episodes=12, eval_meta_batch_size=5)  # fmt: skip
    model = MAML(net={"hidden": 8})
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, default_root_dir=tmp_path)
    assert trainer.validate_loop.inference_mode  # the default we must cope with
    with caplog.at_level("INFO"):
        trainer.test(model, datamodule=dm, verbose=False)
    assert state_dict_equal(model.state_dict(), before) and all(p.grad is None for p in model.parameters())
    metrics = trainer.callback_metrics
    assert {"test/acc", "test/acc_ci95", "test/acc_unadapted", "test/loss"} <= set(metrics)
    assert 0 < float(metrics["test/acc_ci95"]) < 0.5
    assert "95% CI over 12 tasks" in caplog.text
    assert model.curves["test"].shape == (4,)  # accuracy after 0..3 inner steps
    assert list(Path(tmp_path).rglob("test_adaptation_curve-*.png"))


def test_meta_training_learns_beyond_chance(tmp_path):
    """20 meta-steps of ANIL (the quickest learner here) on a small glyph set: well above chance (20%)."""
    cli = run_cli(
        "fit", "--config", str(CONFIGS / "anil.yaml"), *QUICK, *NO_LOG, *SMALL[:4],
        "--data.init_args.meta_batch_size", "16", "--data.init_args.episodes_per_epoch", "320",
        "--data.init_args.val_episodes", "40", "--data.init_args.eval_meta_batch_size", "20",
        "--model.init_args.net.hidden", "32", "--trainer.max_epochs", "1", "--trainer.default_root_dir", str(tmp_path),
    )  # fmt: skip
    assert cli.trainer.global_step == 20
    assert float(cli.trainer.callback_metrics["val/acc"]) > 0.4
    assert float(cli.trainer.callback_metrics["val/acc"]) > float(cli.trainer.callback_metrics["val/acc_unadapted"])


def test_resume_is_exact(tmp_path):
    base = ["fit", "--config", MAML_YAML, *QUICK, *NO_LOG, *SMALL, "--trainer.max_epochs", "3",
            "--trainer.accelerator", "cpu", "--trainer.devices", "1"]  # fmt: skip
    full = run_cli(*base, "--trainer.default_root_dir", str(tmp_path / "full"))
    assert full.trainer.global_step == 6
    ckpt = crash_after_checkpoint(base, 3, tmp_path / "ckpt")  # mid-epoch
    assert torch.load(ckpt, weights_only=True)["hyper_parameters"]["inner_lr"] == 0.4
    resumed = run_cli(*base, "--trainer.default_root_dir", str(tmp_path / "resumed"), "--ckpt_path", str(ckpt))
    assert resumed.trainer.global_step == 6
    assert state_dict_equal(resumed.model.state_dict(), full.model.state_dict())


# ---------------------------------------------------------------------------------------------------- DDP
class GradDump(L.Callback):
    """Test-only: saves every parameter's gradient of the first optimiser step, per rank (after DDP's all-reduce)."""

    def __init__(self, out_dir: str) -> None:
        self.out_dir = Path(out_dir)

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        if trainer.global_step == 0:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            grads = {k: p.grad.detach().clone() for k, p in pl_module.named_parameters()}
            torch.save(grads, self.out_dir / f"grad-rank{trainer.global_rank}.pt")


@pytest.mark.slow
@pytest.mark.parametrize("vectorize", [False, True], ids=["task-loop", "vmap"])
def test_ddp_meta_gradient_equals_single_process(tmp_path, vectorize):
    """Two processes with 4 tasks each give the meta-gradient of one process with the same 8 tasks, with tasks in
    a loop and mapped by vmap; validation runs on both ranks with the gradient-enabled evaluation and CI metrics
    gathered across them."""
    dump = "--trainer.callbacks+=tests.lectures.test_meta_learning.GradDump"
    common = ["fit", "--config", MAML_YAML, *QUICK, *NO_LOG, *SMALL, "--data.init_args.meta_batch_size", "8",
              "--trainer.max_steps", "2", "--model.init_args.vectorize", str(vectorize).lower(), dump]  # fmt: skip
    runs = {
        "one": ["--trainer.accelerator", "cpu", "--trainer.devices", "1"],
        "two": ["--trainer.accelerator", "cpu", "--trainer.strategy", "ddp", "--trainer.devices", "2"],
    }
    for name, hardware in runs.items():
        out = tmp_path / name
        result = run_cli_subprocess(
            *common, *hardware, "--trainer.callbacks.out_dir", str(out), "--trainer.default_root_dir", str(out),
            cwd=tmp_path, timeout=400,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr[-3000:]
    single = torch.load(tmp_path / "one" / "grad-rank0.pt", weights_only=True)
    for rank in (0, 1):
        ddp = torch.load(tmp_path / "two" / f"grad-rank{rank}.pt", weights_only=True)
        assert ddp.keys() == single.keys()
        for k in single:
            torch.testing.assert_close(ddp[k], single[k], rtol=1e-4, atol=1e-6)
