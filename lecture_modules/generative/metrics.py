"""Sample quality that works offline: FID, KID, recognisability, class histogram, precision/recall — all in the
feature space of OUR classifier of the same domain, never Inception's (its weights cannot be downloaded here).

The feature extractor is a classifier lecture's checkpoint (:func:`lecture_modules.checkpoints.load_classifier`;
by default ``builtin:digits_cnn``, configs/classification.yaml's CNN on the 16x16 digits): its penultimate layer
(global-average-pooled 128 channels) gives the features, its last layer the class probabilities. Every number
names its feature space (:attr:`FeatureClassifier.space`, e.g. ``digits-cnn-128d``): FIDs in different spaces do
not compare, and none of them compares with a published Inception FID.

* FID (Heusel et al. 2017, arXiv 1706.08500) and KID (Binkowski et al. 2018, arXiv 1801.01401) come from
  torchmetrics' implementations, fed our features (:class:`_GivenFeatures` passes them through).
* Precision / recall (Kynkaanniemi et al. 2019, arXiv 1904.06991): a sample is "precise" if it falls inside the
  k-NN ball of some real feature; a real feature is "recalled" if it falls inside the k-NN ball of some sample.
* Recognisability: the share of samples the classifier labels with confidence above tau (HW6's face-detection
  rate, offline); the class histogram shows mode collapse as empty classes.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

from datamodules.errors import CheckpointError
from lecture_modules.checkpoints import read_checkpoint, resolve_checkpoint_path

__all__ = [
    "FeatureClassifier",
    "class_histogram",
    "classifier_normalisation",
    "frechet_distance",
    "kernel_distance",
    "precision_recall",
    "quality_scores",
    "recognisability",
    "save_metric_classifier",
]


class _GivenFeatures(nn.Module):
    """The identity, declaring ``num_features``: torchmetrics' FID/KID then take features we computed."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features


def frechet_distance(real: torch.Tensor, fake: torch.Tensor) -> float:
    """FID between two feature sets (N, D) and (M, D): ||mu_r - mu_f||^2 + Tr(S_r + S_f - 2 (S_r S_f)^1/2)."""
    metric = FrechetInceptionDistance(feature=_GivenFeatures(real.shape[1]), normalize=True)
    metric.update(real.double(), real=True)
    metric.update(fake.double(), real=False)
    return float(metric.compute())


def kernel_distance(real: torch.Tensor, fake: torch.Tensor, subsets: int = 20, seed: int = 0) -> float:
    """KID (unbiased MMD^2, cubic polynomial kernel) averaged over ``subsets`` random subsets of min(N, M, 1000);
    the subsets are drawn from their own RNG, so the training's RNG (and exact resume) is untouched."""
    size = min(len(real), len(fake), 1000)
    metric = KernelInceptionDistance(feature=_GivenFeatures(real.shape[1]), subsets=subsets, subset_size=size)
    metric.update(real, real=True)
    metric.update(fake, real=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        mean, _ = metric.compute()
    return float(mean)


def _kth_neighbour_radius(features: torch.Tensor, k: int) -> torch.Tensor:
    """Distance of each point to its k-th nearest other point of the same set (N,)."""
    distances = torch.cdist(features, features)  # (N, N), zero diagonal
    return distances.kthvalue(k + 1, dim=1).values  # +1: the point itself is its nearest neighbour


def _coverage(points: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor) -> float:
    """The share of ``points`` inside at least one ball (centre, radius)."""
    inside = torch.cdist(points, centres) <= radii.unsqueeze(0)  # (P, C)
    return float(inside.any(dim=1).float().mean())


def precision_recall(real: torch.Tensor, fake: torch.Tensor, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall (Kynkaanniemi et al. 2019): k-NN manifolds of each set in feature space.

    Returns:
        (precision: share of samples inside the real manifold, recall: share of reals inside the sample manifold).
    """
    real, fake = real.double(), fake.double()
    precision = _coverage(fake, real, _kth_neighbour_radius(real, k))
    recall = _coverage(real, fake, _kth_neighbour_radius(fake, k))
    return precision, recall


def recognisability(probs: torch.Tensor, tau: float) -> float:
    """The share of samples whose top class probability exceeds ``tau`` (probs (N, K))."""
    return float((probs.max(dim=1).values > tau).float().mean())


def class_histogram(probs: torch.Tensor) -> torch.Tensor:
    """How many samples the classifier assigns to each class (K,), int64: empty classes show mode collapse."""
    return torch.bincount(probs.argmax(dim=1), minlength=probs.shape[1])


class FeatureClassifier(nn.Module):
    """A frozen classifier as a feature extractor for images in [-1, 1]: standardises them as the classifier was
    trained (its data's per-channel mean and std in [0, 1] pixels), then gives penultimate features and logits."""

    def __init__(self, net: nn.Sequential, mean: torch.Tensor, std: torch.Tensor, name: str) -> None:
        """
        Args:
            net: the classifier's network, a ``Sequential`` whose last module is the linear classifier layer.
            mean: per-channel mean (1, C, 1, 1) of its training images in [0, 1].
            std: per-channel std (1, C, 1, 1) of its training images in [0, 1].
            name: the classifier's short name in the feature space's name (``digits-cnn``).
        """
        super().__init__()
        if not isinstance(net, nn.Sequential) or not isinstance(net[-1], nn.Linear):
            raise CheckpointError(f"{name}: the metric classifier must be a network ending in a linear layer")
        self.body, self.head = net[:-1], net[-1]
        self.register_buffer("mean", mean.reshape(1, -1, 1, 1).clone())
        self.register_buffer("std", std.reshape(1, -1, 1, 1).clone())
        self.space = f"{name}-{self.head.in_features}d"

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images (B, C, H, W) in [-1, 1] -> (features (B, D), logits (B, K))."""
        x01 = (x + 1.0) / 2.0
        features = self.body((x01 - self.mean) / self.std)
        return features, self.head(features)

    def embed(self, images: torch.Tensor, batch_size: int = 500) -> tuple[torch.Tensor, torch.Tensor]:
        """Features (N, D) and class probabilities (N, K) of ``images`` in [-1, 1], in batches, in eval mode."""
        was_training = self.training
        self.eval()
        parts = [self(chunk) for chunk in images.split(batch_size)]
        self.train(was_training)
        features = torch.cat([f for f, _ in parts])
        probs = torch.cat([logits for _, logits in parts]).softmax(dim=1)
        return features, probs


def quality_scores(
    real: torch.Tensor, fake: torch.Tensor, fake_probs: torch.Tensor, tau: float, k: int = 3
) -> dict[str, float]:
    """Every score of samples against reals, from features (N, D) / (M, D) and the samples' probabilities (M, K):
    ``fid``, ``kid``, ``precision``, ``recall``, ``recognisable`` (confidence > tau) and ``classes_covered`` (the
    share of classes that received at least one sample)."""
    precision, recall = precision_recall(real, fake, k=k)
    hist = class_histogram(fake_probs)
    return {
        "fid": frechet_distance(real, fake),
        "kid": kernel_distance(real, fake),
        "precision": precision,
        "recall": recall,
        "recognisable": recognisability(fake_probs, tau),
        "classes_covered": float((hist > 0).float().mean()),
    }


def histogram_text(hist: Sequence[int]) -> str:
    """``0:12 1:9 ...``: a class histogram in one log line."""
    return " ".join(f"{i}:{int(n)}" for i, n in enumerate(hist))


# ---------------------------------------------------------------------- a metric classifier trained once, by command
def save_metric_classifier(
    src: str | Path, dst: str | Path, stats: tuple[torch.Tensor, torch.Tensor], name: str
) -> Path:
    """Write a classifier checkpoint for the quality metrics: its weights, lecture and hyper-parameters, the data
    module's hyper-parameters, and its input normalisation stated in the file (``pixel_stats``: per-channel mean
    and std of its training images in [0, 1]) with the name of its feature space's classifier (``metric_name``).
    Plain data only (``weights_only=True`` reads it); optimiser and loop state are dropped; never overwrites.

    Args:
        src: the Lightning checkpoint ``cli.py fit`` wrote.
        dst: the file to write (its folder is created).
        stats: (mean, std) of the classifier's training split in [0, 1] pixels, each (1, C, 1, 1) or (C,).
        name: short name of the classifier (``mnist-cnn``); the feature space is ``<name>-<D>d``.
    """
    dst = Path(dst)
    if dst.exists():
        raise FileExistsError(f"{dst} exists; remove it first to replace it")
    ckpt = read_checkpoint(src)
    keep = ("state_dict", "hyper_parameters", "datamodule_hyper_parameters", "pytorch-lightning_version")
    mean, std = (t.reshape(-1).tolist() for t in stats)
    out = {k: ckpt[k] for k in keep if k in ckpt} | {"pixel_stats": {"mean": mean, "std": std}, "metric_name": name}
    dst.parent.mkdir(parents=True, exist_ok=True)
    torch.save(out, dst)
    return dst


def classifier_normalisation(path: str | Path, data_stats: tuple[torch.Tensor, torch.Tensor]) -> dict[str, Any]:
    """How the metric classifier at ``path`` standardises its input and what its feature space is called: the
    ``pixel_stats`` and ``metric_name`` stated in the file (:func:`save_metric_classifier`) where it has them, else
    the data's own training statistics (right when the classifier was trained on the same split, as
    configs/classification.yaml on the same data section) and a name from the path (``builtin:digits_cnn`` ->
    ``digits-cnn``, ``runs/mnist_cnn.ckpt`` -> ``mnist-cnn``).

    Returns:
        ``{"mean": (1, C, 1, 1), "std": (1, C, 1, 1), "name": str, "stated": bool}``.
    """
    text = str(path)
    ckpt = read_checkpoint(resolve_checkpoint_path(text))
    stated = ckpt.get("pixel_stats")
    default_name = text.removeprefix("builtin:") if text.startswith("builtin:") else Path(text).stem
    name = str(ckpt.get("metric_name") or default_name).replace("_", "-")
    if not isinstance(stated, dict) or not {"mean", "std"} <= set(stated):
        return {"mean": data_stats[0], "std": data_stats[1], "name": name, "stated": False}
    mean, std = (torch.tensor(stated[k], dtype=torch.float32).reshape(1, -1, 1, 1) for k in ("mean", "std"))
    return {"mean": mean, "std": std, "name": name, "stated": True}
