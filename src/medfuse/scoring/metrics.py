"""Classification metrics with the keys of the ``metrics.json`` contract.

>>> import numpy as np
>>> proba = np.array([[.9, .1], [.2, .8], [.6, .4], [.7, .3]])
>>> m = classification_metrics(np.array([0, 1, 1, 0]), proba)
>>> m["accuracy"], m["sensitivity"], m["specificity"], m["roc_auc"]
(0.75, 0.5, 1.0, 1.0)
>>> m["ppv"], round(m["npv"], 4), round(m["brier"], 6), m["threshold"]
(1.0, 0.6667, 0.125, 0.5)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn import metrics as skm

METRIC_KEYS = (
    "n", "accuracy", "balanced_accuracy", "precision_macro", "recall_macro", "f1_macro",
    "roc_auc", "pr_auc", "sensitivity", "specificity", "ece", "ppv", "npv", "brier", "threshold",
)


def expected_calibration_error(
    correct: np.ndarray, confidence: np.ndarray, bins: int = 15
) -> float:
    """ECE: bin-weighted mean |accuracy - confidence| over equal-width confidence bins."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    idx = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        sel = idx == b
        if sel.any():
            ece += sel.mean() * abs(correct[sel].mean() - confidence[sel].mean())
    return float(ece)


def classification_metrics(
    y_true: np.ndarray, proba: np.ndarray, positive: int | None = None, threshold: float = 0.5
) -> dict[str, Any]:
    """Metrics for class indices ``y_true`` and probabilities ``proba`` (n, n_classes).

    Binary tasks use ``positive`` (default: the last class) at ``threshold``;
    multi-class tasks use the arg-max, macro ROC AUC (one-vs-rest) and macro PR AUC,
    with sensitivity / specificity of ``positive`` against the rest.

    ``ppv`` / ``npv`` are the positive / negative predictive values of ``positive``
    (``None`` when nothing is predicted positive / negative). ``brier`` is
    ``mean((p_pos - y_pos) ** 2)`` for binary tasks and the mean over rows of the summed
    squared error against the one-hot truth for multi-class tasks. ``threshold`` echoes
    ``threshold`` (multi-class predictions use the arg-max and ignore it).
    """
    y_true = np.asarray(y_true, dtype=int)
    proba = np.asarray(proba, dtype=float)
    k = proba.shape[1]
    pos = k - 1 if positive is None else positive
    binary = np.where(proba[:, pos] >= threshold, pos, 1 - pos)
    pred = binary if k == 2 else proba.argmax(axis=1)
    labels = list(range(k))
    present = np.unique(y_true)
    out: dict[str, Any] = {
        "n": len(y_true),
        "accuracy": float(skm.accuracy_score(y_true, pred)),
        "balanced_accuracy": float(skm.balanced_accuracy_score(y_true, pred)),
        "precision_macro": float(
            skm.precision_score(y_true, pred, labels=labels, average="macro", zero_division=0)
        ),
        "recall_macro": float(
            skm.recall_score(y_true, pred, labels=labels, average="macro", zero_division=0)
        ),
        "f1_macro": float(
            skm.f1_score(y_true, pred, labels=labels, average="macro", zero_division=0)
        ),
    }
    if len(present) < 2:
        out["roc_auc"] = out["pr_auc"] = None
    elif k == 2:
        out["roc_auc"] = float(skm.roc_auc_score(y_true == pos, proba[:, pos]))
        out["pr_auc"] = float(skm.average_precision_score(y_true == pos, proba[:, pos]))
    else:
        onehot = np.eye(k)[y_true]
        cols = [c for c in labels if 0 < onehot[:, c].sum() < len(y_true)]
        out["roc_auc"] = float(
            np.mean([skm.roc_auc_score(onehot[:, c], proba[:, c]) for c in cols])
        )
        out["pr_auc"] = float(
            np.mean([skm.average_precision_score(onehot[:, c], proba[:, c]) for c in cols])
        )
    is_pos, said_pos = y_true == pos, pred == pos
    out["sensitivity"] = float(said_pos[is_pos].mean()) if is_pos.any() else None
    out["specificity"] = float((~said_pos)[~is_pos].mean()) if (~is_pos).any() else None
    out["ece"] = expected_calibration_error(pred == y_true, proba.max(axis=1))
    out["ppv"] = float(is_pos[said_pos].mean()) if said_pos.any() else None
    out["npv"] = float((~is_pos)[~said_pos].mean()) if (~said_pos).any() else None
    if k == 2:
        out["brier"] = float(np.mean((proba[:, pos] - is_pos) ** 2))
    else:
        out["brier"] = float(np.mean(np.sum((proba - np.eye(k)[y_true]) ** 2, axis=1)))
    out["threshold"] = float(threshold)
    return out


def label_proba(proba: np.ndarray, j: int) -> np.ndarray:
    """Label ``j`` of multi-label probabilities ``(n, L)`` as a binary ``(n, 2)`` array
    ``[1 - p, p]``, so every binary tool (metrics, temperature, threshold, bootstrap)
    works label by label."""
    p = np.asarray(proba, dtype=float)[:, j]
    return np.column_stack([1.0 - p, p])


def multilabel_metrics(
    y_true: np.ndarray, proba: np.ndarray, thresholds: Sequence[float] | float = 0.5,
    labels: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Metrics of a multi-label task: 0/1 truth ``(n, L)``, probabilities ``(n, L)``.

    ``per_label`` maps each label to the binary metrics of
    :func:`classification_metrics` at its own threshold, plus ``prevalence`` and
    ``positives``. Overall: ``roc_auc`` / ``pr_auc`` are the **macro** means over the
    labels that have both outcomes (also as ``roc_auc_macro`` / ``pr_auc_macro``);
    ``roc_auc_micro`` / ``pr_auc_micro`` pool every (row, label) pair; ``accuracy`` is the
    label-wise accuracy (1 - Hamming loss), ``subset_accuracy`` the share of rows with
    every label right; ``sensitivity`` / ``specificity`` / ``brier`` / ``ece`` are macro
    means; ``f1_macro`` / ``f1_micro`` at the thresholds.
    """
    y = np.asarray(y_true, dtype=int)
    p = np.asarray(proba, dtype=float)
    n, k = p.shape
    names = list(labels) if labels is not None else [str(j) for j in range(k)]
    t = np.broadcast_to(np.asarray(thresholds, dtype=float), (k,))
    pred = (p >= t).astype(int)
    per_label: dict[str, Any] = {}
    for j, name in enumerate(names):
        m = classification_metrics(y[:, j], label_proba(p, j), threshold=float(t[j]))
        per_label[name] = {**m, "positives": int(y[:, j].sum()),
                           "prevalence": float(y[:, j].mean()) if n else None}

    def macro(key: str) -> float | None:
        values = [v[key] for v in per_label.values() if v.get(key) is not None]
        return float(np.mean(values)) if values else None

    both = 0 < y.sum() < y.size
    out: dict[str, Any] = {
        "n": n,
        "n_labels": k,
        "accuracy": float((pred == y).mean()) if n else None,
        "subset_accuracy": float((pred == y).all(axis=1).mean()) if n else None,
        "roc_auc": macro("roc_auc"),
        "pr_auc": macro("pr_auc"),
        "roc_auc_macro": macro("roc_auc"),
        "pr_auc_macro": macro("pr_auc"),
        "roc_auc_micro": float(skm.roc_auc_score(y.ravel(), p.ravel())) if both else None,
        "pr_auc_micro": float(skm.average_precision_score(y.ravel(), p.ravel()))
        if both else None,
        "f1_macro": float(skm.f1_score(y, pred, average="macro", zero_division=0)) if n else None,
        "f1_micro": float(skm.f1_score(y, pred, average="micro", zero_division=0)) if n else None,
        "sensitivity": macro("sensitivity"),
        "specificity": macro("specificity"),
        "brier": macro("brier"),
        "ece": macro("ece"),
        "thresholds": {name: float(t[j]) for j, name in enumerate(names)},
        "per_label": per_label,
    }
    return out


def summarize_folds(folds: list[dict[str, Any]]) -> dict[str, Any]:
    """``{"folds": [...], "mean": {...}, "std": {...}}`` over the numeric keys of each fold."""
    keys: list[str] = []
    for fold in folds:
        for k, v in fold.items():
            numeric = isinstance(v, int | float) and not isinstance(v, bool)
            if numeric and k != "fold" and k not in keys:
                keys.append(k)
    mean, std = {}, {}
    for key in keys:
        values = np.array([f[key] for f in folds if f.get(key) is not None], dtype=float)
        mean[key] = float(values.mean()) if len(values) else None
        std[key] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
    return {"folds": folds, "mean": mean, "std": std}
