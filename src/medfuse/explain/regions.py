"""Lesion regions: an image attribution map clustered into circles.

:func:`localise` keeps the strongest pixels of an ``(H, W)`` attribution map (at the
model's input size), clusters them and draws a circle around each cluster;
:func:`to_original` maps the circles back to the original image's pixels (the
:class:`~medfuse.data.preprocess.ImageTransform` resize does not keep the aspect ratio).
Pixel ``(row j, column i)`` covers ``[i, i + 1) x [j, j + 1)``: its centre is
``(i + 0.5, j + 0.5)``.

>>> import numpy as np
>>> yy, xx = np.mgrid[0:32, 0:32]
>>> attr = np.exp(-((xx - 10.5) ** 2 + (yy - 20.5) ** 2) / 8)
>>> [(round(r["x"], 2), round(r["y"], 2)) for r in localise(attr, threshold=0.9)]
[(11.0, 21.0)]
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from medfuse.errors import ConfigError, DataError

LOCALISERS = ("dbscan", "kmeans")
#: localisation works on maps of at most this side (larger ones are block-averaged first)
MAX_SIDE = 256
DBSCAN_EPS = 0.06  # default DBSCAN radius, as a share of the map's longer side

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
