"""Image explanations: integrated gradients, Grad-CAM, occlusion, LIME, and lesion regions.

Attribution maps are ``(H, W)`` arrays at the model's input size (the image after the
:class:`~medfuse.data.preprocess.ImageTransform` resize, which does not keep the aspect
ratio); :func:`to_original` maps regions back to the original image's pixels. Pixel
``(row j, column i)`` covers ``[i, i + 1) x [j, j + 1)``: its centre is ``(i + 0.5, j + 0.5)``.

This module holds the gradient methods and is the one import path for all of them:
perturbation methods live in :mod:`~medfuse.explain.perturbation`, regions
(:func:`localise`, :func:`to_original`, :func:`contains`) in
:mod:`~medfuse.explain.regions`, figures (:func:`overlay_png`,
:func:`figure_threshold_comparison`) in :mod:`~medfuse.explain.figures`; they are
re-exported here.

Methods
-------
* :func:`integrated_gradients` (captum): the image input of a fused model, the other
  modalities held at their actual values; baseline = zeros in normalised space (the
  dataset's mean colour, mid-grey for mean = std = 0.5); the class probability is
  explained. By default SmoothGrad-IG: captum ``NoiseTunnel`` averages IG over 16 noisy
  copies of the image (noise std 0.5), 2 steps each, i.e. the same 32 gradient
  evaluations as plain 32-step IG (``nt_samples=0``). On synth-derm plain IG put the
  strongest region on skin texture (stride artefacts of the CNN's gradients) for ~90 %
  of malignant lesions; SmoothGrad-IG points at the lesion for ~95 % and still passes
  the weight-randomisation check, unlike a blurred baseline, which also finds the lesion
  but does so for random weights too (it acts as an edge detector). The map is the sum
  over channels of ``|attribution|`` (``reduce="abs"``), of the positive part
  (``"positive"``, evidence *for* the class only; what :func:`medfuse.explain.explain`
  draws and circles: a region is "what raised this prediction") or the signed sum
  (``"sum"``). On synth-derm, circles of the positive part contain the lesion centre
  more often than circles of ``|attribution|`` (0.92 vs 0.78 on one dataset seed,
  0.85 vs 0.91 on another; see ``benchmarks/README.md``).
* :func:`grad_cam`: captum ``LayerGradCam`` on the last spatial feature map of the image
  backbone, ReLU-ed and upsampled (bilinear) to the input size. Coarse: the last map of
  an EfficientNet is 1/32 of the input (2 x 2 cells at 64 px).
* :func:`occlusion`: squares slid over a coarse grid, painted with the image's median
  colour; the drop of the class probability (positive part) is the map. Works for any
  image classifier, differentiable or not (hybrid models with tree heads), but localises
  less well than SmoothGrad-IG (see ``benchmarks/README.md``).
* :func:`lime_image`: captum ``Lime`` over SLIC superpixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from medfuse.errors import ConfigError
from medfuse.explain._common import BatchForward, ProbaFn, split_batch, targets
from medfuse.explain.figures import figure_threshold_comparison, overlay_png
from medfuse.explain.perturbation import FILLS, fill_baseline, lime_image, occlusion
from medfuse.explain.regions import (
    DBSCAN_EPS,
    LOCALISERS,
    MAX_SIDE,
    contains,
    localise,
    to_original,
)

__all__ = [
    "DBSCAN_EPS",
    "FILLS",
    "LOCALISERS",
    "MAX_SIDE",
    "REDUCTIONS",
    "contains",
    "figure_threshold_comparison",
    "fill_baseline",
    "find_feature_layer",
    "grad_cam",
    "ig_attributions",
    "integrated_gradients",
    "lime_image",
    "localise",
    "occlusion",
    "overlay_png",
    "reduce_channels",
    "to_original",
]

REDUCTIONS = ("abs", "positive", "sum")

# ----------------------------------------------------------------------------- maps


def reduce_channels(attr: torch.Tensor | np.ndarray, reduce: str = "abs") -> np.ndarray:
    """``(B, C, H, W)`` attributions -> ``(B, H, W)`` maps (see the module docstring).

    >>> reduce_channels(np.array([[[[1.0, -2.0]], [[-1.0, 1.0]]]]), "abs").tolist()
    [[[2.0, 3.0]]]
    """
    if reduce not in REDUCTIONS:
        raise ConfigError(f"The 'reduce' parameter must be one of {REDUCTIONS}. Got {reduce!r}.")
    a = attr.detach().cpu().numpy() if isinstance(attr, torch.Tensor) else np.asarray(attr)
    a = a.astype(np.float64)
    if reduce == "abs":
        return np.abs(a).sum(1)
    if reduce == "positive":
        return np.clip(a, 0.0, None).sum(1)
    return a.sum(1)


def _check_image_model(model: nn.Module, batch: dict[str, torch.Tensor]) -> None:
    encoders = getattr(model, "encoders", {})
    if "image" not in encoders or "image" not in batch:
        raise ConfigError("this model has no image input: image explanations need a model "
                          "trained with an image column (spec.image).")


def ig_attributions(
    forward: nn.Module | ProbaFn,
    images: torch.Tensor,
    target: int | Sequence[int] | torch.Tensor,
    steps: int = 32,
    internal_batch_size: int = 8,
    additional_forward_args: tuple[torch.Tensor, ...] = (),
    nt_samples: int = 16,
    nt_stdev: float = 0.5,
    seed: int = 0,
) -> torch.Tensor:
    """Captum integrated gradients of ``forward`` (probabilities) w.r.t. ``images``.

    Baseline: zeros (the normalised mean colour). With ``nt_samples > 0`` (default) the
    result is SmoothGrad-IG: captum ``NoiseTunnel`` averages the IG of ``nt_samples``
    copies of the image with Gaussian noise (std ``nt_stdev`` in normalised units), each
    integrated over ``max(1, steps // nt_samples)`` steps, so ``steps`` is the total
    number of gradient evaluations per image either way. ``nt_samples=0`` gives plain
    IG over ``steps`` steps. Returns ``(B, 3, H, W)``; at most ``internal_batch_size``
    images are forwarded (and back-propagated) at once, which bounds memory.
    """
    from captum.attr import IntegratedGradients, NoiseTunnel

    if steps < 1 or internal_batch_size < 1 or nt_samples < 0:
        raise ConfigError("'steps' and 'internal_batch_size' must be positive integers and "
                          f"'nt_samples' >= 0; got {steps!r}, {internal_batch_size!r} and "
                          f"{nt_samples!r}.")
    images = images.float()
    kw: dict[str, Any] = dict(
        baselines=torch.zeros_like(images), target=targets(target, images.shape[0]),
        internal_batch_size=internal_batch_size,
        additional_forward_args=additional_forward_args or None,
    )
    ig = IntegratedGradients(forward)
    if nt_samples == 0:
        return ig.attribute(images, n_steps=steps, **kw).detach()
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        out: torch.Tensor = NoiseTunnel(ig).attribute(
            images, nt_type="smoothgrad", nt_samples=nt_samples, stdevs=float(nt_stdev),
            nt_samples_batch_size=max(1, internal_batch_size // images.shape[0]),
            n_steps=max(1, steps // nt_samples), **kw,
        )
    return out.detach()


def integrated_gradients(
    model: nn.Module,
    batch: dict[str, torch.Tensor],
    target: int | Sequence[int] | torch.Tensor,
    steps: int = 32,
    internal_batch_size: int = 8,
    reduce: str = "abs",
    nt_samples: int = 16,
    nt_stdev: float = 0.5,
) -> np.ndarray:
    """Integrated-gradients maps ``(B, H, W)`` of a fused model's image input.

    Parameters
    ----------
    model:
        A :class:`~medfuse.fusion.FusionModel` with an ``image`` encoder (set to eval mode).
    batch:
        Its input batch (``image`` plus the other modalities' fields, held fixed).
    target:
        Class index explained (one for all rows, or one per row).
    steps, internal_batch_size:
        Interpolation steps; images forwarded at once (bounds memory: one 224 px
        EfficientNet-Lite0 image with 8 at once stays far below 2 GB).
    reduce:
        ``abs`` (default), ``positive`` or ``sum`` over channels.
    nt_samples, nt_stdev:
        SmoothGrad noise copies and noise std (see :func:`ig_attributions`); 0 copies
        gives plain integrated gradients.

    Returns
    -------
    numpy.ndarray
        ``(B, H, W)`` float64.
    """
    _check_image_model(model, batch)
    model.eval()
    keys, (images,), rest = split_batch(batch, ("image",))
    attr = ig_attributions(BatchForward(model, keys), images, target, steps,
                           internal_batch_size, rest, nt_samples, nt_stdev)
    return reduce_channels(attr, reduce)


def find_feature_layer(encoder: nn.Module, image: torch.Tensor) -> nn.Module:
    """The backbone module producing the last spatial feature map (``(B, C, h, w)``, h*w > 1).

    Found by running ``encoder`` once with forward hooks: the last module to finish with
    a 4-D output (a parent finishes after its children, so for timm EfficientNets this is
    ``bn2`` after ``conv_head``, for :class:`~medfuse.encoders.image.SmallCNN` ``features``).
    """
    backbone = getattr(encoder, "backbone", encoder)
    seen: list[tuple[nn.Module, tuple[int, ...]]] = []

    def hook(module: nn.Module, args: Any, output: Any) -> None:
        if isinstance(output, torch.Tensor) and output.dim() == 4:
            seen.append((module, tuple(output.shape)))

    handles = [m.register_forward_hook(hook) for m in backbone.modules() if m is not backbone]
    try:
        with torch.no_grad():
            encoder(image[:1])
    finally:
        for h in handles:
            h.remove()
    spatial = [m for m, shape in seen if shape[2] * shape[3] > 1]
    if not spatial:
        raise ConfigError(f"no convolutional feature map found in {type(backbone).__name__}: "
                          "Grad-CAM needs a CNN backbone; use integrated_gradients instead.")
    return spatial[-1]


def grad_cam(
    model: nn.Module,
    batch: dict[str, torch.Tensor],
    target: int | Sequence[int] | torch.Tensor,
    layer: nn.Module | None = None,
) -> np.ndarray:
    """Grad-CAM maps ``(B, H, W)`` on the image backbone's last feature map.

    Captum ``LayerGradCam`` (channel weights = spatially averaged gradients of the class
    probability; ReLU of the weighted sum), upsampled bilinearly to the input size.
    ``layer`` defaults to :func:`find_feature_layer`.
    """
    from captum.attr import LayerAttribution, LayerGradCam

    _check_image_model(model, batch)
    model.eval()
    keys, (images,), rest = split_batch(batch, ("image",))
    encoders: Any = model.encoders
    layer = layer or find_feature_layer(encoders["image"], images)
    cam = LayerGradCam(BatchForward(model, keys), layer)
    attr = cam.attribute(images.float(), target=targets(target, images.shape[0]),
                         additional_forward_args=rest or None, relu_attributions=True)
    up = LayerAttribution.interpolate(attr.detach().float(), tuple(images.shape[-2:]),
                                      "bilinear")
    return up[:, 0].cpu().numpy().astype(np.float64)

