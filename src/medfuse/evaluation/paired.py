"""Paired comparisons of two models scored on the same rows.

* :func:`delong_test` -- DeLong's paired test of two ROC AUCs.
* :func:`paired_bootstrap` -- paired bootstrap of the difference of any metric.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats as sps

from medfuse.errors import DataError
from medfuse.evaluation.bootstrap import bootstrap_weights, group_codes, percentile_interval
from medfuse.evaluation.kernels import MetricKernel, check_metric_keys, quiet_metrics
from medfuse.scoring.checks import as_labels, as_proba, as_scores, binary_labels, check_int

__all__ = ["delong_test", "paired_bootstrap"]


def delong_test(y_true: ArrayLike, score_a: ArrayLike, score_b: ArrayLike) -> dict[str, Any]:
    """DeLong's paired test of two correlated ROC AUCs (fast algorithm of Sun & Xu, 2014).

    Parameters
    ----------
    y_true : array-like of {0, 1}, shape (n,)
        Binary labels (1 = positive); at least 2 positives and 2 negatives.
    score_a, score_b : array-like of float, shape (n,)
        Scores of the two models on the same rows (higher = more likely positive).

    Returns
    -------
    dict
        ``auc_a``, ``auc_b``, ``delta`` (``auc_a - auc_b``), ``z``, ``p_value`` (two-sided,
        normal approximation) and ``ci95`` (``[lo, hi]`` of ``delta``). When the variance of
        ``delta`` is zero (e.g. identical scores) ``z`` is 0 and ``p_value`` 1 if
        ``delta == 0``, else ``z`` is +/-inf and ``p_value`` 0.

    Raises
    ------
    DataError
        Labels not binary, too few rows of a class, or misaligned / non-finite scores.

    References
    ----------
    DeLong, DeLong & Clarke-Pearson (1988), Biometrics 44(3):837-845.
    Sun & Xu (2014), IEEE Signal Processing Letters 21(11):1389-1393.
    """
    a = as_scores(score_a, "score_a")
    b = as_scores(score_b, "score_b")
    if len(a) != len(b):
        raise DataError(
            f"'score_a' has {len(a)} rows but 'score_b' has {len(b)}; score the same rows."
        )
    y = binary_labels(y_true, len(a), "score_a", need=2)
    is_pos = y == 1
    m, n = int(is_pos.sum()), int((~is_pos).sum())
    scores = np.vstack([a, b])
    x, z = scores[:, is_pos], scores[:, ~is_pos]
    tx = sps.rankdata(x, axis=1)
    tz = sps.rankdata(z, axis=1)
    txz = sps.rankdata(np.hstack([x, z]), axis=1)
    aucs = (txz[:, :m].sum(axis=1) / m - (m + 1) / 2.0) / n
    v10 = (txz[:, :m] - tx) / n  # structural components of the positives
    v01 = 1.0 - (txz[:, m:] - tz) / m  # ... and of the negatives
    cov = np.cov(v10) / m + np.cov(v01) / n
    delta = float(aucs[0] - aucs[1])
    var = float(cov[0, 0] + cov[1, 1] - 2.0 * cov[0, 1])
    if var > 0:
        stat = delta / math.sqrt(var)
        p_value = float(2.0 * sps.norm.sf(abs(stat)))
    else:
        var = 0.0
        stat = 0.0 if delta == 0 else math.copysign(math.inf, delta)
        p_value = 1.0 if delta == 0 else 0.0
    half = float(sps.norm.ppf(0.975)) * math.sqrt(var)
    return {
        "auc_a": float(aucs[0]),
        "auc_b": float(aucs[1]),
        "delta": delta,
        "z": float(stat),
        "p_value": min(1.0, p_value),
        "ci95": [delta - half, delta + half],
    }


def paired_bootstrap(
    y_true: ArrayLike,
    proba_a: ArrayLike,
    proba_b: ArrayLike,
    metric: str = "roc_auc",
    groups: ArrayLike | None = None,
    n_boot: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    """Paired bootstrap of ``metric(a) - metric(b)`` on the same rows.

    Both models are scored on the same resampled rows (or groups) in every replicate, at the
    default threshold 0.5 with the last class as positive.

    Parameters
    ----------
    y_true : array-like of int, shape (n,)
        Class indices.
    proba_a, proba_b : array-like of float, shape (n, n_classes)
        Class probabilities of the two models (1-D: positive-class probability).
    metric : str, default "roc_auc"
        One of :data:`BOOTSTRAP_KEYS`.
    groups : array-like, shape (n,), optional
        Group (patient) ids; whole groups are resampled when given.
    n_boot : int, default 2000
        Number of replicates.
    seed : int, default 0
        Seed of ``numpy.random.default_rng``.

    Returns
    -------
    dict
        ``delta`` (point estimate on all rows, rounded to 6 decimals), ``ci95`` (percentile
        ``[lo, hi]`` of the replicate deltas) and ``p_value``: two-sided,
        ``min(1, 2 * (count + 1) / (n_valid + 1))`` where ``count`` is the number of valid
        replicates whose delta is zero or of the sign opposite to ``delta`` (1.0 when
        ``delta == 0``). ``ci95`` and ``p_value`` are ``None`` if no replicate is valid.

    Raises
    ------
    ConfigError
        Unknown ``metric`` or bad ``n_boot``.
    DataError
        Misaligned inputs, or ``metric`` undefined on the full data.
    """
    owner = "paired_bootstrap"
    (metric,) = check_metric_keys(metric, owner, param="metric")
    n_boot = check_int("n_boot", n_boot, 1, owner)
    pa, pb = as_proba(proba_a, "proba_a"), as_proba(proba_b, "proba_b")
    if pa.shape != pb.shape:
        raise DataError(
            f"'proba_a' has shape {pa.shape} but 'proba_b' has {pb.shape}; both models must "
            "score the same rows and classes."
        )
    y = as_labels(y_true, len(pa), pa.shape[1], "proba_a")
    point_a, point_b = quiet_metrics(y, pa)[metric], quiet_metrics(y, pb)[metric]
    if point_a is None or point_b is None:
        raise DataError(
            f"'{metric}' is undefined on these labels (classes present: "
            f"{sorted(set(y.tolist()))}); evaluate on a set holding every class."
        )
    delta = float(point_a - point_b)
    codes, n_units = group_codes(groups, len(y))
    pos = pa.shape[1] - 1
    ka = MetricKernel(y, pa, pos, 0.5, (metric,))
    kb = MetricKernel(y, pb, pos, 0.5, (metric,))
    weights = bootstrap_weights(codes, n_units, len(y), n_boot, seed)
    parts = [ka(w)[metric] - kb(w)[metric] for w in weights]
    deltas = np.concatenate(parts)
    deltas = deltas[np.isfinite(deltas)]
    result: dict[str, Any] = {"delta": round(delta, 6), "ci95": percentile_interval(deltas, 0.05)}
    if not len(deltas):
        result["p_value"] = None
    elif delta == 0:
        result["p_value"] = 1.0
    else:
        count = int(np.sum(deltas <= 0) if delta > 0 else np.sum(deltas >= 0))
        result["p_value"] = min(1.0, 2.0 * (count + 1) / (len(deltas) + 1))
    return result
