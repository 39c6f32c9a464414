"""PNG figures of image explanations: heatmap overlays and the threshold comparison.

Drawn with matplotlib's object API on an Agg canvas (no pyplot state, no display needed).
Region circles are in the drawn image's pixels (see :func:`~medfuse.explain.regions.to_original`);
the strongest one is green.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from medfuse.explain.regions import localise, to_original

if TYPE_CHECKING:
    from PIL import Image


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
