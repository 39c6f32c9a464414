"""Percentile bootstrap confidence intervals of the metrics.

* :func:`bootstrap_ci` -- the intervals, resampling rows or whole groups (patients).
* :func:`bootstrap_weights` -- the resamples as draw counts per row, a chunk at a time.
* :func:`group_codes` -- checks group ids and numbers them ``0 .. n_groups - 1``.
* :func:`percentile_interval` -- ``[lo, hi]`` of the finite replicate values.

All randomness comes from ``numpy.random.default_rng(seed)``: same inputs and seed, same
result.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from medfuse.errors import DataError
from medfuse.evaluation.kernels import MetricKernel, check_metric_keys
from medfuse.scoring.checks import (
    FloatArray,
    IntArray,
    as_labels,
    as_proba,
    check_int,
    check_positive,
    check_unit,
)

__all__ = [
    "CI_KEYS",
    "bootstrap_ci",
    "bootstrap_weights",
    "group_codes",
    "percentile_interval",
]

CI_KEYS: tuple[str, ...] = (
    "accuracy", "balanced_accuracy", "roc_auc", "pr_auc", "sensitivity", "specificity",
    "ppv", "npv", "brier", "f1_macro",
)
"""Metrics :func:`bootstrap_ci` reports by default."""

_CHUNK_ELEMENTS = 2_000_000  # bootstrap weights held in memory at once (16 MB of float64)


def group_codes(groups: ArrayLike | None, n: int) -> tuple[IntArray | None, int]:
    """Group index of every row and the number of groups (``(None, n)`` without groups)."""
    if groups is None:
        return None, n
    g = np.asarray(groups)
    if g.ndim != 1 or len(g) != n:
        raise DataError(
            f"'groups' must be 1-D with one group id per row ({n} rows); got shape {g.shape}."
        )
    codes, uniques = pd.factorize(pd.Series(g), use_na_sentinel=True)
    if (codes < 0).any():
        raise DataError(
            f"'groups' has {int((codes < 0).sum())} missing group id(s); give every row a "
            "group (e.g. its own row id)."
        )
    return codes.astype(np.int64), len(uniques)


def bootstrap_weights(
    codes: IntArray | None, n_units: int, n_rows: int, n_boot: int, seed: int
) -> Iterator[FloatArray]:
    """Bootstrap draw counts per row, ``(chunk, n_rows)`` at a time.

    Draws ``n_units`` units (rows, or groups when ``codes`` maps rows to groups) with
    replacement per replicate; every row of a group drawn twice counts twice.
    """
    rng = np.random.default_rng(seed)
    size = max(1, min(n_boot, _CHUNK_ELEMENTS // max(n_units, n_rows)))
    done = 0
    while done < n_boot:
        b = min(size, n_boot - done)
        draws = rng.integers(0, n_units, size=(b, n_units))
        flat = (draws + n_units * np.arange(b)[:, None]).ravel()
        counts = np.bincount(flat, minlength=b * n_units).reshape(b, n_units).astype(float)
        yield counts if codes is None else counts[:, codes]
        done += b


def percentile_interval(values: FloatArray, alpha: float) -> list[float] | None:
    """``[lo, hi]`` percentiles covering ``1 - alpha`` of the finite values (``None`` if none)."""
    values = values[np.isfinite(values)]
    if not len(values):
        return None
    lo, hi = np.percentile(values, [50 * alpha, 100 - 50 * alpha])
    return [round(float(lo), 6), round(float(hi), 6)]


def bootstrap_ci(
    y_true: ArrayLike,
    proba: ArrayLike,
    groups: ArrayLike | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    threshold: float = 0.5,
    positive: int | None = None,
    keys: Iterable[str] = CI_KEYS,
) -> dict[str, list[float] | None]:
    """Percentile bootstrap confidence intervals of the metrics.

    Parameters
    ----------
    y_true : array-like of int, shape (n,)
        Class indices.
    proba : array-like of float, shape (n, n_classes)
        Class probabilities (a 1-D vector is the positive-class probability of a binary task).
    groups : array-like, shape (n,), optional
        Group (patient) id of every row. When given, whole groups are resampled with
        replacement: all rows of a drawn group come along, a group drawn twice counts twice.
        Otherwise rows are resampled.
    n_boot : int, default 1000
        Number of bootstrap replicates.
    seed : int, default 0
        Seed of ``numpy.random.default_rng``; same seed, same intervals.
    alpha : float, default 0.05
        The intervals cover ``1 - alpha`` (percentiles ``100 * alpha / 2`` and
        ``100 * (1 - alpha / 2)``).
    threshold : float, default 0.5
        Decision threshold on the positive-class probability (binary tasks).
    positive : int, optional
        Positive class (default: the last one).
    keys : iterable of str, default :data:`CI_KEYS`
        Metrics to report, any of :data:`BOOTSTRAP_KEYS`.

    Returns
    -------
    dict
        ``{metric: [lo, hi]}`` rounded to 6 decimals. Replicates where a metric is undefined
        (e.g. ROC AUC with one class drawn) are skipped for that metric; a metric without any
        valid replicate maps to ``None``.

    Raises
    ------
    ConfigError
        A parameter is out of range or a key is unknown.
    DataError
        The arrays are not aligned, not finite or the labels do not match ``proba``.

    Examples
    --------
    >>> import numpy as np
    >>> y = np.array([0, 0, 0, 1, 1, 1])
    >>> p = np.array([0.1, 0.2, 0.3, 0.7, 0.8, 0.9])
    >>> bootstrap_ci(y, p, n_boot=200, keys=["roc_auc"])
    {'roc_auc': [1.0, 1.0]}
    """
    owner = "bootstrap_ci"
    chosen = check_metric_keys(keys, owner)
    n_boot = check_int("n_boot", n_boot, 1, owner)
    alpha = check_unit("alpha", alpha, owner, low_open=True, high_open=True)
    threshold = check_unit("threshold", threshold, owner)
    p = as_proba(proba)
    y = as_labels(y_true, len(p), p.shape[1])
    pos = check_positive(positive, p.shape[1], owner)
    codes, n_units = group_codes(groups, len(y))
    kernel = MetricKernel(y, p, pos, threshold, chosen)
    parts: dict[str, list[FloatArray]] = {key: [] for key in chosen}
    for w in bootstrap_weights(codes, n_units, len(y), n_boot, seed):
        for key, values in kernel(w).items():
            parts[key].append(values)
    return {key: percentile_interval(np.concatenate(parts[key]), alpha) for key in chosen}
