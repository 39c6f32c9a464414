"""The metrics the statistics are built on, computed for many resamples at once.

* :class:`MetricKernel` -- every metric of
  :func:`~medfuse.scoring.metrics.classification_metrics` for a batch of bootstrap weight
  vectors (how often each row is drawn), in a few matrix products instead of one call per
  replicate.
* :func:`quiet_metrics` -- ``classification_metrics`` on one set, without sklearn's warnings
  on one-class sets.
* :data:`BOOTSTRAP_KEYS` and :func:`check_metric_keys` -- the metrics the kernel computes.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from typing import Any

import numpy as np
from numpy.typing import NDArray

from medfuse.errors import check_option
from medfuse.scoring.checks import FloatArray, IntArray
from medfuse.scoring.metrics import classification_metrics

__all__ = [
    "BOOTSTRAP_KEYS",
    "MetricKernel",
    "check_metric_keys",
    "quiet_metrics",
]

BOOTSTRAP_KEYS: tuple[str, ...] = (
    "accuracy", "balanced_accuracy", "precision_macro", "recall_macro", "f1_macro",
    "roc_auc", "pr_auc", "sensitivity", "specificity", "ppv", "npv", "brier", "ece",
)
"""Every metric (of :func:`~medfuse.scoring.metrics.classification_metrics`) that can be
bootstrapped."""

_ECE_BINS = 15  # as expected_calibration_error's default


def check_metric_keys(
    keys: Iterable[str] | str, owner: str, param: str = "keys"
) -> tuple[str, ...]:
    """``keys`` as a tuple, each checked to be one of :data:`BOOTSTRAP_KEYS`."""
    chosen = (keys,) if isinstance(keys, str) else tuple(keys)
    for key in chosen:
        check_option(param, key, BOOTSTRAP_KEYS, owner)
    return chosen


def quiet_metrics(
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


class MetricKernel:
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
