"""Statistics on top of the metrics: bootstrap CIs, paired tests, thresholds, calibration.

* :func:`bootstrap_ci` -- percentile bootstrap confidence intervals of the metrics,
  resampling rows or whole groups (patients).
* :func:`delong_test` -- DeLong's paired test of two ROC AUCs on the same rows.
* :func:`paired_bootstrap` -- paired bootstrap of the difference of any metric.
* :func:`choose_threshold` -- fixed, Youden or minimum-sensitivity decision thresholds.
* :class:`TemperatureScaler` -- one-parameter post-hoc calibration.
* :func:`subgroup_metrics` -- metrics per level of categorical / binned continuous columns,
  flagging subgroups that do clearly worse than the whole set.

All randomness comes from ``numpy.random.default_rng(seed)``: same inputs and seed, same
result. ``proba`` is always an ``(n, n_classes)`` array of class probabilities (a 1-D vector
is read as the positive-class probability of a binary task) and ``y_true`` holds class
indices; binary tasks use the last class as positive unless ``positive`` is given.

>>> import numpy as np
>>> y = np.array([0, 0, 1, 1])
>>> choose_threshold(y, np.array([0.1, 0.4, 0.35, 0.8]), method="youden")
0.8
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray
from scipy import stats as sps

from medfuse.errors import DataError, check_option
from medfuse.scoring.calibration import TemperatureScaler, choose_threshold
from medfuse.scoring.checks import (
    FloatArray,
    IntArray,
    as_labels,
    as_proba,
    as_scores,
    binary_labels,
    check_int,
    check_positive,
    check_unit,
    is_number,
    number_error,
)
from medfuse.scoring.metrics import classification_metrics

__all__ = [
    "BOOTSTRAP_KEYS",
    "CI_KEYS",
    "TemperatureScaler",
    "bootstrap_ci",
    "choose_threshold",
    "delong_test",
    "paired_bootstrap",
    "subgroup_metrics",
]

CI_KEYS: tuple[str, ...] = (
    "accuracy", "balanced_accuracy", "roc_auc", "pr_auc", "sensitivity", "specificity",
    "ppv", "npv", "brier", "f1_macro",
)
"""Metrics :func:`bootstrap_ci` reports by default."""

BOOTSTRAP_KEYS: tuple[str, ...] = (
    "accuracy", "balanced_accuracy", "precision_macro", "recall_macro", "f1_macro",
    "roc_auc", "pr_auc", "sensitivity", "specificity", "ppv", "npv", "brier", "ece",
)
"""Every metric (of :func:`~medfuse.evaluation.metrics.classification_metrics`) that can be
bootstrapped."""

COLUMN_KINDS: tuple[str, ...] = ("categorical", "continuous")
MISSING_LEVEL = "(missing)"

_CHUNK_ELEMENTS = 2_000_000  # bootstrap weights held in memory at once (16 MB of float64)
_ECE_BINS = 15  # as expected_calibration_error's default



# --------------------------------------------------------------------------- validation


def _check_keys(keys: Iterable[str] | str, owner: str, param: str = "keys") -> tuple[str, ...]:
    chosen = (keys,) if isinstance(keys, str) else tuple(keys)
    for key in chosen:
        check_option(param, key, BOOTSTRAP_KEYS, owner)
    return chosen


def _group_codes(groups: ArrayLike | None, n: int) -> tuple[IntArray | None, int]:
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


# --------------------------------------------------------------------------- vectorised metrics


def _metrics(
    y: IntArray, proba: FloatArray, positive: int | None = None, threshold: float = 0.5
) -> dict[str, Any]:
    """:func:`classification_metrics` without sklearn's warnings on one-class sets.

    Those metrics come back ``None`` and are handled by the callers.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return classification_metrics(y, proba, positive=positive, threshold=threshold)


class _RankCurve:
    """ROC AUC and average precision of one score column for many weight vectors."""

    def __init__(self, score: FloatArray, is_pos: NDArray[np.bool_]) -> None:
        self.order = np.argsort(score, kind="stable")
        s = score[self.order]
        self.starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
        self.is_pos = is_pos[self.order]

    def __call__(self, w: FloatArray) -> tuple[FloatArray, FloatArray]:
        ws = w[:, self.order]
        wp = np.add.reduceat(ws * self.is_pos, self.starts, axis=1)  # per tied score value
        wn = np.add.reduceat(ws * ~self.is_pos, self.starts, axis=1)
        n_pos, n_neg = wp.sum(axis=1), wn.sum(axis=1)
        defined = (n_pos > 0) & (n_neg > 0)
        below = np.cumsum(wn, axis=1) - wn
        pairs = np.where(defined, n_pos * n_neg, 1.0)
        auc = np.where(defined, (wp * (below + 0.5 * wn)).sum(axis=1) / pairs, np.nan)
        tp = np.cumsum(wp[:, ::-1], axis=1)  # descending thresholds
        called = tp + np.cumsum(wn[:, ::-1], axis=1)
        precision = np.divide(tp, called, out=np.zeros_like(tp), where=called > 0)
        ap_sum = (wp[:, ::-1] * precision).sum(axis=1)
        ap = np.where(defined, ap_sum / np.where(defined, n_pos, 1.0), np.nan)
        return auc, ap


class _MetricKernel:
    """The metrics of :func:`classification_metrics` for a batch of bootstrap weights.

    Each weight vector gives how many times every row is drawn; the result equals
    ``classification_metrics`` on the rows repeated that many times, with NaN where
    ``classification_metrics`` would give ``None``.
    """

    def __init__(
        self, y: IntArray, proba: FloatArray, pos: int, threshold: float, keys: tuple[str, ...]
    ) -> None:
        n, k = proba.shape
        self.k, self.pos, self.keys = k, pos, keys
        pred = (
            np.where(proba[:, pos] >= threshold, pos, 1 - pos) if k == 2 else proba.argmax(axis=1)
        )
        self.cells = np.zeros((n, k * k))
        self.cells[np.arange(n), y * k + pred] = 1.0  # confusion-matrix cell of every row
        self.curves: list[_RankCurve] = []
        if {"roc_auc", "pr_auc"} & set(keys):
            cols = [pos] if k == 2 else list(range(k))
            self.curves = [_RankCurve(proba[:, c], y == c) for c in cols]
        onehot = np.eye(k)[y]
        if k == 2:
            self.brier = (proba[:, pos] - onehot[:, pos]) ** 2
        else:
            self.brier = np.sum((proba - onehot) ** 2, axis=1)
        conf = proba.max(axis=1)
        edges = np.linspace(0.0, 1.0, _ECE_BINS + 1)
        idx = np.clip(np.digitize(conf, edges[1:-1]), 0, _ECE_BINS - 1)
        self.ece_cells = np.zeros((n, _ECE_BINS))
        self.ece_cells[np.arange(n), idx] = (pred == y) - conf

    def __call__(self, w: FloatArray) -> dict[str, FloatArray]:
        k, pos = self.k, self.pos
        cm = (w @ self.cells).reshape(-1, k, k)  # [replicate, true, predicted]
        total = cm.sum(axis=(1, 2))
        diag = np.diagonal(cm, axis1=1, axis2=2)
        true_tot, pred_tot = cm.sum(axis=2), cm.sum(axis=1)

        def ratio(num: FloatArray, den: FloatArray, fill: float = np.nan) -> FloatArray:
            return np.divide(num, den, out=np.full_like(num, fill), where=den > 0)

        recall = ratio(diag, true_tot, 0.0)
        present = true_tot > 0
        tp = cm[:, pos, pos]
        tn = total - true_tot[:, pos] - pred_tot[:, pos] + tp
        out: dict[str, FloatArray] = {
            "accuracy": diag.sum(axis=1) / total,
            "balanced_accuracy": (recall * present).sum(axis=1) / present.sum(axis=1),
            "precision_macro": ratio(diag, pred_tot, 0.0).mean(axis=1),
            "recall_macro": recall.mean(axis=1),
            "f1_macro": ratio(2 * diag, true_tot + pred_tot, 0.0).mean(axis=1),
            "sensitivity": ratio(tp, true_tot[:, pos]),
            "specificity": ratio(tn, total - true_tot[:, pos]),
            "ppv": ratio(tp, pred_tot[:, pos]),
            "npv": ratio(tn, total - pred_tot[:, pos]),
            "brier": (w @ self.brier) / total,
            "ece": np.abs(w @ self.ece_cells).sum(axis=1) / total,
        }
        if self.curves:
            aucs, aps = zip(*(curve(w) for curve in self.curves), strict=True)
            out["roc_auc"], out["pr_auc"] = _nanmean(aucs), _nanmean(aps)
        return {key: out[key] for key in self.keys}


def _nanmean(columns: Iterable[FloatArray]) -> FloatArray:
    """Row-wise mean over the finite entries, NaN when there is none (no warning)."""
    a = np.stack(list(columns), axis=1)
    finite = np.isfinite(a)
    count = finite.sum(axis=1)
    total = np.where(finite, a, 0.0).sum(axis=1)
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def _weights(
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


def _interval(values: FloatArray, alpha: float) -> list[float] | None:
    values = values[np.isfinite(values)]
    if not len(values):
        return None
    lo, hi = np.percentile(values, [50 * alpha, 100 - 50 * alpha])
    return [round(float(lo), 6), round(float(hi), 6)]


# --------------------------------------------------------------------------- public API


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
    chosen = _check_keys(keys, owner)
    n_boot = check_int("n_boot", n_boot, 1, owner)
    alpha = check_unit("alpha", alpha, owner, low_open=True, high_open=True)
    threshold = check_unit("threshold", threshold, owner)
    p = as_proba(proba)
    y = as_labels(y_true, len(p), p.shape[1])
    pos = check_positive(positive, p.shape[1], owner)
    codes, n_units = _group_codes(groups, len(y))
    kernel = _MetricKernel(y, p, pos, threshold, chosen)
    parts: dict[str, list[FloatArray]] = {key: [] for key in chosen}
    for w in _weights(codes, n_units, len(y), n_boot, seed):
        for key, values in kernel(w).items():
            parts[key].append(values)
    return {key: _interval(np.concatenate(parts[key]), alpha) for key in chosen}


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
    (metric,) = _check_keys(metric, owner, param="metric")
    n_boot = check_int("n_boot", n_boot, 1, owner)
    pa, pb = as_proba(proba_a, "proba_a"), as_proba(proba_b, "proba_b")
    if pa.shape != pb.shape:
        raise DataError(
            f"'proba_a' has shape {pa.shape} but 'proba_b' has {pb.shape}; both models must "
            "score the same rows and classes."
        )
    y = as_labels(y_true, len(pa), pa.shape[1], "proba_a")
    point_a, point_b = _metrics(y, pa)[metric], _metrics(y, pb)[metric]
    if point_a is None or point_b is None:
        raise DataError(
            f"'{metric}' is undefined on these labels (classes present: "
            f"{sorted(set(y.tolist()))}); evaluate on a set holding every class."
        )
    delta = float(point_a - point_b)
    codes, n_units = _group_codes(groups, len(y))
    pos = pa.shape[1] - 1
    ka = _MetricKernel(y, pa, pos, 0.5, (metric,))
    kb = _MetricKernel(y, pb, pos, 0.5, (metric,))
    parts = [ka(w)[metric] - kb(w)[metric] for w in _weights(codes, n_units, len(y), n_boot, seed)]
    deltas = np.concatenate(parts)
    deltas = deltas[np.isfinite(deltas)]
    result: dict[str, Any] = {"delta": round(delta, 6), "ci95": _interval(deltas, 0.05)}
    if not len(deltas):
        result["p_value"] = None
    elif delta == 0:
        result["p_value"] = 1.0
    else:
        count = int(np.sum(deltas <= 0) if delta > 0 else np.sum(deltas >= 0))
        result["p_value"] = min(1.0, 2.0 * (count + 1) / (len(deltas) + 1))
    return result


def _edge_labels(edges: FloatArray) -> list[str]:
    """Edges rounded to 3 significant digits (more if needed to keep them distinct)."""
    labels: list[str] = []
    for digits in range(3, 18):
        labels = [
            np.format_float_positional(float(f"{e:.{digits}g}"), trim="0") for e in edges
        ]
        if len(set(labels)) == len(labels):
            break
    return labels


def _levels(values: pd.Series, kind: str, bins: int) -> list[tuple[str, NDArray[np.bool_]]]:
    """``(label, row mask)`` of every subgroup of one column, missing values last."""
    missing = values.isna().to_numpy()
    out: list[tuple[str, NDArray[np.bool_]]] = []
    if kind == "categorical":
        present = pd.unique(values[~missing])
        try:
            ordered = sorted(present)
        except TypeError:
            ordered = sorted(present, key=str)
        raw = values.to_numpy()
        out = [(str(level), (raw == level) & ~missing) for level in ordered]
    else:
        x = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)
        bad = np.isnan(x) & ~missing
        if bad.any():
            examples = list(dict.fromkeys(values[bad].astype(str)))[:3]
            raise DataError(
                f"column '{values.name}' is marked 'continuous' but holds non-numeric values "
                f"(e.g. {examples}); mark it 'categorical' or clean it."
            )
        if (~missing).any():
            # the bin edges of pd.qcut(x, bins, duplicates="drop"), as left-closed intervals
            edges = np.unique(np.quantile(x[~missing], np.linspace(0.0, 1.0, bins + 1)))
            text = _edge_labels(edges)
            code = np.searchsorted(edges[1:-1], x, side="right")
            for i in range(max(1, len(edges) - 1)):
                hi = min(i + 1, len(edges) - 1)
                close = "]" if hi == len(edges) - 1 else ")"
                out.append((f"[{text[i]}, {text[hi]}{close}", (code == i) & ~missing))
    if missing.any():
        out.append((MISSING_LEVEL, missing))
    return out


def subgroup_metrics(
    frame: pd.DataFrame,
    y_true: ArrayLike,
    proba: ArrayLike,
    columns: Mapping[str, str],
    bins: int = 4,
    threshold: float = 0.5,
    positive: int | None = None,
    min_count: int = 10,
    flag_margin: float = 0.05,
) -> list[dict[str, Any]]:
    """Metrics per subgroup, flagging subgroups that do clearly worse than the whole set.

    Parameters
    ----------
    frame : pandas.DataFrame
        Per-row attributes, aligned by position with ``y_true`` / ``proba``.
    y_true : array-like of int, shape (n,)
        Class indices.
    proba : array-like of float, shape (n, n_classes)
        Class probabilities (1-D: positive-class probability).
    columns : mapping of str to {"categorical", "continuous"}
        Columns to split on. Categorical columns give one subgroup per level; continuous
        ones ``bins`` quantile bins (equal edges merged, as ``pd.qcut(duplicates="drop")``)
        labelled like ``"[30.0, 45.5)"`` (the last bin is closed, edges rounded to 3
        significant digits). Missing values form the level ``"(missing)"``.
    bins : int, default 4
        Quantile bins per continuous column.
    threshold : float, default 0.5
        Decision threshold (binary tasks).
    positive : int, optional
        Positive class (default: the last one).
    min_count : int, default 10
        Subgroups smaller than this are never flagged.
    flag_margin : float, default 0.05
        A subgroup is flagged when its accuracy is below the overall accuracy minus
        ``flag_margin``, or its ROC AUC is more than ``flag_margin`` below the overall one.

    Returns
    -------
    list of dict
        One row per subgroup with ``column``, ``level`` (str), ``n``, ``positives``,
        ``accuracy``, ``roc_auc`` (``None`` with one class), ``sensitivity``,
        ``specificity`` and ``flagged``.

    Raises
    ------
    DataError
        A column is not in ``frame``, a continuous column is not numeric, or the inputs are
        not aligned.
    ConfigError
        A column kind or a numeric parameter is invalid.
    """
    owner = "subgroup_metrics"
    bins = check_int("bins", bins, 1, owner)
    min_count = check_int("min_count", min_count, 0, owner)
    threshold = check_unit("threshold", threshold, owner)
    if not is_number(flag_margin) or not float(flag_margin) >= 0:
        raise number_error("flag_margin", flag_margin, "a number >= 0", owner)
    p = as_proba(proba)
    y = as_labels(y_true, len(p), p.shape[1])
    pos = check_positive(positive, p.shape[1], owner)
    if len(frame) != len(y):
        raise DataError(
            f"'frame' has {len(frame)} rows but 'y_true' has {len(y)}; pass the table rows the "
            "predictions were made on, in the same order."
        )
    for column, kind in columns.items():
        if column not in frame.columns:
            raise DataError(
                f"column '{column}' is not in the frame; available columns: "
                f"{[str(c) for c in frame.columns]}. Fix the 'columns' mapping."
            )
        check_option(f"columns['{column}']", kind, COLUMN_KINDS, owner)

    overall = _metrics(y, p, positive=pos, threshold=threshold)
    rows: list[dict[str, Any]] = []
    for column, kind in columns.items():
        for level, mask in _levels(frame[column].reset_index(drop=True), kind, bins):
            n = int(mask.sum())
            if n == 0:
                continue
            m = _metrics(y[mask], p[mask], positive=pos, threshold=threshold)
            worse_acc = m["accuracy"] < overall["accuracy"] - flag_margin
            worse_auc = (
                m["roc_auc"] is not None
                and overall["roc_auc"] is not None
                and overall["roc_auc"] - m["roc_auc"] > flag_margin
            )
            rows.append({
                "column": str(column),
                "level": level,
                "n": n,
                "positives": int((y[mask] == pos).sum()),
                "accuracy": m["accuracy"],
                "roc_auc": m["roc_auc"],
                "sensitivity": m["sensitivity"],
                "specificity": m["specificity"],
                "flagged": bool(n >= min_count and (worse_acc or worse_auc)),
            })
    return rows
