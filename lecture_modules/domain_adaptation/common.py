"""The part every domain-adaptation lecture shares: feature extractor G + label classifier F, evaluation on both
domains, the label-free selection score, the proxy A-distance and the feature-embedding figure.

The network is one argument, ``net`` (a :class:`~lecture_modules.domain_adaptation.core.DomainNetSpec`).
Subclasses (``source_only``, ``dann``, ``mcd``, ``target_oracle``) add their own hyper-parameters (and heads) and
write their ``training_step``.

Logged keys: ``train/source_acc`` (``train/target_acc`` for the oracle); per validation epoch ``val/source_acc``,
``val/target_acc`` (labelled targets only), ``val/target_entropy``, ``val/label_free_score`` (source accuracy minus
target prediction entropy; needs no target labels), ``val/proxy_a_distance`` and, for lectures with a domain
classifier, ``val/domain_acc``; ``test/source_acc`` and ``test/target_acc``. At the end of fit the figure
``val/feature_embedding`` (t-SNE or PCA of source vs target features, by domain and by class).

Normalisation statistics per domain (part of each method; ``net.batch_norm: false``, the paper's network, has none):

* inputs: ``data.init_args.normalize: per_domain`` standardises each domain with its own training-split mean and
  std, in training and evaluation alike (label-free); ``source`` applies the source's to both.
* batch norm in training: every method passes each domain's batch through G on its own, so G's layers normalise
  source with source batch statistics and target with target batch statistics. DANN's domain classifier D sees
  ``[f_s; f_t]`` together (a 50/50 batch). ``source_only`` never passes the target through G; ``target_oracle``
  never the source. MCD passes source (step A), source then target (step B) and target ``num_k`` times (step C).
* batch norm at evaluation: both domains are normalised with the running statistics, an exponential average
  (momentum 0.1) of the training batches in the order above: source-only's are the source's, the oracle's the
  target's, DANN's about 0.47 source + 0.53 target (alternating batches), MCD's about 0.22 source + 0.78 target
  (source, source, then target 5 times per batch). So, except for a single-domain method evaluated on its own
  domain, evaluation does not normalise a domain the way training did (tested in
  ``tests/lectures/test_domain_adaptation.py``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
import torch
from torch import nn
from torchmetrics import MeanMetric
from torchmetrics.classification import BinaryAccuracy, MulticlassAccuracy

from datamodules.errors import SettingError
from lecture_modules.base import LectureModule, bad_setting, check_shapes
from lecture_modules.domain_adaptation.core import (
    DomainNetSpec,
    fold_legacy_domain_net_args,
    label_free_score,
    normalized_entropy,
    proxy_a_distance,
)

__all__ = ["DOMAINS", "DomainAdaptationModule", "embedding_figure"]

DOMAINS = ("source", "target")  # order of the DataModule's evaluation loaders


class DomainAdaptationModule(LectureModule):
    """Feature extractor + label classifier evaluated on a source and a target domain (base of lecture 11)."""

    train_on: str = "source"  # whose labels training reads; must match the DataModule's train_on

    def __init__(
        self,
        num_classes: int = 10,
        input_shape: tuple[int, int, int] = (3, 16, 16),
        net: DomainNetSpec = DomainNetSpec(),
        embedding: Literal["tsne", "pca", "none"] = "tsne",
        embedding_samples: int = 500,
    ) -> None:
        """
        Args:
            num_classes: number of classes (linked from the DataModule by the CLI).
            input_shape: (channels, height, width) of one image (linked from the DataModule by the CLI).
            net: the network: feature extractor widths, feature size, head width, batch norm and dropout.
            embedding: 2-D embedding of the end-of-fit feature figure (``none`` skips the figure).
            embedding_samples: validation samples (half per domain) for the figure and the proxy A-distance.
        """
        super().__init__()
        net = DomainNetSpec.of(net, owner="net")
        check_shapes(num_classes, input_shape)
        net.feature_size(input_shape, owner="net")  # a flatten G too deep for the images fails here
        if embedding not in ("tsne", "pca", "none"):
            raise bad_setting("embedding", embedding, "'tsne', 'pca' or 'none'")
        if embedding_samples < 20:
            raise bad_setting("embedding_samples", embedding_samples, ">= 20")
        self.save_hyperparameters(ignore=["net"])
        self.hparams["net"] = net.as_dict()  # plain data: the checkpoint stays weights_only
        self.net_spec = net
        self.features = net.build_extractor(input_shape)  # G
        self.classifier = net.build_classifier(num_classes, input_shape)  # F (MCD: F1)
        self.example_input_array = torch.zeros(2, *input_shape)
        acc = lambda: MulticlassAccuracy(num_classes, average="micro", ignore_index=-1)  # noqa: E731
        self.train_acc = acc()
        self.eval_acc = nn.ModuleDict({f"{s}_{d}": acc() for s in ("val", "test") for d in DOMAINS})
        self.eval_entropy = nn.ModuleDict({s: MeanMetric() for s in ("val", "test")})
        self.eval_domain_acc = nn.ModuleDict({s: BinaryAccuracy() for s in ("val", "test")})
        self.target_has_labels = True

    @classmethod
    def upgrade_hparams(cls, hparams: Mapping[str, Any]) -> dict[str, Any]:
        """Checkpoints written before ``net`` existed stored ``conv_channels``, ``feature_dim``, ``hidden``,
        ``batch_norm`` and ``dropout``."""
        return fold_legacy_domain_net_args(hparams)

    # ------------------------------------------------------------------ model
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify(self.features(x))  # (B, C, H, W) -> (B, num_classes)

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        """Class logits from features; MCD overrides it with its two-classifier ensemble."""
        return self.classifier(features)

    def domain_logits(self, features: torch.Tensor) -> torch.Tensor | None:
        """Domain-classifier logits (target = 1) for lectures that have one, else None."""
        return None

    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if datamodule is None:
            return
        if not hasattr(datamodule, "train_on"):
            raise TypeError(
                f"{type(self).__name__} needs a two-domain DataModule (data.class_path: "
                f"datamodules.domains.TwoDomainDataModule), got {type(datamodule).__name__}"
            )
        if stage == "fit" and datamodule.train_on != self.train_on:
            raise SettingError(
                f"{type(self).__name__} trains on {self.train_on} labels but data.init_args.train_on is "
                f"'{datamodule.train_on}'" + ("" if self.train_on == "target" else ": that would leak target labels")
            )
        self.target_has_labels = datamodule.target_labelled()

    def log_train_acc(self, logits: torch.Tensor, y: torch.Tensor) -> None:
        self.train_acc.update(logits.detach(), y)
        self.log(f"train/{self.train_on}_acc", self.train_acc, on_step=False, on_epoch=True)

    # ------------------------------------------------------------------ evaluation
    def _evaluate(self, batch, stage: str, dataloader_idx: int) -> None:
        x, y = batch
        domain = DOMAINS[dataloader_idx]
        features = self.features(x)
        logits = self.classify(features)
        self.eval_acc[f"{stage}_{domain}"].update(logits, y)
        if domain == "target":
            self.eval_entropy[stage].update(normalized_entropy(logits), weight=1.0)
        d_logits = self.domain_logits(features)
        if d_logits is not None:
            self.eval_domain_acc[stage].update(d_logits.squeeze(1), torch.full_like(y, dataloader_idx))

    def validation_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._evaluate(batch, "val", dataloader_idx)

    def test_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._evaluate(batch, "test", dataloader_idx)

    def predict_step(self, batch, batch_idx: int) -> torch.Tensor:
        return self(batch[0]).argmax(dim=-1)

    def _log_epoch(self, stage: str) -> None:
        values = {f"{stage}/source_acc": self.eval_acc[f"{stage}_source"].compute()}
        if self.target_has_labels:
            values[f"{stage}/target_acc"] = self.eval_acc[f"{stage}_target"].compute()
        values[f"{stage}/target_entropy"] = self.eval_entropy[stage].compute()
        values[f"{stage}/label_free_score"] = label_free_score(
            values[f"{stage}/source_acc"], values[f"{stage}/target_entropy"]
        )
        if self.eval_domain_acc[stage].update_count:
            values[f"{stage}/domain_acc"] = self.eval_domain_acc[stage].compute()
        for metric in (*self.eval_acc.values(), *self.eval_entropy.values(), *self.eval_domain_acc.values()):
            metric.reset()
        # values are already reduced over ranks (torchmetrics); averaging identical values keeps them exact
        self.log_dict(values, sync_dist=True, prog_bar=False)

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")
        if not self.trainer.sanity_checking and not self.trainer.fast_dev_run:
            feats, _, domains = self.embedding_features()
            pad = proxy_a_distance(feats[domains == 0], feats[domains == 1])
            self.log("val/proxy_a_distance", float(pad), sync_dist=True)

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")

    # ------------------------------------------------------------------ features, figure
    @torch.no_grad()
    def embedding_features(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Features, labels and domain ids (0 source, 1 target) of the first validation samples of each domain."""
        datamodule = self.trainer.datamodule
        was_training = self.training
        self.eval()
        feats, labels, domains = [], [], []
        for index, domain in enumerate(DOMAINS):
            x, y = datamodule.dataset(domain, "val")[: self.hparams.embedding_samples // 2]
            feats.append(torch.cat([self.features(chunk.to(self.device)) for chunk in x.split(256)]).cpu())
            labels.append(y)
            domains.append(torch.full_like(y, index))
        self.train(was_training)
        return torch.cat(feats).numpy(), torch.cat(labels).numpy(), torch.cat(domains).numpy()

    def on_fit_end(self) -> None:
        if self.hparams.embedding == "none" or self.trainer.fast_dev_run or not self.trainer.is_global_zero:
            return
        feats, labels, domains = self.embedding_features()
        self.log_figure("val/feature_embedding", embedding_figure(feats, labels, domains, self.hparams.embedding))


def embed_2d(features: np.ndarray, method: str, seed: int = 0) -> np.ndarray:
    """(N, D) -> (N, 2) with scikit-learn's t-SNE or PCA."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    if method == "pca":
        return PCA(n_components=2, random_state=seed).fit_transform(features)
    perplexity = min(30.0, (len(features) - 1) / 3)
    return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(features)


def embedding_figure(features: np.ndarray, labels: np.ndarray, domains: np.ndarray, method: str):
    """Two panels of the same 2-D embedding: coloured by domain, and by class (marker = domain)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = embed_2d(features, method)
    fig, (ax_d, ax_c) = plt.subplots(1, 2, figsize=(10, 4.5))
    for index, (domain, colour) in enumerate(zip(DOMAINS, ("tab:blue", "tab:red"))):
        mask = domains == index
        ax_d.scatter(*points[mask].T, s=6, c=colour, label=domain, alpha=0.6)
        known = mask & (labels >= 0)
        ax_c.scatter(
            *points[known].T,
            s=8,
            c=labels[known],
            cmap="tab10",
            vmin=0,
            vmax=9,
            marker="o" if index == 0 else "x",
            label=domain,
            alpha=0.7,
        )
    ax_d.set_title(f"{method.upper()} of features, by domain")
    ax_c.set_title("by class (o source, x target)")
    for ax in (ax_d, ax_c):
        legend = ax.legend(loc="best", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    for handle in legend.legend_handles:  # the class panel's legend shows the marker shape only
        handle.set_color("black")
    return fig
