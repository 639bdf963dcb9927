"""Attribution methods as thin wrappers over captum (0.8+), one call each, and captum's infidelity and sensitivity.

Every method maps a model (standardised inputs -> logits), images ``x`` (N, C, H, W) in the model's input space and
the target classes (N,) to attributions of the shape of ``x`` (Grad-CAM: (N, 1, H, W), upsampled from its layer).

=====================  =========================================================  ==============================
name                   captum                                                     paper (arXiv)
=====================  =========================================================  ==============================
saliency               ``Saliency`` (|gradient|, captum's default ``abs=True``)   Simonyan et al. 2013, 1312.6034
smoothgrad             ``NoiseTunnel(Saliency)``, ``nt_type="smoothgrad"``        Smilkov et al. 2017, 1706.03825
integrated_gradients   ``IntegratedGradients`` with ``internal_batch_size``       Sundararajan 2017, 1703.01365
input_x_gradient       ``InputXGradient``                                         Shrikumar et al. 2016, 1605.01713
gradcam                ``LayerGradCam`` on a named layer, upsampled bilinearly    Selvaraju et al. 2017, 1610.02391
occlusion              ``Occlusion`` (square window, stride half the window)      Zeiler & Fergus 2014, 1311.2901
lime                   ``Lime`` on square patches (features), Lasso surrogate     Ribeiro et al. 2016, 1602.04938
kernel_shap            ``KernelShap`` on the same patches                         Lundberg & Lee 2017, 1705.07874
=====================  =========================================================  ==============================

Baselines (integrated gradients, occlusion, LIME, KernelSHAP) are black pixels, given in the model's input space.
The stochastic methods (smoothgrad, lime, kernel_shap) draw from the global torch RNG, as captum does: the caller
seeds it (the lecture seeds per image, so a result does not depend on how images are batched or sharded).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["METHODS", "MethodSettings", "attribute", "infidelity", "patch_mask", "sensitivity"]

METHODS = (
    "saliency",
    "smoothgrad",
    "integrated_gradients",
    "input_x_gradient",
    "gradcam",
    "occlusion",
    "lime",
    "kernel_shap",
)
"""Every method name :func:`attribute` knows, in the order figures show them."""


@dataclass(frozen=True)
class MethodSettings:
    """The knobs of the methods (one place, shared by the lecture and the benchmark).

    Attributes:
        smoothgrad_samples: noisy copies averaged by SmoothGrad.
        smoothgrad_noise: SmoothGrad's noise std as a fraction of the image's value range (Smilkov et al.: 10-20%).
        ig_steps: integration steps of integrated gradients.
        ig_internal_batch_size: images per forward pass inside integrated gradients (bounds memory).
        gradcam_layer: the module Grad-CAM attributes to (None: no Grad-CAM).
        window: occlusion window and LIME / KernelSHAP patch size, in pixels.
        surrogate_samples: perturbed samples drawn by LIME and KernelSHAP.
    """

    smoothgrad_samples: int = 16
    smoothgrad_noise: float = 0.15
    ig_steps: int = 64
    ig_internal_batch_size: int = 64
    gradcam_layer: nn.Module | None = None
    window: int = 4
    surrogate_samples: int = 200


def patch_mask(shape: tuple[int, ...], window: int) -> torch.Tensor:
    """Feature ids (1, 1, H, W) of square patches of ``window`` pixels (row-major), shared by all channels."""
    h, w = shape[-2], shape[-1]
    rows = torch.arange(h) // window
    cols = torch.arange(w) // window
    return (rows[:, None] * (-(-w // window)) + cols[None, :]).view(1, 1, h, w)


def attribute(
    method: str,
    model: nn.Module,
    x: torch.Tensor,
    target: torch.Tensor,
    *,
    settings: MethodSettings,
    baseline: torch.Tensor,
) -> torch.Tensor:
    """Attributions of ``method`` for ``x`` (N, C, H, W) and ``target`` (N,), against ``baseline`` (1, C, H, W)."""
    from captum import attr

    x = x.detach()  # not through x for IG, occlusion and the surrogates: their graphs would grow for nothing
    if method in ("saliency", "smoothgrad", "input_x_gradient"):
        x.requires_grad_(True)  # captum would set it with a warning
    base = baseline.expand_as(x)
    if method == "saliency":
        out = attr.Saliency(model).attribute(x, target=target)
    elif method == "smoothgrad":
        spread = float((x.max() - x.min()).detach()) * settings.smoothgrad_noise
        out = attr.NoiseTunnel(attr.Saliency(model)).attribute(
            x, nt_type="smoothgrad", nt_samples=settings.smoothgrad_samples, stdevs=spread, target=target
        )
    elif method == "integrated_gradients":
        out = attr.IntegratedGradients(model).attribute(
            x, baselines=base, target=target, n_steps=settings.ig_steps,
            internal_batch_size=settings.ig_internal_batch_size,
        )  # fmt: skip
    elif method == "input_x_gradient":
        out = attr.InputXGradient(model).attribute(x, target=target)
    elif method == "gradcam":
        if settings.gradcam_layer is None:
            raise ValueError("gradcam needs MethodSettings.gradcam_layer")
        cam = attr.LayerGradCam(model, settings.gradcam_layer).attribute(x, target=target, relu_attributions=True)
        out = attr.LayerAttribution.interpolate(cam, tuple(x.shape[-2:]), interpolate_mode="bilinear")
    elif method == "occlusion":
        c, k = x.shape[1], settings.window
        out = attr.Occlusion(model).attribute(
            x, sliding_window_shapes=(c, k, k), strides=(c, max(1, k // 2), max(1, k // 2)), baselines=base,
            target=target,
        )  # fmt: skip
    elif method in ("lime", "kernel_shap"):
        out = _surrogate(method, model, x, target, settings, base)
    else:
        raise ValueError(f"unknown attribution method {method!r}; known: {', '.join(METHODS)}")
    for p in model.parameters():
        p.grad = None
    return out.detach()


def _surrogate(method, model, x, target, settings: MethodSettings, base) -> torch.Tensor:
    """LIME or KernelSHAP on square patches, one image at a time (captum fits one surrogate per image)."""
    from captum import attr

    explainer = attr.Lime(model) if method == "lime" else attr.KernelShap(model)
    mask = patch_mask(tuple(x.shape), settings.window).to(x.device).expand(1, x.shape[1], -1, -1)
    rows = [
        explainer.attribute(
            x[i : i + 1],
            baselines=base[i : i + 1],
            target=target[i : i + 1],
            feature_mask=mask,
            n_samples=settings.surrogate_samples,
            perturbations_per_eval=min(64, settings.surrogate_samples),
        )
        for i in range(len(x))
    ]
    return torch.cat(rows)


def infidelity(model: nn.Module, x, attributions, target, *, noise: float = 0.1, samples: int = 16) -> torch.Tensor:
    """captum's infidelity (Yeh et al. 2019, arXiv 1901.09392) with Gaussian input noise of std ``noise`` (in the
    model's input space), per image (N,): the expected squared gap between the attributions' predicted change of
    the target logit and the real change."""
    from captum.metrics import infidelity as captum_infidelity

    def perturb(inputs: torch.Tensor):
        noise_ = noise * torch.randn_like(inputs)
        return noise_, inputs - noise_

    with torch.no_grad():
        return captum_infidelity(model, perturb, x, attributions, target=target, n_perturb_samples=samples).detach()


def sensitivity(explain, x, target, *, radius: float = 0.02, samples: int = 4) -> torch.Tensor:
    """captum's max-sensitivity (Yeh et al. 2019) per image (N,): the largest change of the explanation
    (Frobenius norm) under uniform input noise within ``radius``; ``explain(inputs, target=...)`` gives attributions."""
    from captum.metrics import sensitivity_max

    def one_input(inputs, target):  # captum passes and expects tuples of inputs
        inputs = inputs[0] if isinstance(inputs, tuple) else inputs
        if target.numel() != len(inputs):  # the perturbed copies of each image, image by image
            target = target.repeat_interleave(len(inputs) // target.numel())
        return (explain(inputs, target=target),)

    return sensitivity_max(one_input, x, target=target, perturb_radius=radius, n_perturb_samples=samples).detach()
