"""Image explanations: integrated gradients, Grad-CAM, occlusion, LIME, and lesion regions.

Attribution maps are ``(H, W)`` arrays at the model's input size (the image after the
:class:`~medfuse.data.preprocess.ImageTransform` resize, which does not keep the aspect
ratio); :func:`to_original` maps regions back to the original image's pixels. Pixel
``(row j, column i)`` covers ``[i, i + 1) x [j, j + 1)``: its centre is ``(i + 0.5, j + 0.5)``.

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

>>> import numpy as np
>>> yy, xx = np.mgrid[0:32, 0:32]
>>> attr = np.exp(-((xx - 10.5) ** 2 + (yy - 20.5) ** 2) / 8)
>>> [(round(r["x"], 2), round(r["y"], 2)) for r in localise(attr, threshold=0.9)]
[(11.0, 21.0)]
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from medfuse.errors import ConfigError, DataError
from medfuse.explain._common import BatchForward, ProbaFn, split_batch, targets

if TYPE_CHECKING:
    import pandas as pd
    from PIL import Image

REDUCTIONS = ("abs", "positive", "sum")
LOCALISERS = ("dbscan", "kmeans")
#: localisation works on maps of at most this side (larger ones are block-averaged first)
MAX_SIDE = 256
DBSCAN_EPS = 0.06  # default DBSCAN radius, as a share of the map's longer side


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


FILLS = ("median", "zero")


def fill_baseline(images: torch.Tensor, fill: str = "median") -> torch.Tensor:
    """What perturbation methods paint over hidden pixels, same shape as ``images``.

    ``median``: each image's per-channel median colour (its background, e.g. skin, so
    hiding a lesion removes it instead of painting a grey blob); ``zero``: the normalised
    mean colour (mid-grey).
    """
    if fill not in FILLS:
        raise ConfigError(f"The 'fill' parameter must be one of {FILLS}. Got {fill!r}.")
    if fill == "zero":
        return torch.zeros_like(images, dtype=torch.float32)
    med = images.float().flatten(2).median(dim=2).values
    return med[:, :, None, None].expand_as(images).contiguous()


def occlusion(
    fn: ProbaFn,
    images: torch.Tensor,
    target: int | Sequence[int] | torch.Tensor,
    grid: int = 8,
    batch_size: int = 32,
    fill: str = "median",
) -> np.ndarray:
    """Occlusion sensitivity maps ``(B, H, W)``: positive part of the probability drop.

    Squares of side ``ceil(size / grid)`` painted with :func:`fill_baseline` slide with
    half that stride (captum ``Occlusion``); each pixel gets the mean drop of the
    windows covering it.
    """
    from captum.attr import Occlusion

    h, w = images.shape[-2:]
    win = (max(1, math.ceil(h / grid)), max(1, math.ceil(w / grid)))
    stride = (max(1, win[0] // 2), max(1, win[1] // 2))
    with torch.no_grad():
        attr = Occlusion(fn).attribute(
            images.float(), sliding_window_shapes=(images.shape[1], *win),
            strides=(images.shape[1], *stride), baselines=fill_baseline(images, fill),
            target=targets(target, images.shape[0]), perturbations_per_eval=batch_size,
        )
    return np.clip(attr[:, 0].detach().cpu().numpy().astype(np.float64), 0.0, None)


def lime_image(
    clf: Any,
    df_row: pd.DataFrame | pd.Series,
    n_samples: int = 200,
    n_segments: int = 50,
    target: int | None = None,
    seed: int = 0,
    fill: str = "median",
) -> np.ndarray:
    """LIME over SLIC superpixels of one row's image -> ``(H, W)`` map at the input size.

    Superpixels switched off are painted with :func:`fill_baseline`; a ridge
    model fitted on ``n_samples`` random on / off patterns (captum ``Lime``, cosine
    exponential kernel) gives each superpixel a weight, painted on its pixels. Other
    modalities are held at the row's values, so this works for image-only models and
    for multimodal ones alike (fused or hybrid, any head: no gradients are needed).

    Parameters
    ----------
    clf:
        A fitted :class:`~medfuse.FusionClassifier` or :class:`~medfuse.HybridClassifier`
        with an image column.
    df_row:
        One row (a one-row DataFrame or a Series).
    target:
        Class index explained; default: the predicted class.
    """
    import pandas as pd
    from captum._utils.models.linear_model import SkLearnRidge
    from captum.attr import Lime
    from skimage.segmentation import slic

    from medfuse.explain.adapters import image_forward

    frame = df_row.to_frame().T if isinstance(df_row, pd.Series) else df_row
    if len(frame) != 1:
        raise DataError(f"lime_image explains one row; got {len(frame)} rows.")
    adapter = image_forward(clf, frame)
    image = adapter.image
    rgb = adapter.to_rgb(image)[0]
    segments = slic(rgb, n_segments=n_segments, compactness=10.0, start_label=0,
                    channel_axis=-1)
    mask = torch.as_tensor(segments, dtype=torch.long)[None, None].expand_as(image)
    cls = adapter.predicted if target is None else int(target)
    lime = Lime(adapter.fn, interpretable_model=SkLearnRidge(alpha=1.0))
    with torch.random.fork_rng(), torch.no_grad():
        torch.manual_seed(seed)
        attr = lime.attribute(image.float(), baselines=fill_baseline(image, fill), target=cls,
                              feature_mask=mask.contiguous(), n_samples=n_samples,
                              perturbations_per_eval=16)
    return attr[0, 0].detach().cpu().numpy().astype(np.float64)


# ----------------------------------------------------------------------------- regions


def _block_mean(a: np.ndarray, f: int) -> np.ndarray:
    h, w = a.shape
    ph, pw = -h % f, -w % f
    padded = np.pad(a, ((0, ph), (0, pw)), mode="edge")
    return padded.reshape((h + ph) // f, f, (w + pw) // f, f).mean(axis=(1, 3))


def localise(
    attr_map: np.ndarray,
    threshold: float = 0.9,
    max_regions: int = 3,
    method: str = "dbscan",
    smooth: float = 0.02,
    eps: float | None = None,
    min_samples: int | None = None,
    coverage: float = 0.9,
    seed: int = 0,
) -> list[dict[str, float]]:
    """Circles around the strongest parts of an attribution map.

    Steps: negative values are set to 0; the map is smoothed (Gaussian, sigma =
    ``smooth`` x its longer side; 0 disables); pixels at or above the ``threshold``
    quantile (and > 0) are kept; their centres ``(x, y)`` are clustered; each cluster
    becomes a circle at its attribution-weighted centre whose radius covers ``coverage``
    of the cluster's attribution.

    Parameters
    ----------
    attr_map:
        ``(H, W)`` map (larger than 256 px: block-averaged first, results in the input's
        pixels).
    threshold:
        Quantile in [0, 1): 0.9 keeps the top 10 % of pixels (low: noisy, high: focused).
    max_regions:
        Keep at most this many regions (the highest scores).
    method:
        ``dbscan`` (finds the number of regions; unclustered pixels count as noise) or
        ``kmeans`` (attribution-weighted, always ``max_regions`` clusters when possible).
    eps, min_samples:
        DBSCAN parameters; default ``eps = max(1.5, 0.06 * side)`` pixels (wide enough to
        join the arcs of a lesion's border into one region) and
        ``min_samples`` = a quarter of an ``eps`` disc (at least 3).
    coverage:
        Share of a cluster's attribution inside its circle.

    Returns
    -------
    list of dict
        ``{"x", "y", "r", "score"}`` sorted by ``score`` (descending): the region's share
        of all kept attribution (noise included, so scores sum to at most 1).
    """
    from sklearn.cluster import DBSCAN, KMeans

    a = np.asarray(attr_map, dtype=np.float64)
    if a.ndim != 2 or a.size == 0:
        raise DataError(f"attr_map must be a non-empty (H, W) array; got shape {a.shape}.")
    if not 0.0 <= threshold < 1.0:
        raise ConfigError(f"The 'threshold' parameter must be a quantile in [0, 1). Got "
                          f"{threshold!r} (0.9 keeps the top 10 % of pixels).")
    if method not in LOCALISERS:
        raise ConfigError(f"The 'method' parameter must be one of {LOCALISERS}. Got {method!r}.")
    if max_regions < 1 or not 0.0 < coverage <= 1.0:
        raise ConfigError("'max_regions' must be >= 1 and 'coverage' in (0, 1]; got "
                          f"{max_regions!r} and {coverage!r}.")
    a = np.nan_to_num(np.clip(a, 0.0, None))
    factor = max(1, math.ceil(max(a.shape) / MAX_SIDE))
    if factor > 1:
        a = _block_mean(a, factor)
    if smooth > 0:
        from scipy.ndimage import gaussian_filter

        a = gaussian_filter(a, sigma=smooth * max(a.shape), mode="nearest")
    cut = float(np.quantile(a, threshold))
    keep = (a >= cut) & (a > 0)
    if not keep.any():
        return []
    ys, xs = np.nonzero(keep)
    pts = np.column_stack([xs + 0.5, ys + 0.5])
    w = a[ys, xs]
    if method == "dbscan":
        e = float(eps) if eps is not None else max(1.5, DBSCAN_EPS * max(a.shape))
        m = int(min_samples) if min_samples is not None else max(3, round(math.pi * e * e / 4))
        labels = DBSCAN(eps=e, min_samples=m).fit_predict(pts)
    else:
        k = min(max_regions, len(pts))
        labels = KMeans(n_clusters=k, n_init=4, random_state=seed).fit_predict(
            pts, sample_weight=w)
    total = float(w.sum())
    regions = []
    for lab in np.unique(labels):
        if lab < 0:
            continue
        sel = labels == lab
        p, wl = pts[sel], w[sel]
        centre = (p * wl[:, None]).sum(0) / wl.sum()
        d = np.hypot(*(p - centre).T)
        order = np.argsort(d)
        cum = np.cumsum(wl[order])
        radius = float(d[order][np.searchsorted(cum, coverage * cum[-1] - 1e-12)]) + 0.5
        regions.append({"x": float(centre[0]) * factor, "y": float(centre[1]) * factor,
                        "r": radius * factor, "score": float(wl.sum()) / total})
    regions.sort(key=lambda r: -r["score"])
    return regions[:max_regions]


def to_original(
    regions: Sequence[dict[str, float]],
    original_size: tuple[int, int],
    input_size: int | tuple[int, int],
) -> list[dict[str, float]]:
    """Map regions from model-input pixels to the original image's ``(W, H)`` pixels.

    ``x * W / w_in``, ``y * H / h_in``; ``r`` scales by the mean of the two factors.

    >>> to_original([{"x": 16.0, "y": 8.0, "r": 4.0, "score": 1.0}], (64, 128), 32)
    [{'x': 32.0, 'y': 32.0, 'r': 12.0, 'score': 1.0}]
    """
    w_in, h_in = (input_size, input_size) if isinstance(input_size, int) else input_size
    fx, fy = original_size[0] / w_in, original_size[1] / h_in
    return [{**r, "x": r["x"] * fx, "y": r["y"] * fy, "r": r["r"] * (fx + fy) / 2}
            for r in regions]


def contains(region: dict[str, float], x: float, y: float) -> bool:
    """Whether point ``(x, y)`` lies in the region's circle."""
    return math.hypot(x - region["x"], y - region["y"]) <= region["r"]


# ----------------------------------------------------------------------------- figures


def _as_rgb(image: Image.Image | np.ndarray) -> np.ndarray:
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    return arr


def _draw(ax: Any, rgb: np.ndarray, attr: np.ndarray | None, regions: Sequence[dict[str, float]],
          title: str, mask: np.ndarray | None = None) -> None:
    from matplotlib.patches import Circle

    h, w = rgb.shape[:2]
    extent = (0.0, float(w), float(h), 0.0)
    ax.imshow(rgb, extent=extent, interpolation="nearest")
    if attr is not None:
        ax.imshow(attr, cmap="jet", alpha=0.45, extent=extent, interpolation="bilinear")
    if mask is not None:
        overlay = np.zeros((*mask.shape, 4))
        overlay[mask] = (1.0, 1.0, 0.0, 0.45)
        ax.imshow(overlay, extent=extent, interpolation="nearest")
    for i, r in enumerate(regions):
        ax.add_patch(Circle((r["x"], r["y"]), r["r"], fill=False, lw=2.0,
                            color="lime" if i == 0 else "white"))
        ax.annotate(f"{r['score']:.2f}", (r["x"], r["y"] - r["r"]), color="white",
                    fontsize=8, ha="center", va="bottom")
    ax.set_title(title, fontsize=9)
    ax.set_xlim(0, w)
    ax.set_ylim(h, 0)
    ax.axis("off")


def _png(fig: Any) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return buf.getvalue()


def _regions_on(image_shape: tuple[int, ...], attr: np.ndarray, threshold: float,
                **localise_kw: Any) -> list[dict[str, float]]:
    regions = localise(attr, threshold=threshold, **localise_kw)
    return to_original(regions, (image_shape[1], image_shape[0]),
                       (attr.shape[1], attr.shape[0]))


def overlay_png(
    image: Image.Image | np.ndarray,
    attr: np.ndarray,
    regions: Sequence[dict[str, float]],
    title: str = "",
) -> bytes:
    """PNG of ``image`` with the attribution heatmap (stretched to it) and region circles.

    ``regions`` are in ``image`` pixels (e.g. from :func:`to_original`).
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.2, 4.2))
    _draw(fig.add_subplot(1, 1, 1), _as_rgb(image), np.asarray(attr), regions, title)
    return _png(fig)


def figure_threshold_comparison(
    image: Image.Image | np.ndarray,
    attr: np.ndarray,
    low: float = 0.5,
    high: float = 0.95,
    **localise_kw: Any,
) -> bytes:
    """PNG: the same image "noisy" (``low`` threshold) vs "focused" (``high``), side by side.

    Each panel shades the kept pixels and draws :func:`localise`'s circles (the strongest
    one green). ``attr`` may be at the model's input size; regions are drawn in the
    image's pixels.
    """
    from matplotlib.figure import Figure

    rgb = _as_rgb(image)
    a = np.asarray(attr, dtype=np.float64)
    fig = Figure(figsize=(8.4, 4.4))
    for k, (name, q) in enumerate((("noisy", low), ("focused", high))):
        regions = _regions_on(rgb.shape, a, q, **localise_kw)
        cut = np.quantile(np.clip(a, 0, None), q)
        mask = (a >= cut) & (a > 0)
        _draw(fig.add_subplot(1, 2, k + 1), rgb, None, regions,
              f"{name}: top {100 * (1 - q):.0f}% of attribution, {len(regions)} region(s)",
              mask=mask)
    return _png(fig)
