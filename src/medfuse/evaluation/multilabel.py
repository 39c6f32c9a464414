"""Evaluating multi-label models: every label a binary task, and the macro / micro view.

Each label is scored with the binary tools (metrics at the label's own threshold,
patient-bootstrap CIs); the bootstrap draws the same resamples (same seed, same groups)
for every label, so a replicate's macro ROC AUC is the mean of the labels' ROC AUCs in
that very resample and its interval is honest about the labels' shared rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from medfuse.evaluation.bootstrap import (
    CI_KEYS,
    bootstrap_weights,
    group_codes,
    percentile_interval,
)
from medfuse.evaluation.kernels import MetricKernel, check_metric_keys
from medfuse.scoring.metrics import label_proba, multilabel_metrics

if TYPE_CHECKING:
    from medfuse.estimators.base import Classifier

__all__ = ["multilabel_bootstrap_ci", "multilabel_evaluation", "multilabel_predictions"]

MACRO_KEYS = ("roc_auc", "pr_auc")


def multilabel_bootstrap_ci(
    y_true: np.ndarray, proba: np.ndarray, thresholds: Sequence[float], labels: Sequence[str],
    groups: np.ndarray | None = None, n_boot: int = 1000, seed: int = 0, alpha: float = 0.05,
) -> dict[str, Any]:
    """95 % percentile bootstrap intervals per label and of the macro ROC / PR AUC.

    Returns ``{"per_label": {label: {metric: [lo, hi]}}, "macro": {"roc_auc": [lo, hi],
    "pr_auc": [lo, hi]}}``; groups (patients) are resampled whole when given.

    >>> y = np.array([[0, 1], [0, 0], [1, 1], [1, 0], [0, 1], [1, 0]])
    >>> p = np.array([[.1, .9], [.2, .1], [.8, .7], [.9, .2], [.3, .8], [.7, .3]])
    >>> multilabel_bootstrap_ci(y, p, [.5, .5], ["a", "b"], n_boot=50)["macro"]["roc_auc"]
    [1.0, 1.0]
    """
    y = np.asarray(y_true, dtype=int)
    p = np.asarray(proba, dtype=float)
    keys = check_metric_keys(CI_KEYS, "multilabel_bootstrap_ci")
    kernels = [MetricKernel(y[:, j], label_proba(p, j), 1, float(thresholds[j]), keys)
               for j in range(len(labels))]
    codes, n_units = group_codes(groups, len(y))
    parts: list[dict[str, list[np.ndarray]]] = [{k: [] for k in keys} for _ in labels]
    for w in bootstrap_weights(codes, n_units, len(y), n_boot, seed):
        for j, kernel in enumerate(kernels):
            for key, values in kernel(w).items():
                parts[j][key].append(values)
    reps = [{k: np.concatenate(v) for k, v in part.items()} for part in parts]
    per_label = {name: {k: percentile_interval(rep[k], alpha) for k in keys}
                 for name, rep in zip(labels, reps, strict=True)}
    macro: dict[str, list[float] | None] = {}
    for key in MACRO_KEYS:
        stacked = np.vstack([rep[key] for rep in reps])
        with np.errstate(invalid="ignore"):
            ok = np.isfinite(stacked)
            mean = np.where(ok.any(0), np.nansum(stacked, 0) / np.maximum(ok.sum(0), 1), np.nan)
        macro[key] = percentile_interval(mean, alpha)
    return {"per_label": per_label, "macro": macro}


def multilabel_evaluation(
    clf: Classifier, y: np.ndarray, proba: np.ndarray, raw: np.ndarray,
    groups: np.ndarray | None, bootstrap: int, seed: int,
) -> dict[str, Any]:
    """``metrics.json`` keys of a multi-label model: :func:`multilabel_metrics`, per-label
    and macro CIs (``bootstrap > 0``), and the per-label temperature decisions."""
    from medfuse.scoring.metrics import expected_calibration_error

    thresholds = list(getattr(clf, "thresholds", [0.5] * len(clf.classes_)))
    metrics = multilabel_metrics(y, proba, thresholds, clf.classes_)
    if bootstrap:
        ci = multilabel_bootstrap_ci(y, proba, thresholds, clf.classes_, groups, bootstrap, seed)
        metrics["ci95"] = ci["macro"]
        for name, interval in ci["per_label"].items():
            metrics["per_label"][name]["ci95"] = interval
    decision = getattr(clf, "calibration_", None)
    if decision:
        def ece(p: np.ndarray) -> float:  # mean over labels of the binary top-label ECE
            return float(np.mean([
                expected_calibration_error(q.argmax(1) == y[:, j], q.max(1))
                for j in range(y.shape[1]) for q in [label_proba(p, j)]]))

        metrics["calibration"] = {**decision,
                                  "temperatures": dict(zip(clf.classes_,
                                                           getattr(clf, "label_temperatures_",
                                                                   None) or [], strict=False)),
                                  "ece_before": ece(raw), "ece_after": ece(proba)}
    return metrics


def multilabel_predictions(clf: Classifier, out: pd.DataFrame, proba: np.ndarray,
                           raw: np.ndarray | None) -> pd.DataFrame:
    """Add ``prob_<label>``, ``pred_<label>`` (0/1 at the label's threshold), and
    ``prediction`` (the predicted labels joined, as the target column is) to ``out``."""
    decided = np.asarray(clf.decide(proba))
    for j, name in enumerate(clf.classes_):
        out[f"prob_{name}"] = proba[:, j]
    if raw is not None and not np.array_equal(raw, proba):
        for j, name in enumerate(clf.classes_):
            out[f"raw_prob_{name}"] = raw[:, j]
    for j, name in enumerate(clf.classes_):
        out[f"pred_{name}"] = decided[:, j]
    names = np.asarray(clf.classes_, dtype=object)
    out["prediction"] = [clf.spec.separator.join(names[row.astype(bool)]) for row in decided]
    return out
