"""Explain — lecture 9 / HW9: attributions, feature visualisation and sanity checks for a trained classifier.

The lecture's experiment on any checkpoint of a registered classification-style lecture (rebuilt with
:func:`lecture_modules.checkpoints.load_lecture`, frozen; default: the shipped digits CNN, ``builtin:digits_cnn``):

1. Select test images (``select``): one or more per class, given indices, or the model's most confident mistakes.
2. Attribute (captum, :mod:`lecture_modules.xai.methods`): every method of ``methods`` for the predicted class, in
   the model's standardised input space, each image seeded by ``seed`` + its index.
3. Faithfulness: deletion and insertion curves and their AUC (Petsiuk et al. 2018, arXiv 1806.07421), and captum's
   infidelity and max-sensitivity (Yeh et al. 2019, arXiv 1901.09392).
4. Sanity checks (Adebayo et al. 2018, arXiv 1810.03292): re-initialise the layers from the top down (cascading
   randomisation); after each, the Spearman rank correlation (signed and absolute) and SSIM of the new maps with
   the original ones. With a network trained by ``fit`` on randomised labels, the same similarities against it
   (the data randomisation test).
5. Completeness of integrated gradients (Sundararajan et al. 2017, arXiv 1703.01365).
6. Feature visualisation: activation maximisation from noise for ``units`` units of each of ``visualise_layers``.

Everything is done by ``test`` (explanations have no training state). ``fit`` trains only the randomised-labels
copy of the checkpoint's network (memorising labels drawn from each training sample's index), which a later
``test --ckpt_path <that run's checkpoint>`` uses for step 4's data randomisation test.

Run: ``python cli.py test --config configs/xai.yaml``
"""

from __future__ import annotations

import copy
import math
from typing import Any, Literal

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import OptimizerCallable
from lightning.pytorch.utilities import rank_zero_info
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from datamodules.errors import SettingError
from lecture_modules.base import LectureModule, bad_setting, check_shapes, figure_dir, free_name
from lecture_modules.checkpoints import load_classifier
from lecture_modules.xai import core, report
from lecture_modules.xai.methods import METHODS, MethodSettings, attribute, infidelity, sensitivity

__all__ = ["Explain"]

SIMILARITIES = ("spearman", "spearman_abs", "ssim")


class Explain(LectureModule):
    """Explainable AI: attributions, sanity checks, faithfulness and feature visualisation of a checkpoint (HW9)."""

    def __init__(
        self,
        num_classes: int = 10,
        input_shape: tuple[int, int, int] = (1, 8, 8),
        checkpoint: str = "builtin:digits_cnn",
        methods: list[str] | None = None,
        select: Literal["classes", "indices", "mistakes"] = "classes",
        per_class: int = 1,
        indices: list[int] | None = None,
        mistakes: int = 8,
        gradcam_layer: str | None = None,
        ig_steps: int = 64,
        ig_internal_batch_size: int = 64,
        smoothgrad_samples: int = 16,
        smoothgrad_noise: float = 0.15,
        window: int = 4,
        surrogate_samples: int = 200,
        curve_steps: int = 16,
        metric_samples: int = 8,
        visualise_layers: list[str] | None = None,
        units: int = 8,
        am_steps: int = 128,
        seed: int = 0,
        optimizer: OptimizerCallable = torch.optim.AdamW,
    ) -> None:
        """
        Args:
            num_classes: number of classes (linked from the DataModule by the CLI).
            input_shape: (channels, height, width) of one image (linked from the DataModule by the CLI).
            checkpoint: the classifier to explain: a checkpoint of a registered lecture, or ``builtin:<name>``.
            methods: attribution methods (null: all of saliency, smoothgrad, integrated_gradients,
                input_x_gradient, gradcam, occlusion, lime, kernel_shap).
            select: which test images: ``classes`` (the first ``per_class`` of each class), ``indices`` (``indices``),
                ``mistakes`` (the ``mistakes`` wrong predictions with the highest confidence).
            per_class: images per class for ``select: classes``.
            indices: test-split indices for ``select: indices``.
            mistakes: how many mistakes ``select: mistakes`` explains.
            gradcam_layer: the module Grad-CAM attributes to, by its name in the checkpoint's lecture (null: the last
                convolution).
            ig_steps: integration steps of integrated gradients.
            ig_internal_batch_size: images per forward pass inside integrated gradients (bounds memory).
            smoothgrad_samples: noisy copies averaged by SmoothGrad.
            smoothgrad_noise: SmoothGrad's noise std as a fraction of the image's value range.
            window: occlusion window and LIME / KernelSHAP patch size, in pixels.
            surrogate_samples: perturbed samples drawn by LIME and KernelSHAP per image.
            curve_steps: points of the deletion and insertion curves (plus the start).
            metric_samples: perturbations drawn by captum's infidelity and max-sensitivity per image.
            visualise_layers: layers (names in the checkpoint's lecture) whose units activation maximisation shows
                (null: every convolution; ``[]``: none).
            units: units (channels or neurons) visualised per layer.
            am_steps: gradient-ascent steps of activation maximisation.
            seed: seed of the stochastic methods (per image: seed + index), of the randomisation and of the
                activation maximisation.
            optimizer: optimiser factory of the randomised-labels network that ``fit`` trains.
        """
        super().__init__()
        check_shapes(num_classes, input_shape)
        methods = list(METHODS if methods is None else methods)
        self._check_numbers(locals())
        unknown = [m for m in methods if m not in METHODS]
        if unknown or not methods or len(set(methods)) != len(methods):
            raise bad_setting("methods", methods, f"a non-empty list of distinct names of {', '.join(METHODS)}")
        if select == "indices" and not indices:
            raise bad_setting("indices", indices, "a non-empty list of test indices when select is 'indices'")
        self.save_hyperparameters(ignore=["optimizer"])
        self.methods = methods  # the resolved list (the hyper-parameters keep what was given, null included)
        self.optimizer_factory = optimizer
        self._frozen: dict[str, LectureModule] = {}  # the checkpoint's lecture, outside the submodules (prepare)
        self.layers: dict[str, nn.Module] = {}
        self.gradcam_name: str | None = None
        self.visualised: list[str] = []
        self.register_buffer("fitted", torch.tensor(False))
        self.register_buffer("mean", torch.zeros(1, input_shape[0], 1, 1))
        self.register_buffer("std", torch.ones(1, input_shape[0], 1, 1))
        self.train_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes, average="micro")
        self._selected: list[int] = []

    # ------------------------------------------------------------------ settings and the checkpoint
    def prepare(self) -> None:
        """Load the checkpoint (once; at ``setup``, or at first use outside a Trainer) and build what depends on it:
        the layer names (checked) and the randomised-labels copy. Not in ``__init__``: building another lecture while
        the CLI instantiates this one fails for lectures with ``**kwargs`` variants."""
        if self._frozen:
            return
        hp = self.hparams
        self._frozen["lecture"] = self._load(hp.checkpoint)
        self.layers = dict(self.lecture.named_modules())
        self.gradcam_name = self._layer_name("gradcam_layer", hp.gradcam_layer, self._convolutions()[-1:])
        self.visualised = (
            self._convolutions()
            if hp.visualise_layers is None
            else [self._layer_name("visualise_layers", n, []) for n in hp.visualise_layers]
        )
        copy_ = _Logits(copy.deepcopy(self.lecture).requires_grad_(True).train())  # fit trains it
        for name in core.parameterised_layers(copy_):
            core.randomise_layer(dict(copy_.named_modules())[name], seed=hp.seed + 1000)
        self.random_labels = copy_.to(self.device)

    @staticmethod
    def _check_numbers(args: dict[str, Any]) -> None:
        for name in ("per_class", "mistakes", "ig_steps", "ig_internal_batch_size", "smoothgrad_samples", "window",
                     "surrogate_samples", "curve_steps", "metric_samples", "units", "am_steps"):  # fmt: skip
            if args[name] < 1:
                raise bad_setting(name, args[name], ">= 1")
        if not 0 <= args["smoothgrad_noise"] < float("inf"):
            raise bad_setting("smoothgrad_noise", args["smoothgrad_noise"], ">= 0 (a fraction of the value range)")
        bad = [i for i in args["indices"] or [] if i < 0]
        if bad:
            raise bad_setting("indices", args["indices"], "test-split indices >= 0")

    def _load(self, checkpoint: str) -> nn.Module:
        """The checkpoint's lecture, frozen, in eval mode, checked against the data's shapes."""
        hp = self.hparams
        label = f"model.init_args.checkpoint ({checkpoint})"
        return load_classifier(checkpoint, input_shape=hp.input_shape, num_classes=hp.num_classes, label=label)

    def _convolutions(self) -> list[str]:
        return [n for n, m in self.layers.items() if isinstance(m, nn.Conv2d)]

    def _layer_name(self, key: str, name: str | None, default: list[str]) -> str | None:
        """A layer of the checkpoint's lecture by name (null: ``default``), else a SettingError listing them."""
        if name is None and default:
            return default[0]
        if name is None and self.methods and "gradcam" in self.methods:
            raise bad_setting(key, name, "a layer name: the model has no convolution to default to")
        if name is not None and name not in self.layers:
            known = [n for n, m in self.layers.items() if n and not list(m.children())][:40]
            raise bad_setting(key, name, f"a layer of the checkpoint's lecture: {', '.join(known)}")
        return name

    def settings(self, model: nn.Module | None = None) -> MethodSettings:
        """The methods' settings, Grad-CAM on ``model``'s copy of the named layer (default: the explained model)."""
        hp = self.hparams
        model = model or self.explained
        layer = dict(model.named_modules()).get(f"lecture.{self.gradcam_name}") if self.gradcam_name else None
        return MethodSettings(
            smoothgrad_samples=hp.smoothgrad_samples, smoothgrad_noise=hp.smoothgrad_noise, ig_steps=hp.ig_steps,
            ig_internal_batch_size=hp.ig_internal_batch_size, gradcam_layer=layer, window=hp.window,
            surrogate_samples=hp.surrogate_samples,
        )  # fmt: skip

    @property
    def lecture(self) -> LectureModule:
        """The checkpoint's lecture, frozen (not a submodule: never saved in this lecture's checkpoints)."""
        self.prepare()
        return self._frozen["lecture"]

    @property
    def explained(self) -> nn.Module:
        """The checkpoint's classifier as a module: standardised images (N, C, H, W) -> logits (N, K)."""
        return _Logits(self.lecture)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lecture.logits(x)  # (B, C, H, W) -> (B, K)

    def _apply(self, fn, recurse: bool = True):
        super()._apply(fn, recurse)
        for lecture in self._frozen.values():  # device moves reach the frozen model although it is not a submodule
            lecture._apply(fn, recurse)
        return self

    def setup(self, stage: str) -> None:
        """Load the checkpoint; take the DataModule's standardisation (explanations are drawn and perturbed in
        [0, 1] pixels)."""
        self.prepare()
        datamodule = self.trainer.datamodule if self._trainer is not None else None
        stats = getattr(datamodule, "pixel_stats", None) if datamodule is not None else None
        if stats is not None:
            self.mean.copy_(stats[0].reshape(self.mean.shape))
            self.std.copy_(stats[1].reshape(self.std.shape))

    def normalize(self, x01: torch.Tensor) -> torch.Tensor:
        return (x01 - self.mean) / self.std

    # ------------------------------------------------------------------ fit: the randomised-labels network
    lr_setting = "model.init_args.optimizer.init_args.lr"

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.optimizer_factory(self.random_labels.parameters())

    def random_label(self, index: torch.Tensor) -> torch.Tensor:
        """A label for each training sample drawn from its index and ``seed`` (fixed across epochs and ranks)."""
        mixed = (index.long() * 2654435761 + self.hparams.seed * 40503 + 12345) % (2**32)
        return (mixed >> 7) % self.hparams.num_classes

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        if len(batch) < 3:
            raise SettingError(
                "fit trains the randomised-labels network and draws each sample's label from its index: set "
                "data.init_args.indexed: true (configs/xai.yaml does)"
            )
        x, index = batch[0], batch[2]  # (B, C, H, W), (B,)
        labels = self.random_label(index)
        logits = self.random_labels(x)
        self.fitted.fill_(True)
        self.train_acc(logits, labels)
        self.log("train/acc_random_labels", self.train_acc, on_step=False, on_epoch=True)
        return self.combine_losses({"random_labels": F.cross_entropy(logits, labels)})

    # ------------------------------------------------------------------ test: accuracy, then the explanations
    def on_test_start(self) -> None:
        self._selected = self._select(self.trainer.datamodule.test_dataloader().dataset)
        rank_zero_info(f"explaining {len(self._selected)} test images: {self._selected}")

    def test_step(self, batch, batch_idx: int) -> None:
        x, y = batch[0], batch[1]
        with torch.no_grad():
            self.test_acc(self(x), y)
        self.log("test/acc", self.test_acc, on_epoch=True)

    def _select(self, dataset) -> list[int]:
        """Test-split indices to explain (the same on every process)."""
        hp = self.hparams
        x, y = dataset.tensors[0], dataset.tensors[1]
        if hp.select == "indices":
            bad = [i for i in hp.indices if i >= len(y)]
            if bad:
                raise bad_setting("indices", hp.indices, f"indices of the test split (0..{len(y) - 1})")
            return list(hp.indices)
        if hp.select == "classes":
            return sorted(
                i for c in range(hp.num_classes) for i in (y == c).nonzero().flatten()[: hp.per_class].tolist()
            )
        with torch.no_grad():
            probs = torch.cat([self(x[i : i + 256].to(self.device)).softmax(-1).cpu() for i in range(0, len(y), 256)])
        confidence, pred = probs.max(-1)
        wrong = (pred != y).nonzero().flatten()
        if not len(wrong):
            raise SettingError(
                "model.init_args.select is 'mistakes' and the model makes no mistake on the test split",
                hint="use select: classes or indices",
            )
        return wrong[confidence[wrong].argsort(descending=True, stable=True)][: hp.mistakes].tolist()

    def on_test_epoch_end(self) -> None:
        dataset = self.trainer.datamodule.test_dataloader().dataset
        world, rank = self.trainer.world_size, self.trainer.global_rank
        mine = self._selected[rank::world]
        rows = [self.explain_image(dataset[i][0].to(self.device), int(dataset[i][1]), i) for i in mine]
        results = self._gather(rows, per_rank=math.ceil(len(self._selected) / world))
        self._log_results(results)
        if self.trainer.is_global_zero:
            self._report(results)

    # ------------------------------------------------------------------ one image: the lecture's steps
    def explain_image(self, x: torch.Tensor, label: int, index: int) -> dict[str, torch.Tensor]:
        """Steps 2-5 for one standardised image ``x`` (C, H, W), seeded by ``seed`` + ``index``."""
        # Lightning's test loop runs under inference_mode: gradients need it lifted (and a tensor made outside it)
        with torch.random.fork_rng(devices=[]), torch.inference_mode(False), torch.enable_grad():
            torch.manual_seed(self.hparams.seed + index)
            x = x.clone().unsqueeze(0)  # (1, C, H, W)
            model = self.explained
            with torch.no_grad():
                probs = model(x).softmax(-1)[0]  # (K,)
            target = probs.argmax().view(1)
            maps = self._attributions(model, x, target)  # method -> (1, C', H, W)
            out = self._faithfulness(model, x, target, maps)
            out.update(self._sanity(x, target, maps))
            out.update(self._completeness(model, x, target, maps))
        out.update(
            attributions=torch.stack([maps[m].expand_as(x)[0] for m in self.methods]),  # (M, C, H, W)
            maps=torch.stack([maps[m].sum(1)[0] for m in self.methods]),  # (M, H, W)
            image=(x[0] * self.std[0] + self.mean[0]).clamp(0, 1),  # (C, H, W) pixels
            label=torch.tensor(label), pred=target[0], prob=probs[target[0]], index=torch.tensor(index),
        )  # fmt: skip
        return {k: v.detach().float().cpu() if v.is_floating_point() else v.cpu() for k, v in out.items()}

    def _attributions(self, model: nn.Module, x, target, settings: MethodSettings | None = None) -> dict:
        baseline = self.normalize(torch.zeros_like(x[:1]))  # black pixels in the model's input space
        settings = settings or self.settings(model)
        return {m: attribute(m, model, x, target, settings=settings, baseline=baseline) for m in self.methods}

    def _faithfulness(self, model, x, target, maps: dict) -> dict[str, torch.Tensor]:
        """Deletion / insertion curves (M, S + 1) on [0, 1] pixels; infidelity and max-sensitivity (M,)."""
        hp, x01 = self.hparams, x * self.std + self.mean

        def prob(images01: torch.Tensor) -> torch.Tensor:
            return model(self.normalize(images01)).softmax(-1)[:, target[0]]

        curves = [core.insertion_deletion(prob, x01, maps[m].sum(1), steps=hp.curve_steps) for m in self.methods]
        settings = self.settings(model)
        baseline = self.normalize(torch.zeros_like(x))

        def explain_fn(method: str):
            def fn(inputs, target):
                return attribute(method, model, inputs, target, settings=settings, baseline=baseline[:1])

            return fn

        infid = [infidelity(model, x, maps[m].expand_as(x), target, samples=hp.metric_samples) for m in self.methods]
        sens = [sensitivity(explain_fn(m), x, target, samples=hp.metric_samples) for m in self.methods]
        return {
            "deletion": torch.cat([c["deletion"] for c in curves]),
            "insertion": torch.cat([c["insertion"] for c in curves]),
            "infidelity": torch.cat(infid),
            "sensitivity": torch.cat(sens),
        }

    def _sanity(self, x, target, maps: dict) -> dict[str, torch.Tensor]:
        """Cascading randomisation (M, L, 3 similarities; the maps (M, L, H, W)) and, once ``fit`` trained it, the
        randomised-labels network (M, 3; NaN before)."""
        methods, stages, cascade = self.methods, [], []
        original = torch.cat([maps[m].sum(1) for m in methods])  # (M, H, W)
        for _, randomised in core.cascade_randomisation(self.explained, seed=self.hparams.seed):
            other = self._attributions(randomised, x, target)
            new = torch.cat([other[m].sum(1) for m in methods])  # (M, H, W)
            similarity = core.map_similarity(original, new)
            stages.append(torch.stack([similarity[s] for s in SIMILARITIES], dim=-1))  # (M, 3)
            cascade.append(new)
        out = {"similarity": torch.stack(stages, dim=1), "cascade_maps": torch.stack(cascade, dim=1)}
        labels = torch.full((len(methods), len(SIMILARITIES)), float("nan"))
        if bool(self.fitted):
            net = self.random_labels.eval()
            other = self._attributions(net, x, target, self.settings(net))
            new = torch.cat([other[m].sum(1) for m in methods])
            similarity = core.map_similarity(original, new)
            labels = torch.stack([similarity[s] for s in SIMILARITIES], dim=-1)
        out["random_labels"] = labels
        return out

    def _completeness(self, model, x, target, maps: dict) -> dict[str, torch.Tensor]:
        """IG's completeness error (1,) (NaN without integrated_gradients)."""
        if "integrated_gradients" not in maps:
            return {"completeness": torch.tensor([float("nan")])}
        baseline = self.normalize(torch.zeros_like(x))
        with torch.no_grad():
            f_x, f_b = model(x)[:, target[0]], model(baseline)[:, target[0]]
        return {"completeness": core.completeness_error(maps["integrated_gradients"], f_x, f_b)}

    # ------------------------------------------------------------------ gathering and reporting
    def _gather(self, rows: list[dict[str, torch.Tensor]], per_rank: int) -> dict[str, torch.Tensor]:
        """Every process's results, in the order of the selection (process r explained selected[r::world])."""
        world = self.trainer.world_size
        template = rows[0] if rows else self.explain_image(self._probe(), 0, 0)
        padded = {
            k: torch.stack([r[k] for r in rows] + [torch.zeros_like(template[k])] * (per_rank - len(rows)))
            for k in template
        }
        if world == 1:
            return {k: v[: len(self._selected)] for k, v in padded.items()}
        gathered = self.all_gather({k: v.to(self.device) for k, v in padded.items()})  # (world, per_rank, ...)
        # (per_rank, world, ...) flattened: position p of rank r is selected[p * world + r]; padding comes last
        return {k: v.cpu().transpose(0, 1).flatten(0, 1)[: len(self._selected)] for k, v in gathered.items()}

    def _probe(self) -> torch.Tensor:
        return torch.zeros(*self.hparams.input_shape, device=self.device)

    def _log_results(self, results: dict[str, torch.Tensor]) -> None:
        """``test/<metric>_<method>`` means over the explained images (identical on every process)."""
        for i, m in enumerate(self.methods):
            values = {
                f"deletion_auc_{m}": core.auc(results["deletion"][:, i]).mean(),
                f"insertion_auc_{m}": core.auc(results["insertion"][:, i]).mean(),
                f"infidelity_{m}": results["infidelity"][:, i].mean(),
                f"sensitivity_{m}": results["sensitivity"][:, i].mean(),
            }
            for j, s in enumerate(SIMILARITIES):  # after the full cascade (every layer re-initialised)
                values[f"sanity_{s}_{m}"] = results["similarity"][:, i, -1, j].mean()
                if bool(self.fitted):
                    values[f"random_labels_{s}_{m}"] = results["random_labels"][:, i, j].mean()
            for key, value in values.items():
                self.log(f"test/{key}", float(value), sync_dist=True)  # equal on every process already
        if "integrated_gradients" in self.methods:
            self.log("test/ig_completeness_error", float(results["completeness"].mean()), sync_dist=True)

    def summary(self, results: dict[str, torch.Tensor]) -> tuple[list[str], list[list]]:
        """The per-method table (columns, rows): deletion and insertion AUC, then each similarity after the full
        cascade, then (fitted) against the randomised-labels network; rounded to 3 decimals."""
        columns = ["method", "deletion_auc", "insertion_auc", *(f"sanity_{s}" for s in SIMILARITIES)]
        columns += [f"random_labels_{s}" for s in SIMILARITIES] if bool(self.fitted) else []
        rows = []
        for i, m in enumerate(self.methods):
            row = [m, core.auc(results["deletion"][:, i]).mean(), core.auc(results["insertion"][:, i]).mean()]
            row += [results["similarity"][:, i, -1, j].mean() for j in range(len(SIMILARITIES))]
            row += [results["random_labels"][:, i, j].mean() for j in range(len(SIMILARITIES))] if self.fitted else []
            rows.append([row[0], *(round(float(v), 3) for v in row[1:])])
        return columns, rows

    def _log_table(self, results: dict[str, torch.Tensor]) -> None:
        """The summary as a W&B table (``test/xai_table``) and one log line per method."""
        from lightning.pytorch.loggers import WandbLogger

        columns, rows = self.summary(results)
        for logger in self.trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_table("test/xai_table", columns=columns, data=rows)
        for row in rows:
            rank_zero_info(", ".join(f"{c} {v}" for c, v in zip(columns, row)))

    def _report(self, results: dict[str, torch.Tensor]) -> None:
        """Figures, the summary table, the attributions file and the feature visualisation (rank zero)."""
        self._log_table(results)
        self.log_figure("test/explanations", report.explanation_grid(results, self.methods))
        layers = core.parameterised_layers(self.explained)
        names = [n.removeprefix("lecture.") for n in reversed(layers)]
        self.log_figure("test/sanity_cascade", report.cascade_figure(results, self.methods, names))
        self.log_figure("test/sanity_similarity", report.similarity_figure(results, self.methods, names, SIMILARITIES))
        self.log_figure("test/deletion_insertion", report.curves_figure(results, self.methods))
        for layer in self.visualised:
            images, gains = self.visualise(layer)
            self.log_figure(f"test/feature_vis_{layer}", report.mosaic_figure(images, layer, gains))
        folder = figure_dir(self.trainer).parent
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{free_name(folder, 'explanations', ('.pt',))}.pt"
        torch.save({"methods": list(self.methods), **results}, path)  # tensors and strings: weights_only loads it
        rank_zero_info(f"explanations saved to {path}")

    def visualise(self, layer: str) -> tuple[torch.Tensor, list[float]]:
        """Step 6: activation maximisation for the first ``units`` units of ``layer``: images (U, C, H, W) and each
        unit's activation at the end of the ascent."""
        hp, module = self.hparams, self.layers[layer]
        probe: dict[str, torch.Tensor] = {}
        handle = module.register_forward_hook(lambda _m, _i, out: probe.__setitem__("out", out))
        with torch.no_grad():
            self.lecture.logits(self.normalize(torch.zeros(1, *hp.input_shape, device=self.device)))
        handle.remove()
        count = min(hp.units, probe["out"].shape[1])
        images, gains = [], []
        with torch.inference_mode(False), torch.enable_grad():
            for unit in range(count):
                image, trace = core.activation_maximisation(
                    self.explained, module, unit, shape=tuple(hp.input_shape), normalize=self.normalize,
                    steps=hp.am_steps, seed=hp.seed + unit,
                )  # fmt: skip
                images.append(image[0].cpu())
                gains.append(float(trace[-1]))
        return torch.stack(images), gains


class _Logits(nn.Module):
    """A loaded lecture as a plain classifier: ``forward`` is its ``logits`` (the contract for other lectures)."""

    def __init__(self, lecture: LectureModule) -> None:
        super().__init__()
        self.lecture = lecture

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lecture.logits(x)
