"""Data report (EDA) and a self-contained HTML report for a run directory.

:func:`data_report` summarises a table against its :class:`~medfuse.config.DataSpec`
(class balance, missing values, positive rate per category, continuous columns per
class, text lengths) as a JSON-able dict. The ``plot_*`` functions render PNG bytes
with matplotlib (no pyplot: figures are :class:`matplotlib.figure.Figure` objects
drawn by the Agg canvas, so no global state is touched). :func:`build_report` turns a
run directory into one HTML file with every image embedded as a base64 data URI:
no external assets, no JavaScript.

>>> import pandas as pd
>>> from medfuse.config import DataSpec
>>> df = pd.DataFrame({"sex": ["F", "M", "M", None], "label": ["a", "b", "b", "a"]})
>>> rep = data_report(df, DataSpec(tabular={"sex": "categorical"}))
>>> rep["class_balance"], rep["missing"]
({'a': 2, 'b': 2}, {'label': 0, 'sex': 1})
>>> [(r["level"], r["positive_rate"]) for r in rep["positive_rate_by_category"]["sex"]]
[('F', 0.0), ('M', 1.0), ('(missing)', 0.0)]
>>> fmt(0.123456), fmt(12), fmt(None)
('0.1235', '12', 'n/a')
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import numbers
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import yaml

from medfuse.config import DataSpec, RunConfig
from medfuse.data.validation import as_category_strings
from medfuse.io import RunDirError, atomic_write_bytes, atomic_write_text
from medfuse.scoring.metrics import expected_calibration_error

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "build_report",
    "data_report",
    "fmt",
    "plot_confusion",
    "plot_data_report",
    "plot_learning_curves",
    "plot_reliability",
    "plot_roc_pr",
]

MISSING_LEVEL = "(missing)"
DPI = 110
#: Okabe-Ito palette (colour-blind safe).
COLORS = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000")
#: Per-column plots in the data report are capped (the tables hold every column).
MAX_COLUMN_PLOTS = 12
#: Rows shown per table of category levels (the JSON holds them all).
MAX_LEVEL_ROWS = 30
#: Levels drawn per positive-rate bar chart (the most frequent ones).
MAX_LEVEL_BARS = 20
#: Bins of the reliability diagram; 15 like the ``ece`` of ``metrics.json``.
REPORT_ECE_BINS = 15

HEADLINE_METRICS: dict[str, str] = {
    "n": "Test rows",
    "accuracy": "Accuracy",
    "balanced_accuracy": "Balanced accuracy",
    "precision_macro": "Precision (macro)",
    "recall_macro": "Recall (macro)",
    "f1_macro": "F1 (macro)",
    "roc_auc": "ROC AUC",
    "pr_auc": "PR AUC (average precision)",
    "sensitivity": "Sensitivity",
    "specificity": "Specificity",
    "ppv": "PPV (precision of the positive class)",
    "npv": "NPV",
    "brier": "Brier score",
    "ece": "Expected calibration error",
    "threshold": "Decision threshold",
}
RUN_NUMBERS: dict[str, str] = {
    "train_seconds": "Training time (s)",
    "peak_rss_mb": "Peak memory (MB)",
    "epochs": "Epochs",
}
CARD_METRICS = ("accuracy", "balanced_accuracy", "roc_auc", "pr_auc", "sensitivity",
                "specificity", "ece")
ABLATION_METRICS = ("accuracy", "balanced_accuracy", "roc_auc", "pr_auc", "f1_macro",
                    "sensitivity", "specificity", "brier", "ece")
SUBGROUP_COLUMNS = ("column", "level", "n", "positives", "accuracy", "roc_auc", "sensitivity",
                    "specificity", "flagged")
SECTIONS: dict[str, str] = {
    "summary": "Summary",
    "data": "Data",
    "training": "Training",
    "performance": "Performance",
    "calibration": "Calibration",
    "subgroups": "Subgroups",
    "ablation": "Ablation",
    "modality-subsets": "Missing modalities",
    "model-card": "Model card",
}
NOT_AVAILABLE = "not available for this run"


# ------------------------------------------------------------------------- formatting


def fmt(x: object) -> str:
    """Format one value for the report: the single number formatter.

    Parameters
    ----------
    x
        A number, ``None``, a bool or anything else.

    Returns
    -------
    str
        Floats with exactly 4 decimals (``0.1235``), integers as integers, ``n/a`` for
        ``None`` / NaN / infinity, ``yes`` / ``no`` for bools, ``str(x)`` otherwise
        (not HTML-escaped: escape when inserting into HTML).
    """
    if x is None:
        return "n/a"
    if isinstance(x, bool | np.bool_):
        return "yes" if x else "no"
    if isinstance(x, numbers.Integral):
        return str(int(x))
    if isinstance(x, numbers.Real):
        value = float(x)
        return f"{value:.4f}" if math.isfinite(value) else "n/a"
    return str(x)


def _esc(x: object) -> str:
    """HTML-escaped :func:`fmt` of ``x`` (quotes included, so safe in attributes too)."""
    return html.escape(fmt(x), quote=True)


def _ci(ci: object) -> str:
    """``[lo, hi]`` of a 95 % CI pair, or ``—`` when there is none."""
    if isinstance(ci, Sequence) and not isinstance(ci, str) and len(ci) == 2:
        return f"[{_esc(ci[0])}, {_esc(ci[1])}]"
    return "—"


def _mpl(text: object) -> str:
    """A user string safe for matplotlib (a ``$`` would start mathtext)."""
    return str(text).replace("$", r"\$")


def _jsonable(value: float) -> float | None:
    """A float for JSON: NaN / infinity become ``None``."""
    value = float(value)
    return value if math.isfinite(value) else None


# ------------------------------------------------------------------------- data report


def _positive_label(labels: Iterable[str], spec: DataSpec) -> str | None:
    if spec.positive is not None:
        return spec.positive
    ordered = sorted(labels)
    return ordered[-1] if ordered else None


def _describe_numbers(values: pd.Series) -> dict[str, Any]:
    arr = values.to_numpy(dtype=float)
    arr = arr[np.isfinite(arr)]
    if not len(arr):
        return {"n": 0, "mean": None, "std": None, "median": None, "q1": None, "q3": None,
                "min": None, "max": None}
    q1, median, q3 = np.percentile(arr, [25, 50, 75])
    return {
        "n": len(arr),
        "mean": _jsonable(arr.mean()),
        "std": _jsonable(arr.std(ddof=1)) if len(arr) > 1 else None,
        "median": _jsonable(median),
        "q1": _jsonable(q1),
        "q3": _jsonable(q3),
        "min": _jsonable(arr.min()),
        "max": _jsonable(arr.max()),
    }


def _missing_count(values: pd.Series) -> int:
    missing = values.isna()
    if values.dtype == object or pd.api.types.is_string_dtype(values):
        missing |= values.astype(str).str.strip().eq("") & values.notna()
    return int(missing.sum())


def data_report(
    df: pd.DataFrame, spec: DataSpec, duplicates: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Exploratory summary of a table against its data spec (JSON-able).

    Parameters
    ----------
    df
        The table (one row per case) holding every column ``spec`` names.
    spec
        Which columns are target, tabular (categorical / continuous), text, etc.
    duplicates
        Optional near-duplicate image summary passed through as is, e.g.
        ``{"groups": 909, "duplicate_groups": 626, "images_in_duplicate_groups": 2717,
        "hash_distance": 6}``.

    Returns
    -------
    dict
        ``n_rows``; ``target`` and ``positive`` (``spec.positive`` or the last label in
        sorted order); ``class_balance`` ``{label: count}``; ``missing`` ``{column:
        count}`` for every spec column (NaN or blank text); ``positive_rate_by_category``
        ``{column: [{"level", "n", "positive_rate"}]}`` per categorical column (levels
        sorted, missing values as ``"(missing)"`` last); ``continuous_by_class``
        ``{column: {label: {"n", "mean", "std", "median", "q1", "q3", "min", "max"}}}``;
        ``text_length`` ``{label: {"median_words", "mean_words"}}`` when ``spec.text``
        (``None`` otherwise); ``duplicates``. Rows with a missing target count only in
        ``n_rows`` and ``missing``.

    Raises
    ------
    DataError
        When a column of the spec is not in ``df``.
    """
    from medfuse.errors import DataError

    absent = [c for c in spec.columns().values() if c not in df.columns]
    if absent:
        raise DataError(
            f"data_report: column(s) {absent} of the data spec are not in the table; "
            f"columns present: {list(map(str, df.columns))}"
        )
    target = as_category_strings(df[spec.target])
    labelled = target.notna()
    labels = target[labelled].astype(str)
    classes = sorted(labels.unique().tolist())
    positive = _positive_label(classes, spec)
    is_pos = labels == positive

    columns = list(dict.fromkeys(spec.columns().values()))
    report: dict[str, Any] = {
        "n_rows": len(df),
        "target": spec.target,
        "positive": positive,
        "class_balance": {c: int((labels == c).sum()) for c in classes},
        "missing": {c: _missing_count(df[c]) for c in columns},
    }

    by_category: dict[str, list[dict[str, Any]]] = {}
    for col in spec.categorical:
        levels = as_category_strings(df[col])[labelled].fillna(MISSING_LEVEL)
        rows = []
        names = sorted(set(levels.tolist()) - {MISSING_LEVEL})
        if (levels == MISSING_LEVEL).any():
            names.append(MISSING_LEVEL)
        for level in names:
            sel = (levels == level).to_numpy()
            rows.append({"level": level, "n": int(sel.sum()),
                         "positive_rate": float(is_pos.to_numpy()[sel].mean())})
        by_category[col] = rows
    report["positive_rate_by_category"] = by_category

    by_class: dict[str, dict[str, dict[str, Any]]] = {}
    for col in spec.continuous:
        values = pd.to_numeric(df[col], errors="coerce")[labelled]
        by_class[col] = {c: _describe_numbers(values[(labels == c).to_numpy()])
                         for c in classes}
    report["continuous_by_class"] = by_class

    text_length: dict[str, dict[str, float | None]] | None = None
    if spec.text:
        texts = df[spec.text][labelled]
        present = texts.notna().to_numpy()
        words = np.array([len(t.split()) for t in texts[present].astype(str)], dtype=float)
        text_length = {}
        for c in classes:
            w = words[(labels == c).to_numpy()[present]]
            text_length[c] = {
                "median_words": _jsonable(np.median(w)) if len(w) else None,
                "mean_words": _jsonable(w.mean()) if len(w) else None,
            }
    report["text_length"] = text_length
    report["duplicates"] = dict(duplicates) if duplicates is not None else None
    return report


# ------------------------------------------------------------------------------ plots


def _figure(width: float = 6.0, height: float = 4.0) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return buf.getvalue()


def _message(ax: Axes, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, wrap=True)
    ax.set_xticks([])
    ax.set_yticks([])


def plot_learning_curves(log_csv: Path) -> bytes | None:
    """Loss curves and validation scores per epoch from Lightning's ``CSVLogger`` file.

    Parameters
    ----------
    log_csv
        ``logs/metrics.csv``: columns ``epoch``, ``step`` and metrics such as
        ``train_loss``, ``val_loss``, ``val_acc``, ``val_auc`` (train and validation values
        on separate rows of the same epoch).

    Returns
    -------
    bytes or None
        A PNG with losses (left) and other ``train_`` / ``val_`` scores (right) per epoch;
        ``None`` when the file is missing, empty, unreadable or has no such column.
    """
    log_csv = Path(log_csv)
    if not log_csv.is_file():
        return None
    try:
        raw = pd.read_csv(log_csv)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError, OSError):
        return None
    if raw.empty:
        return None
    numeric = raw.apply(pd.to_numeric, errors="coerce")
    x_name = next((c for c in ("epoch", "step") if c in numeric.columns), None)
    per = numeric.groupby(x_name).mean() if x_name else numeric
    per = per.drop(columns=[c for c in ("epoch", "step") if c in per.columns])
    filled = [str(c) for c in per.columns if per[c].notna().any()]
    losses = [c for c in filled if "loss" in c]
    scores = [c for c in filled if c not in losses and c.startswith(("train_", "val_", "test_"))]
    if not losses and not scores:
        return None
    panels = [(cols, label) for cols, label in ((losses, "loss"), (scores, "score")) if cols]
    fig = _figure(9.0 if len(panels) == 2 else 6.0, 4.0)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (cols, label) in zip(axes, panels, strict=True):
        for i, col in enumerate(cols):
            series = per[col].dropna()
            ax.plot(series.index, series.to_numpy(), marker="o", ms=3,
                    color=COLORS[i % len(COLORS)], label=_mpl(col))
        ax.set_xlabel(x_name or "row")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_title("Loss per epoch" if losses else "Scores per epoch")
    if len(panels) == 2:
        axes[1].set_title("Validation scores per epoch")
    return _png(fig)


def plot_confusion(
    y_true_labels: Sequence[Any] | np.ndarray,
    y_pred_labels: Sequence[Any] | np.ndarray,
    classes: Sequence[str],
) -> bytes:
    """Confusion matrix heatmap: counts and row-normalised percentages.

    Parameters
    ----------
    y_true_labels, y_pred_labels
        True and predicted class labels (compared as strings); labels outside
        ``classes`` are ignored.
    classes
        Class labels in display order.

    Returns
    -------
    bytes
        A PNG; the colour is the row share (recall of each true class).
    """
    counts = confusion_counts(y_true_labels, y_pred_labels, classes)
    totals = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)
    k = len(classes)
    size = max(4.5, 0.7 * k + 2.5)
    fig = _figure(size + 1.0, size)
    ax = fig.subplots()
    image = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
    small = 9 if k <= 6 else 7
    for i in range(k):
        for j in range(k):
            color = "white" if share[i, j] > 0.55 else "black"
            ax.text(j, i, f"{counts[i, j]}\n{100 * share[i, j]:.1f}%", ha="center",
                    va="center", color=color, fontsize=small)
    names = [_mpl(c) for c in classes]
    ax.set_xticks(range(k), names, rotation=45 if k > 3 else 0, ha="right" if k > 3 else "center")
    ax.set_yticks(range(k), names)
    ax.set_xlabel("Predicted class")
    ax.set_ylabel("True class")
    ax.set_title("Confusion matrix (counts, row %)")
    fig.colorbar(image, ax=ax, label="share of true class")
    return _png(fig)


def confusion_counts(
    y_true_labels: Sequence[Any] | np.ndarray,
    y_pred_labels: Sequence[Any] | np.ndarray,
    classes: Sequence[str],
) -> np.ndarray:
    """Counts ``(k, k)``: rows true class, columns predicted class (labels as strings)."""
    index = {str(c): i for i, c in enumerate(classes)}
    counts = np.zeros((len(classes), len(classes)), dtype=int)
    for t, p in zip(y_true_labels, y_pred_labels, strict=True):
        i, j = index.get(str(t)), index.get(str(p))
        if i is not None and j is not None:
            counts[i, j] += 1
    return counts


def plot_roc_pr(y_true01: Sequence[Any] | np.ndarray, score: Sequence[Any] | np.ndarray) -> bytes:
    """ROC and precision-recall curves side by side, AUCs in the legends.

    Parameters
    ----------
    y_true01
        1 for the positive class, 0 otherwise.
    score
        Predicted probability (or any score) of the positive class.

    Returns
    -------
    bytes
        A PNG. The chance lines are the diagonal (ROC) and the prevalence (PR); with a
        single class present both panels say the curves cannot be drawn.
    """
    from sklearn import metrics as skm

    y = np.asarray(y_true01, dtype=int)
    s = np.asarray(score, dtype=float)
    fig = _figure(9.0, 4.0)
    ax_roc, ax_pr = fig.subplots(1, 2)
    ax_roc.set_title("ROC curve")
    ax_pr.set_title("Precision-recall curve")
    if len(np.unique(y)) < 2:
        for ax in (ax_roc, ax_pr):
            _message(ax, "needs both classes in the test rows")
        return _png(fig)
    fpr, tpr, _ = skm.roc_curve(y, s)
    auc = skm.roc_auc_score(y, s)
    ax_roc.plot(fpr, tpr, color=COLORS[0], lw=2, label=f"model (AUC = {fmt(auc)})")
    ax_roc.plot([0, 1], [0, 1], ls="--", color="grey", label="chance (AUC = 0.5000)")
    ax_roc.set_xlabel("False positive rate (1 - specificity)")
    ax_roc.set_ylabel("True positive rate (sensitivity)")
    precision, recall, _ = skm.precision_recall_curve(y, s)
    ap = skm.average_precision_score(y, s)
    prevalence = float(y.mean())
    ax_pr.step(recall, precision, where="post", color=COLORS[1], lw=2,
               label=f"model (AP = {fmt(ap)})")
    ax_pr.axhline(prevalence, ls="--", color="grey",
                  label=f"chance (= prevalence {fmt(prevalence)})")
    ax_pr.set_xlabel("Recall (sensitivity)")
    ax_pr.set_ylabel("Precision (PPV)")
    for ax in (ax_roc, ax_pr):
        ax.set_xlim(-0.01, 1.01)
        ax.set_ylim(-0.01, 1.01)
        ax.set_aspect("equal")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right" if ax is ax_roc else "lower left", fontsize=8)
    return _png(fig)


def _reliability_bins(y: np.ndarray, s: np.ndarray, bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean score and observed frequency of each non-empty equal-width bin."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    idx = np.clip(np.digitize(s, edges[1:-1]), 0, bins - 1)
    mean_s, freq = [], []
    for b in range(bins):
        sel = idx == b
        if sel.any():
            mean_s.append(s[sel].mean())
            freq.append(y[sel].mean())
    return np.asarray(mean_s), np.asarray(freq)


def plot_reliability(
    y_true01: Sequence[Any] | np.ndarray,
    score_before: Sequence[Any] | np.ndarray,
    score_after: Sequence[Any] | np.ndarray | None = None,
    bins: int = 10,
    y_true01_after: Sequence[Any] | np.ndarray | None = None,
) -> bytes:
    """Reliability diagram before (and optionally after) calibration, with a histogram.

    Parameters
    ----------
    y_true01
        Observed outcome (1 / 0) that ``score_before`` predicts the probability of, e.g.
        ``true class == positive`` or, for top-label calibration, ``prediction correct``.
    score_before
        Predicted probabilities (before calibration, or the only ones).
    score_after
        Predicted probabilities after calibration, if any.
    bins
        Equal-width bins on [0, 1], for the curve and for the ECE.
    y_true01_after
        Outcomes for ``score_after`` when they differ from ``y_true01`` (e.g. top-label
        correctness after a calibration that changed some predictions).

    Returns
    -------
    bytes
        A PNG: observed frequency against mean predicted probability per bin (the
        diagonal is perfect calibration) with the ECE of each curve in the legend, and
        a histogram of the predicted probabilities below.
    """
    from matplotlib.gridspec import GridSpec

    y = np.asarray(y_true01, dtype=float)
    curves = [("before calibration" if score_after is not None else "model",
               y, np.asarray(score_before, dtype=float), COLORS[3])]
    if score_after is not None:
        y_after = y if y_true01_after is None else np.asarray(y_true01_after, dtype=float)
        curves.append(("after calibration", y_after, np.asarray(score_after, dtype=float),
                       COLORS[0]))
    fig = _figure(6.0, 5.2)
    grid = GridSpec(2, 1, figure=fig, height_ratios=[3, 1])
    ax = fig.add_subplot(grid[0])
    hist = fig.add_subplot(grid[1], sharex=ax)
    ax.plot([0, 1], [0, 1], ls="--", color="grey", label="perfect calibration")
    edges = np.linspace(0.0, 1.0, bins + 1)
    for name, yy, s, color in curves:
        ece = expected_calibration_error(yy, s, bins=bins)
        mean_s, freq = _reliability_bins(yy, s, bins)
        ax.plot(mean_s, freq, marker="o", color=color, label=f"{name} (ECE = {fmt(ece)})")
        hist.hist(s, bins=edges.tolist(), color=color, alpha=0.45, label=name)
    ax.set_xlim(0.0, 1.0)
    ax.set_ylim(0.0, 1.0)
    ax.set_ylabel("Observed frequency")
    ax.set_title(f"Reliability diagram ({bins} bins)")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    hist.set_xlabel("Predicted probability")
    hist.set_ylabel("Count")
    return _png(fig)


def plot_data_report(report: Mapping[str, Any]) -> list[tuple[str, bytes]]:
    """Plots of a :func:`data_report`: class balance, positive rates, continuous columns.

    Parameters
    ----------
    report
        The output of :func:`data_report` (or its JSON).

    Returns
    -------
    list of (str, bytes)
        ``(title, png)``: a class balance bar chart, one bar chart of the positive rate
        per level for each categorical column (the 20 most frequent levels) and one box
        plot by class for each continuous column (box: quartiles; whiskers: min-max), at
        most 12 of each.
    """
    plots: list[tuple[str, bytes]] = []
    balance: Mapping[str, int] = report.get("class_balance") or {}
    if balance:
        fig = _figure()
        ax = fig.subplots()
        names = list(balance)
        counts = [int(balance[c]) for c in names]
        bars = ax.bar([_mpl(c) for c in names], counts,
                      color=[COLORS[i % len(COLORS)] for i in range(len(names))])
        ax.bar_label(bars, labels=[str(c) for c in counts], fontsize=8)
        ax.set_xlabel("Class")
        ax.set_ylabel("Rows")
        ax.set_title("Class balance")
        if len(names) > 4:
            ax.tick_params(axis="x", labelrotation=45)
        plots.append(("Class balance", _png(fig)))

    positive = report.get("positive")
    total = sum(int(v) for v in balance.values())
    overall = balance.get(positive, 0) / total if positive is not None and total else None
    by_category: Mapping[str, list[dict[str, Any]]] = (
        report.get("positive_rate_by_category") or {})
    for col, rows in list(by_category.items())[:MAX_COLUMN_PLOTS]:
        if not rows:
            continue
        shown = sorted(rows, key=lambda r: -int(r["n"]))[:MAX_LEVEL_BARS][::-1]
        fig = _figure(6.0, max(3.0, min(8.0, 1.2 + 0.3 * len(shown))))
        ax = fig.subplots()
        rates = [float(r["positive_rate"]) for r in shown]
        bars = ax.barh([_mpl(r["level"]) for r in shown], rates, color=COLORS[0])
        ax.bar_label(bars, labels=[f"n={r['n']}" for r in shown], fontsize=7, padding=2)
        if overall is not None:
            ax.axvline(overall, ls="--", color=COLORS[3], label=f"overall {overall:.1%}")
            ax.legend(fontsize=8, loc="lower right")
        ax.set_xlim(0.0, 1.15)
        ax.set_xlabel(f"Share of positive class ({_mpl(positive)})")
        ax.set_ylabel(_mpl(col))
        title = f"Positive rate by {col}"
        ax.set_title(_mpl(title))
        plots.append((title, _png(fig)))

    by_class: Mapping[str, Mapping[str, Mapping[str, Any]]] = (
        report.get("continuous_by_class") or {})
    for col, per_class in list(by_class.items())[:MAX_COLUMN_PLOTS]:
        stats = [
            {"label": _mpl(label), "med": s["median"], "q1": s["q1"], "q3": s["q3"],
             "whislo": s["min"], "whishi": s["max"], "fliers": []}
            for label, s in per_class.items() if s.get("n") and s.get("median") is not None
        ]
        if not stats:
            continue
        fig = _figure()
        ax = fig.subplots()
        boxes = ax.bxp(stats, patch_artist=True, showfliers=False)
        for i, patch in enumerate(boxes["boxes"]):
            patch.set_facecolor(COLORS[i % len(COLORS)])
            patch.set_alpha(0.6)
        ax.set_xlabel("Class")
        ax.set_ylabel(_mpl(col))
        title = f"{col} by class"
        ax.set_title(_mpl(title) + " (box: quartiles, whiskers: min-max)", fontsize=10)
        ax.grid(axis="y", alpha=0.3)
        plots.append((title, _png(fig)))
    return plots


# ------------------------------------------------------------------------ HTML pieces

_STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;
 max-width:1100px;margin:0 auto;padding:0 1.5rem 3rem;color:#1b1b1b;line-height:1.45}
header{border-bottom:3px solid #0072B2;margin-bottom:1rem}
nav a{margin-right:.9rem;color:#0072B2}
h2{border-bottom:1px solid #c8d1da;padding-bottom:.2rem;margin-top:2.4rem}
h3{margin-bottom:.3rem}
table{border-collapse:collapse;margin:.5rem 0 1.2rem;font-size:.9rem}
th,td{border:1px solid #d0d7de;padding:.25rem .6rem;text-align:left;vertical-align:top}
th{background:#eef3f8}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
tr.flagged td{background:#fbe3d2;font-weight:600}
tr.best td{background:#e4f1fa}
.note{color:#555;font-style:italic}
figure{display:inline-block;margin:.6rem 1rem .6rem 0;vertical-align:top}
figure img{max-width:100%;height:auto;border:1px solid #e2e2e2}
figcaption{font-size:.85rem;color:#444;max-width:640px}
pre{background:#f6f8fa;padding:.6rem;overflow:auto;font-size:.8rem}
dl.card dt{font-weight:600;margin-top:.6rem}
dl.card dd{margin-left:1.2rem}
"""


def _note(text: str) -> str:
    return f'<p class="note">{html.escape(text)}</p>'


def _num(x: object) -> str:
    return f'<td class="num">{_esc(x)}</td>'


def _text(x: object) -> str:
    return f"<td>{html.escape(str(x))}</td>"


def _table(header: Sequence[str] | None, rows: Iterable[str]) -> str:
    head = ""
    if header is not None:
        cells = "".join(f"<th>{html.escape(h)}</th>" for h in header)
        head = f"<thead><tr>{cells}</tr></thead>"
    body = "\n".join(rows)
    return f"<table>{head}<tbody>\n{body}\n</tbody></table>"


def _flat(value: object) -> str:
    """A value for a key/value table: dicts as ``k=v`` lists, numbers through fmt."""
    if isinstance(value, Mapping):
        if not value:
            return "none"
        return ", ".join(f"{k}={_flat(v)}" for k, v in value.items())
    if isinstance(value, list | tuple):
        return ", ".join(_flat(v) for v in value)
    return fmt(value)


def _kv_table(data: Mapping[str, Any]) -> str:
    rows = []
    for key, value in data.items():
        is_number = isinstance(value, numbers.Number) and not isinstance(value, bool)
        cell = _num(value) if is_number else f"<td>{html.escape(_flat(value))}</td>"
        rows.append(f"<tr><th>{html.escape(str(key))}</th>{cell}</tr>")
    return _table(None, rows)


def _img(png: bytes, alt: str, caption: str | None = None) -> str:
    data = base64.b64encode(png).decode("ascii")
    cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">'
            f"{cap}</figure>")


def _section(sid: str, body: str) -> str:
    return f'<section id="{sid}">\n<h2>{html.escape(SECTIONS[sid])}</h2>\n{body}\n</section>'


# --------------------------------------------------------------------- run directory


def _read_json(path: Path, required: bool = False) -> tuple[Any, str | None]:
    """``(data, problem)``: data is None when absent or unreadable; problem says why."""
    if not path.is_file():
        if required:
            raise RunDirError(
                f"{path.parent} is not a complete run directory: {path.name} is missing "
                "(build_report needs metrics.json and predictions.csv)."
            )
        return None, None
    try:
        return json.loads(path.read_text()), None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        if required:
            raise RunDirError(f"{path} is not valid JSON ({e}); re-create the run.") from e
        return None, f"{path.name} could not be read ({e})"


def _read_config(path: Path) -> tuple[RunConfig | None, str | None, str | None]:
    """``(config, yaml text, problem)`` of ``config.yaml``."""
    if not path.is_file():
        return None, None, None
    text = path.read_text()
    try:
        return RunConfig.model_validate(yaml.safe_load(text)), text, None
    except Exception as e:  # any invalid or outdated config: report it, build the rest
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        return None, text, f"config.yaml could not be validated ({first})"


class _Predictions:
    """What the report needs from ``predictions.csv``."""

    def __init__(self, df: pd.DataFrame, spec: DataSpec | None) -> None:
        self.df = df
        self.classes = [str(c)[len("prob_"):] for c in df.columns if str(c).startswith("prob_")]
        if not self.classes:
            raise RunDirError("predictions.csv has no prob_<class> columns; re-create the run.")
        self.proba = df[[f"prob_{c}" for c in self.classes]].to_numpy(dtype=float)
        raw_cols = [f"raw_prob_{c}" for c in self.classes]
        self.raw_proba = (df[raw_cols].to_numpy(dtype=float)
                          if all(c in df.columns for c in raw_cols) else None)
        if spec is not None and spec.positive in self.classes:
            self.positive = str(spec.positive)
        else:
            self.positive = self.classes[-1]
        if "prediction" in df.columns:
            self.predicted = as_category_strings(df["prediction"]).fillna("").astype(str)
        else:
            self.predicted = pd.Series(np.asarray(self.classes)[self.proba.argmax(axis=1)])
        self.target_column = self._target_column(spec)
        self.truth: pd.Series | None = None
        if self.target_column is not None:
            self.truth = as_category_strings(df[self.target_column]).fillna("").astype(str)

    def _target_column(self, spec: DataSpec | None) -> str | None:
        if spec is not None:
            return spec.target if spec.target in self.df.columns else None
        known = set(self.classes)
        skip = {"prediction", "fold", "row"}
        for col in reversed(list(self.df.columns)):
            name = str(col)
            if name in skip or name.startswith(("prob_", "raw_prob_")):
                continue
            values = set(as_category_strings(self.df[col]).dropna().tolist())
            if values and values <= known:
                return name
        return None

    @property
    def labelled(self) -> np.ndarray:
        """Rows whose true class is one of the classes."""
        if self.truth is None:
            return np.zeros(len(self.df), dtype=bool)
        return self.truth.isin(self.classes).to_numpy()


class _Plots:
    """Saves PNGs under ``run/plots`` and returns their ``<figure>`` HTML."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.saved: list[Path] = []

    def add(self, name: str, png: bytes, alt: str, caption: str | None = None) -> str:
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"{name}.png"
        atomic_write_bytes(path, png)
        self.saved.append(path)
        return _img(png, alt, caption)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")[:50] or "plot"


# ---------------------------------------------------------------------------- sections


def _summary_section(metrics: Mapping[str, Any]) -> str:
    ci95: Mapping[str, Any] = metrics.get("ci95") or {}
    rows = []
    keys = [k for k in HEADLINE_METRICS if k in metrics]
    extra = [k for k, v in metrics.items() if k not in HEADLINE_METRICS
             and isinstance(v, numbers.Number) and not isinstance(v, bool)]
    for key in keys + extra:
        label = HEADLINE_METRICS.get(key) or RUN_NUMBERS.get(key) or key
        rows.append(
            f'<tr data-metric="{html.escape(key)}"><td>{html.escape(label)} '
            f"<code>{html.escape(key)}</code></td>{_num(metrics[key])}"
            f'<td class="num">{_ci(ci95.get(key))}</td></tr>'
        )
    intro = ("<p>Metrics of the held-out rows in <code>metrics.json</code>; 95 % confidence "
             "intervals where the run computed them (— otherwise).</p>")
    return _section("summary", intro + _table(["metric", "value", "95% CI"], rows))


def _data_section(metrics: Mapping[str, Any], report: Mapping[str, Any] | None,
                  problem: str | None, plots: _Plots) -> str:
    parts = []
    validation = metrics.get("data")
    if isinstance(validation, Mapping):
        parts.append("<h3>Validation of the table</h3>" + _kv_table(validation))
    split = metrics.get("split")
    if isinstance(split, Mapping):
        parts.append("<h3>Split</h3>" + _kv_table(split))
    if report is None:
        parts.append("<h3>Data report</h3>" + _note(
            f"Data report (data_report.json): {problem or NOT_AVAILABLE}."))
        return _section("data", "\n".join(parts))

    positive = report.get("positive")
    parts.append(
        f"<h3>Data report</h3><p>{_esc(report.get('n_rows'))} rows; target "
        f"<code>{html.escape(str(report.get('target', '?')))}</code>; positive class "
        f"<code>{html.escape(str(positive))}</code>.</p>"
    )
    balance: Mapping[str, Any] = report.get("class_balance") or {}
    total = sum(int(v) for v in balance.values()) or 1
    parts.append("<h4>Class balance</h4>" + _table(
        ["class", "rows", "share"],
        [f"<tr>{_text(c)}{_num(n)}{_num(int(n) / total)}</tr>" for c, n in balance.items()]))
    missing: Mapping[str, Any] = report.get("missing") or {}
    n_rows = int(report.get("n_rows") or 0) or 1
    parts.append("<h4>Missing values</h4>" + _table(
        ["column", "missing", "share"],
        [f"<tr>{_text(c)}{_num(n)}{_num(int(n) / n_rows)}</tr>" for c, n in missing.items()]))

    for col, rows in (report.get("positive_rate_by_category") or {}).items():
        shown = rows[:MAX_LEVEL_ROWS]
        table = _table(["level", "n", "positive rate"], [
            f"<tr>{_text(r['level'])}{_num(r['n'])}{_num(r['positive_rate'])}</tr>"
            for r in shown])
        more = (_note(f"{len(rows) - len(shown)} more levels in data_report.json.")
                if len(rows) > len(shown) else "")
        parts.append(f"<h4>Positive rate by <code>{html.escape(str(col))}</code></h4>"
                     + table + more)

    stat_keys = ("n", "mean", "std", "median", "q1", "q3", "min", "max")
    for col, per_class in (report.get("continuous_by_class") or {}).items():
        parts.append(f"<h4><code>{html.escape(str(col))}</code> by class</h4>" + _table(
            ["class", *stat_keys],
            ["<tr>" + _text(label) + "".join(_num(s.get(k)) for k in stat_keys) + "</tr>"
             for label, s in per_class.items()]))

    text_length = report.get("text_length")
    if text_length:
        parts.append("<h4>Text length (words)</h4>" + _table(
            ["class", "median words", "mean words"],
            [f"<tr>{_text(c)}{_num(s.get('median_words'))}{_num(s.get('mean_words'))}</tr>"
             for c, s in text_length.items()]))
    duplicates = report.get("duplicates")
    parts.append("<h4>Near-duplicate images</h4>" + (
        _kv_table(duplicates) if isinstance(duplicates, Mapping) and duplicates
        else _note(f"Duplicate check: {NOT_AVAILABLE}.")))

    figures = []
    for i, (title, png) in enumerate(plot_data_report(report)):
        figures.append(plots.add(f"data_{i:02d}_{_slug(title)}", png, title, title))
    if figures:
        parts.append("<h4>Plots</h4>" + "\n".join(figures))
    return _section("data", "\n".join(parts))


def _training_section(run: Path, metrics: Mapping[str, Any], config_text: str | None,
                      config_problem: str | None, plots: _Plots) -> str:
    parts = []
    facts = {k: metrics[k] for k in RUN_NUMBERS if metrics.get(k) is not None}
    if facts:
        parts.append(_kv_table({RUN_NUMBERS[k]: v for k, v in facts.items()}))
    png = plot_learning_curves(run / "logs" / "metrics.csv")
    if png is None:
        parts.append(_note(f"Learning curves (logs/metrics.csv): {NOT_AVAILABLE}."))
    else:
        parts.append(plots.add("learning_curves", png, "Learning curves",
                               "Loss and validation scores per epoch (logs/metrics.csv)."))
    if config_problem:
        parts.append(_note(config_problem + "."))
    if config_text is not None:
        parts.append("<details><summary>Resolved configuration (config.yaml)</summary>"
                     f"<pre>{html.escape(config_text)}</pre></details>")
    else:
        parts.append(_note(f"Configuration (config.yaml): {NOT_AVAILABLE}."))
    return _section("training", "\n".join(parts))


def _performance_section(preds: _Predictions, plots: _Plots) -> str:
    mask = preds.labelled
    if preds.truth is None or not mask.any():
        return _section("performance", _note(
            "Performance plots need the true class in predictions.csv: " + NOT_AVAILABLE + "."))
    truth = preds.truth[mask].to_numpy()
    predicted = preds.predicted[mask].to_numpy()
    counts = confusion_counts(truth, predicted, preds.classes)
    rows = [f"<tr><th>{html.escape(c)}</th>" + "".join(_num(int(v)) for v in counts[i])
            + "</tr>" for i, c in enumerate(preds.classes)]
    parts = [
        f"<p>{_esc(int(mask.sum()))} labelled rows of predictions.csv; positive class "
        f"<code>{html.escape(preds.positive)}</code>.</p>",
        "<h3>Confusion matrix</h3>",
        _table(["true \\ predicted", *preds.classes], rows),
        plots.add("confusion", plot_confusion(truth, predicted, preds.classes),
                  "Confusion matrix", "Rows: true class; columns: predicted class "
                  "(the prediction column of predictions.csv)."),
    ]
    j = preds.classes.index(preds.positive)
    y01 = (truth == preds.positive).astype(int)
    note = "" if len(preds.classes) == 2 else " (positive class against all other classes)"
    parts.append("<h3>ROC and precision-recall</h3>" + plots.add(
        "roc_pr", plot_roc_pr(y01, preds.proba[mask, j]), "ROC and precision-recall curves",
        f"Probability of {preds.positive}{note}; dashed lines: chance."))
    return _section("performance", "\n".join(parts))


def _calibration_section(metrics: Mapping[str, Any], preds: _Predictions, plots: _Plots) -> str:
    parts = []
    facts: dict[str, Any] = {}
    for key in ("ece", "brier"):
        if metrics.get(key) is not None:
            facts[key] = metrics[key]
    calibration = metrics.get("calibration")
    if isinstance(calibration, Mapping):
        facts.update({f"calibration: {k}": v for k, v in calibration.items()})
    if facts:
        parts.append(_kv_table(facts))
    mask = preds.labelled
    if preds.truth is None or not mask.any():
        parts.append(_note(f"Reliability diagram (needs true classes): {NOT_AVAILABLE}."))
        return _section("calibration", "\n".join(parts))
    truth = preds.truth[mask].to_numpy()
    classes = np.asarray(preds.classes)
    after = preds.proba[mask]
    correct_after = (classes[after.argmax(axis=1)] == truth).astype(int)
    if preds.raw_proba is not None:
        before = preds.raw_proba[mask]
        correct_before = (classes[before.argmax(axis=1)] == truth).astype(int)
        png = plot_reliability(correct_before, before.max(axis=1), after.max(axis=1),
                               bins=REPORT_ECE_BINS, y_true01_after=correct_after)
        caption = ("Top-label reliability before (raw_prob_ columns) and after calibration "
                   "(prob_ columns)")
    else:
        png = plot_reliability(correct_after, after.max(axis=1), bins=REPORT_ECE_BINS)
        caption = "Top-label reliability (no uncalibrated probabilities in predictions.csv)"
    parts.append(plots.add("reliability", png, "Reliability diagram", caption + (
        ": confidence = highest class probability, observed = share of correct predictions; "
        f"{REPORT_ECE_BINS} equal-width bins, as the ece of metrics.json.")))
    return _section("calibration", "\n".join(parts))


def _subgroups_section(rows: Any, problem: str | None) -> str:
    if not isinstance(rows, list):
        return _section("subgroups", _note(
            f"Subgroup analysis (subgroups.json): {problem or NOT_AVAILABLE}."))
    if not rows:
        return _section("subgroups", _note("subgroups.json holds no subgroup."))
    body = []
    for row in rows:
        flagged = bool(row.get("flagged"))
        cells = []
        for key in SUBGROUP_COLUMNS:
            value = row.get(key)
            if key in ("column", "level"):
                cells.append(_text("" if value is None else value))
            elif key == "flagged":
                cells.append(_text("flagged" if flagged else ""))
            else:
                cells.append(_num(value))
        cls = ' class="flagged"' if flagged else ""
        body.append(f"<tr{cls}>{''.join(cells)}</tr>")
    n_flagged = sum(bool(r.get("flagged")) for r in rows)
    intro = (f"<p>Test metrics per level of each subgroup column; {_esc(n_flagged)} of "
             f"{_esc(len(rows))} subgroups flagged by the subgroup analysis (highlighted).</p>")
    return _section("subgroups", intro + _table(list(SUBGROUP_COLUMNS), body))


def _subsets_section(subsets: Mapping[str, Any]) -> str:
    """Metrics with each subset of modalities, and per group of rows by available modalities."""
    keys = ("accuracy", "roc_auc", "pr_auc", "sensitivity", "specificity")
    parts = ["<p>This model was trained with modality dropout: it predicts rows that lack a "
             "modality from the others. Each row of the first table leaves the other "
             "modalities out of every test row (<code>modality_subsets.json</code>).</p>"]
    for title, key, first in (("modalities used", "removed", None),
                              ("modalities the rows have", "available", "n")):
        groups: Mapping[str, Mapping[str, Any]] = subsets.get(key) or {}
        cols = [c for c in (first, *keys) if c]
        rows = [f"<tr><th>{html.escape(str(name))}</th>"
                + "".join(_num(m.get(c)) for c in cols) + "</tr>"
                for name, m in groups.items()]
        if rows:
            parts.append(_table([title, *cols], rows))
    return _section("modality-subsets", "\n".join(parts))


def _ablation_section(ablation: Any) -> str:
    models: Mapping[str, Mapping[str, Any]] = ablation.get("models") or {}
    comparison: Mapping[str, Any] = ablation.get("comparison") or {}
    keys = [k for k in ABLATION_METRICS if any(k in m for m in models.values())]
    best = comparison.get("best_single")
    rows = []
    for name, m in models.items():
        ci95: Mapping[str, Any] = m.get("ci95") or {}
        cells = "".join(
            f'<td class="num">{_esc(m.get(k))}<br><small>{_ci(ci95.get(k))}</small></td>'
            for k in keys)
        cls = ' class="best"' if name == best else ""
        rows.append(f"<tr{cls}><th>{html.escape(str(name))}</th>{cells}</tr>")
    parts = [_table(["model", *keys], rows) if rows else _note("ablation.json holds no model.")]
    if best in models:
        parts.append("<p>Each cell: value and 95% CI; highlighted: the best single "
                     "modality (by ROC AUC).</p>")
    if comparison:
        delta = comparison.get("delta_roc_auc")
        sign = "+" if isinstance(delta, int | float) and delta > 0 else ""
        fused = "fused" if "fused" in models else "the fused model"
        ci = comparison.get("delta_ci95")
        test = comparison.get("test")
        sentence = (
            f"Fusion (<code>{html.escape(fused)}</code>) against the best single modality "
            f"(<code>{html.escape(str(best))}</code>): difference in ROC AUC "
            f"{sign}{_esc(delta)}" + (f" (95% CI {_ci(ci)})" if ci is not None else "")
            + f", p = {_esc(comparison.get('p_value'))}"
            + (f" ({html.escape(str(test))})" if test else "") + ".")
        if comparison.get("bootstrap_p_value") is not None:
            sentence += (" Paired bootstrap: p = "
                         f"{_esc(comparison.get('bootstrap_p_value'))}.")
        parts.append(f'<p class="comparison">{sentence}</p>')
    return _section("ablation", "\n".join(parts))


def _model_card(metrics: Mapping[str, Any], cfg: RunConfig | None, preds: _Predictions,
                subgroups: Any, report: Mapping[str, Any] | None) -> str:
    from medfuse import __version__

    spec = cfg.data if cfg is not None else None
    validation = metrics.get("data") if isinstance(metrics.get("data"), Mapping) else {}
    source: object = None
    if spec is not None:
        source = f"dataset {spec.dataset}" if spec.dataset else spec.table
    source = source or (validation or {}).get("table") or "unknown"
    rows = (validation or {}).get("rows_out")
    if rows is None and report is not None:
        rows = report.get("n_rows")
    modalities = ", ".join(spec.modalities) if spec is not None else "unknown (no config.yaml)"
    ci95: Mapping[str, Any] = metrics.get("ci95") or {}
    metric_items = "".join(
        f"<li>{html.escape(HEADLINE_METRICS[k])}: {_esc(metrics[k])} "
        f"(95% CI {_ci(ci95.get(k))})</li>" for k in CARD_METRICS if k in metrics)
    if isinstance(subgroups, list) and subgroups:
        flagged = [f"{r.get('column')}={r.get('level')}" for r in subgroups if r.get("flagged")]
        sub_text = (f"{len(flagged)} of {len(subgroups)} subgroups flagged"
                    + (": " + ", ".join(flagged) if flagged else "") + ".")
    else:
        sub_text = "no subgroup analysis for this run; performance per subgroup is unknown."
    calibration = metrics.get("calibration")
    if isinstance(calibration, Mapping):
        cal_text = (f"temperature scaling (T = {fmt(calibration.get('temperature'))}) changed "
                    f"the ECE from {fmt(calibration.get('ece_before'))} to "
                    f"{fmt(calibration.get('ece_after'))}; probabilities may still be "
                    "miscalibrated on other populations.")
    else:
        cal_text = (f"no post-hoc calibration; ECE {fmt(metrics.get('ece'))}. Treat the "
                    "probabilities as scores, not as calibrated risks.")
    generated = datetime.now(timezone.utc).isoformat(timespec="seconds")
    name = cfg.name if cfg is not None and cfg.name else "unnamed run"
    kind = f"{cfg.model.kind} model" if cfg is not None else "model"
    body = f"""<dl class="card">
<dt>Model</dt><dd>{html.escape(name)} ({html.escape(kind)}), trained with medfuse.</dd>
<dt>Intended use</dt><dd>Decision support for research only.
This is not a diagnostic device and must not be used for clinical decisions
about individual patients.</dd>
<dt>Data</dt><dd>Source: {html.escape(str(source))}; rows: {_esc(rows)};
classes: {html.escape(", ".join(preds.classes))} (positive: {html.escape(preds.positive)});
modalities used: {html.escape(modalities)}; test rows: {_esc(metrics.get("n"))}.</dd>
<dt>Metrics (held-out rows)</dt><dd><ul>{metric_items or "<li>n/a</li>"}</ul></dd>
<dt>Limitations</dt><dd><ul>
<li>Dataset-specific: measured on one dataset and split; performance on other sites,
devices or populations is unknown.</li>
<li>Subgroups: {html.escape(sub_text)}</li>
<li>Calibration: {html.escape(cal_text)}</li>
<li>No prospective validation: all results are retrospective.</li>
</ul></dd>
<dt>Generated</dt><dd>{html.escape(generated)} by medfuse {html.escape(__version__)}.</dd>
</dl>"""
    return _section("model-card", body)


# ------------------------------------------------------------------------------ build


def build_report(run: Path, out: Path | None = None) -> Path:
    """Write a self-contained HTML report of a run directory.

    Parameters
    ----------
    run
        The run directory. Required: ``metrics.json`` and ``predictions.csv``. Optional
        (their parts say "not available for this run" when absent): ``config.yaml``,
        ``logs/metrics.csv``, ``data_report.json``, ``subgroups.json`` and
        ``ablation.json`` (the ablation section appears only when it exists), and
        ``modality_subsets.json`` (models trained with modality dropout).
    out
        The HTML file to write; default ``run/report.html``.

    Returns
    -------
    Path
        The HTML file. Every plot is also saved under ``run/plots/*.png``.

    Raises
    ------
    RunDirError
        When ``metrics.json`` or ``predictions.csv`` is missing or unreadable.
    """
    run = Path(run)
    metrics, _ = _read_json(run / "metrics.json", required=True)
    if not isinstance(metrics, dict):
        raise RunDirError(f"{run / 'metrics.json'} must hold a JSON object; re-create the run.")
    pred_path = run / "predictions.csv"
    if not pred_path.is_file():
        raise RunDirError(
            f"{run} is not a complete run directory: predictions.csv is missing "
            "(build_report needs metrics.json and predictions.csv).")
    try:
        pred_df = pd.read_csv(pred_path)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as e:
        raise RunDirError(f"{pred_path} could not be read ({e}); re-create the run.") from e
    cfg, config_text, config_problem = _read_config(run / "config.yaml")
    preds = _Predictions(pred_df, cfg.data if cfg is not None else None)
    report, report_problem = _read_json(run / "data_report.json")
    if report is not None and not isinstance(report, dict):
        report, report_problem = None, "data_report.json must hold a JSON object"
    subgroups, subgroups_problem = _read_json(run / "subgroups.json")
    if isinstance(subgroups, dict) and isinstance(subgroups.get("rows"), list):
        subgroups = subgroups["rows"]
    ablation, _ = _read_json(run / "ablation.json")
    subsets, _ = _read_json(run / "modality_subsets.json")

    plots = _Plots(run / "plots")
    builders: list[Callable[[], str]] = [
        lambda: _summary_section(metrics),
        lambda: _data_section(metrics, report, report_problem, plots),
        lambda: _training_section(run, metrics, config_text, config_problem, plots),
        lambda: _performance_section(preds, plots),
        lambda: _calibration_section(metrics, preds, plots),
        lambda: _subgroups_section(subgroups, subgroups_problem),
    ]
    if isinstance(ablation, dict):
        builders.append(lambda: _ablation_section(ablation))
    if isinstance(subsets, dict):
        builders.append(lambda: _subsets_section(subsets))
    builders.append(lambda: _model_card(metrics, cfg, preds, subgroups, report))
    sections = [build() for build in builders]

    present = re.findall(r'<section id="([^"]+)">', "\n".join(sections))
    nav = " ".join(f'<a href="#{sid}">{html.escape(SECTIONS[sid])}</a>' for sid in present)
    title = f"medfuse report: {cfg.name if cfg is not None and cfg.name else run.name}"
    page = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title>
<style>{_STYLE}</style>
</head>
<body>
<header>
<h1>{html.escape(title)}</h1>
<p>Run directory <code>{html.escape(str(run))}</code></p>
<nav>{nav}</nav>
</header>
<main>
{chr(10).join(sections)}
</main>
</body>
</html>
"""
    target = Path(out) if out is not None else run / "report.html"
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(target, page)
    return target
