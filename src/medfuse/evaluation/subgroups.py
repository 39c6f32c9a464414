"""Metrics per subgroup (levels of categorical columns, quantile bins of continuous ones).

:func:`subgroup_metrics` gives the metrics of every subgroup, flagging those that do clearly
worse than the whole set.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray

from medfuse.errors import DataError, check_option
from medfuse.evaluation.kernels import quiet_metrics
from medfuse.scoring.checks import (
    FloatArray,
    as_labels,
    as_proba,
    check_int,
    check_positive,
    check_unit,
    is_number,
    number_error,
)

__all__ = ["COLUMN_KINDS", "MISSING_LEVEL", "subgroup_metrics"]

COLUMN_KINDS: tuple[str, ...] = ("categorical", "continuous")
MISSING_LEVEL = "(missing)"


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

    overall = quiet_metrics(y, p, positive=pos, threshold=threshold)
    rows: list[dict[str, Any]] = []
    for column, kind in columns.items():
        for level, mask in _levels(frame[column].reset_index(drop=True), kind, bins):
            n = int(mask.sum())
            if n == 0:
                continue
            m = quiet_metrics(y[mask], p[mask], positive=pos, threshold=threshold)
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
