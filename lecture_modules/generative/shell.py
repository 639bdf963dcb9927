"""The shell every generative lecture shares, below the algorithm: sample quality in a classifier's feature space
every validation epoch, sample grids at fixed noise, latent interpolations, FID over training, and ``predict``'s
generated images for the HW6 hand-in.

A lecture derives from :class:`GenerativeModule`, calls :meth:`GenerativeModule.init_sampling` in its
``__init__`` and implements :meth:`GenerativeModule.sample` (noise -> images in [-1, 1]).
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_info

from datamodules.errors import CheckpointError
from lecture_modules.base import LectureModule, bad_setting
from lecture_modules.checkpoints import load_classifier
from lecture_modules.generative.figures import curve_figure, grid_figure
from lecture_modules.generative.metrics import (
    FeatureClassifier,
    class_histogram,
    classifier_normalisation,
    histogram_text,
    quality_scores,
)

__all__ = ["GenerativeModule"]

log = logging.getLogger(__name__)

GRID = 64  # samples in the fixed-noise grid (8 x 8)
EVAL_SEED = 1234  # the evaluation noise has its own generator: the training's RNG (and exact resume) is untouched


class GenerativeModule(LectureModule):
    """Shared shell of the generative lectures: quality metrics, figures and ``predict``."""

    def __init__(
        self,
        metric_classifier: str | None = "builtin:digits_cnn",
        num_eval_samples: int = 1000,
        tau: float = 0.9,
        pr_neighbours: int = 3,
        metrics_every_n_epochs: int = 1,
    ) -> None:
        """
        Args:
            metric_classifier: a classifier checkpoint of the same domain whose penultimate features define FID,
                KID and precision/recall (``builtin:digits_cnn``: the shipped 16x16 digits CNN; train one for other
                data with ``cli.py fit --config configs/classification.yaml`` on it); null: figures only.
            num_eval_samples: samples generated for the metrics each time (split across ranks).
            tau: confidence above which a sample counts as recognisable (HW6's detection rate, offline).
            pr_neighbours: k of the k-NN manifolds of precision/recall (Kynkaanniemi et al.: 3).
            metrics_every_n_epochs: compute the metrics every n-th validation epoch, counting so that a run of a
                multiple of n epochs ends with them (figures every epoch).
        """
        super().__init__()
        if num_eval_samples < 10:
            raise bad_setting("num_eval_samples", num_eval_samples, ">= 10")
        if not 0.0 <= tau < 1.0:
            raise bad_setting("tau", tau, "in [0, 1)")
        if pr_neighbours < 1:
            raise bad_setting("pr_neighbours", pr_neighbours, ">= 1")
        if metrics_every_n_epochs < 1:
            raise bad_setting("metrics_every_n_epochs", metrics_every_n_epochs, ">= 1")
        self._judge: dict[str, FeatureClassifier] = {}  # not a submodule: never in this lecture's checkpoint
        self._reference: torch.Tensor | None = None
        self.fid_history: list[tuple[int, float]] = []

    # ------------------------------------------------------------------ what a lecture provides
    def init_sampling(self, latent_shape: int | tuple[int, ...], num_classes: int) -> None:
        """Fix the grid's noise (a buffer: the same in every epoch, checkpoint and rank) and its labels."""
        shape = (latent_shape,) if isinstance(latent_shape, int) else tuple(latent_shape)
        self.latent_shape = shape
        gen = torch.Generator().manual_seed(0)
        self.register_buffer("fixed_noise", torch.randn(GRID, *shape, generator=gen))  # (64, *latent)
        self.register_buffer("fixed_labels", torch.arange(GRID) % max(num_classes, 1))  # (64,)

    def noise(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """z ~ N(0, I), (n, *latent_shape), on this module's device."""
        z = torch.randn(n, *self.latent_shape, generator=generator)
        return z.to(self.device)

    def sample(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Images (B, C, H, W) in [-1, 1] from noise z; in eval mode, without gradients."""
        raise NotImplementedError

    # ------------------------------------------------------------------ the metric classifier
    def setup(self, stage: str) -> None:
        path = self.hparams.metric_classifier
        if path is None or "judge" in self._judge or stage not in ("fit", "validate"):
            return
        datamodule = self.trainer.datamodule if self._trainer is not None else None
        stats = getattr(datamodule, "real_stats", None)
        if stats is None:
            raise CheckpointError(
                "model.init_args.metric_classifier needs the data's pixel statistics: use "
                "datamodules.generation.GenerationDataModule, or set model.init_args.metric_classifier: null"
            )
        label = f"model.init_args.metric_classifier ({path})"
        try:
            model = load_classifier(path, input_shape=self.hparams.input_shape, num_classes=self.hparams.num_classes,
                                    label=label)  # fmt: skip
        except CheckpointError as exc:
            raise CheckpointError(
                str(exc), hint="give a classifier trained on this data (configs/classification.yaml with this data "
                "section), or set model.init_args.metric_classifier: null to train without quality metrics"
            ) from exc  # fmt: skip
        norm = classifier_normalisation(path, stats)
        judge = FeatureClassifier(getattr(model, "net", None), norm["mean"], norm["std"], name=norm["name"])
        self._judge["judge"] = judge.to(self.device)
        how = "stated in the checkpoint" if norm["stated"] else "the data's training split"
        rank_zero_info(f"metric classifier {path}: feature space {judge.space}, input standardised with {how}")
        self._reference = datamodule.reference_images(self.hparams.num_eval_samples)

    def _apply(self, fn, recurse: bool = True):
        super()._apply(fn, recurse)
        for judge in self._judge.values():  # device moves reach the frozen classifier although it is no submodule
            judge._apply(fn, recurse)
        return self

    @property
    def feature_space(self) -> str | None:
        """The name of the metrics' feature space (``digits-cnn-128d``), None without a metric classifier."""
        return self._judge["judge"].space if self._judge else None

    # ------------------------------------------------------------------ validation: metrics and figures
    def validation_step(self, batch: Any, batch_idx: int) -> None:
        """Nothing per batch: the metrics compare whole sets of samples and reals (:meth:`on_validation_epoch_end`)."""

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            return
        if self._judge and (self.current_epoch + 1) % self.hparams.metrics_every_n_epochs == 0:  # the last epoch too
            self.log_quality(stage="val")
        if self.trainer.is_global_zero:
            self.log_figure("val/samples", grid_figure(self.sample(self.fixed_noise, self.fixed_labels), "samples at "
                            f"fixed noise, epoch {self.current_epoch}"))  # fmt: skip
            self.log_figure("val/interpolation", grid_figure(self.interpolate(), "latent interpolation (rows: "
                            "z_a -> z_b, spherical)", ncols=8))  # fmt: skip

    def eval_samples(self, n: int) -> torch.Tensor:
        """This rank's share of ``n`` evaluation samples, from the evaluation generator (seeded per rank, so the
        same in every epoch and independent of the training's RNG); labels balanced over the classes."""
        world, rank = self.trainer.world_size, self.trainer.global_rank
        share = len(range(rank, n, world))
        gen = torch.Generator().manual_seed(EVAL_SEED + rank)
        labels = torch.arange(rank, n, world, device=self.device) % self.hparams.num_classes
        return torch.cat([self.sample(z, y) for z, y in zip(self.noise(share, gen).split(250), labels.split(250),
                                                             strict=True)])  # fmt: skip

    def log_quality(self, stage: str) -> dict[str, float]:
        """Generate, embed and score samples against the reference reals; logs ``<stage>/fid`` ... and one line
        naming the feature space. Every rank gathers every rank's features, so all compute the same numbers."""
        judge = self._judge["judge"]
        features, probs = judge.embed(self.eval_samples(self.hparams.num_eval_samples))
        features = self.all_gather(features).reshape(-1, features.shape[-1]).cpu()
        probs = self.all_gather(probs).reshape(-1, probs.shape[-1]).cpu()
        if not hasattr(self, "_reference_features"):
            self._reference_features = judge.embed(self._reference.to(self.device))[0].cpu()
        scores = quality_scores(self._reference_features, features, probs, self.hparams.tau,
                                k=self.hparams.pr_neighbours)  # fmt: skip
        for name, value in scores.items():
            self.log(f"{stage}/{name}", value, prog_bar=name == "fid", sync_dist=False, rank_zero_only=False)
        if stage == "val":
            self.fid_history.append((self.global_step, scores["fid"]))
        rank_zero_info(
            f"{stage} epoch {self.current_epoch}: fid[{judge.space}] {scores['fid']:.2f}, kid {scores['kid']:.4f}, "
            f"precision {scores['precision']:.3f}, recall {scores['recall']:.3f}, recognisable(>{self.hparams.tau})"
            f" {scores['recognisable']:.3f}; classes {histogram_text(class_histogram(probs).tolist())}"
        )
        return scores

    def interpolate(self, rows: int = 4, steps: int = 8) -> torch.Tensor:
        """``rows`` spherical interpolations of ``steps`` images between pairs of the fixed noise vectors."""
        a, b = self.fixed_noise[:rows].flatten(1), self.fixed_noise[rows : 2 * rows].flatten(1)  # (R, D)
        omega = torch.arccos((a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1))).clamp_min(1e-4)[:, None, None]
        t = torch.linspace(0, 1, steps, device=a.device)[None, :, None]  # (1, S, 1)
        z = (torch.sin((1 - t) * omega) * a[:, None] + torch.sin(t * omega) * b[:, None]) / torch.sin(omega)
        labels = self.fixed_labels[:rows].repeat_interleave(steps)
        return self.sample(z.reshape(rows * steps, *self.latent_shape), labels)

    def on_train_end(self) -> None:
        if self.fid_history and self.trainer.is_global_zero:
            steps, values = zip(*self.fid_history, strict=True)
            self.log_figure("val/fid_curve", curve_figure(steps, values, f"FID in {self.feature_space} over training"))

    # ------------------------------------------------------------------ predict: the HW6 hand-in
    def predict_step(self, batch: Any, batch_idx: int) -> dict[str, torch.Tensor]:
        """Sample index i -> one image from noise seeded with i (the same images whatever the ranks or batches),
        as uint8 (B, C, H, W) with its index, for :class:`callbacks.generated_image_writer.GeneratedImageWriter`."""
        (index,) = batch
        z = torch.cat([self.noise(1, torch.Generator().manual_seed(int(i))) for i in index])
        images = self.sample(z, index.to(self.device) % self.hparams.num_classes)
        return {"images": ((images + 1) * 127.5).round().clamp(0, 255).to(torch.uint8), "index": index}

    # ------------------------------------------------------------------ checkpoint: the FID history
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["fid_history"] = [[int(s), float(v)] for s, v in self.fid_history]  # plain data

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        self.fid_history = [(int(s), float(v)) for s, v in checkpoint.get("fid_history", [])]
