"""The run report's figures as PNG bytes: learning curves, confusion, ROC / PR, reliability.

matplotlib without pyplot: figures are :class:`matplotlib.figure.Figure` objects drawn by
the Agg canvas, so no global state is touched. :func:`new_figure` and :func:`to_png` are
shared with the data report's plots (:mod:`medfuse.evaluation.report.data`).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from medfuse.evaluation.report.formatting import fmt, mpl
from medfuse.scoring.metrics import expected_calibration_error

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "COLORS",
    "DPI",
    "confusion_counts",
    "new_figure",
    "plot_confusion",
    "plot_learning_curves",
    "plot_reliability",
    "plot_roc_pr",
    "to_png",
]

DPI = 110
#: Okabe-Ito palette (colour-blind safe).
COLORS = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000")


def new_figure(width: float = 6.0, height: float = 4.0) -> Figure:
    """A figure of ``width`` x ``height`` inches at :data:`DPI`, constrained layout."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def to_png(fig: Figure) -> bytes:
    """The figure as PNG bytes (no ``Software`` metadata, so the bytes are reproducible)."""
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
    fig = new_figure(9.0 if len(panels) == 2 else 6.0, 4.0)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (cols, label) in zip(axes, panels, strict=True):
        for i, col in enumerate(cols):
            series = per[col].dropna()
            ax.plot(series.index, series.to_numpy(), marker="o", ms=3,
                    color=COLORS[i % len(COLORS)], label=mpl(col))
        ax.set_xlabel(x_name or "row")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_title("Loss per epoch" if losses else "Scores per epoch")
    if len(panels) == 2:
        axes[1].set_title("Validation scores per epoch")
    return to_png(fig)


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
    fig = new_figure(size + 1.0, size)
    ax = fig.subplots()
    image = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
    small = 9 if k <= 6 else 7
    for i in range(k):
        for j in range(k):
            color = "white" if share[i, j] > 0.55 else "black"
            ax.text(j, i, f"{counts[i, j]}\n{100 * share[i, j]:.1f}%", ha="center",
                    va="center", color=color, fontsize=small)
    names = [mpl(c) for c in classes]
    ax.set_xticks(range(k), names, rotation=45 if k > 3 else 0, ha="right" if k > 3 else "center")
    ax.set_yticks(range(k), names)
    ax.set_xlabel("Predicted class")
    ax.set_ylabel("True class")
    ax.set_title("Confusion matrix (counts, row %)")
    fig.colorbar(image, ax=ax, label="share of true class")
    return to_png(fig)


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
    fig = new_figure(9.0, 4.0)
    ax_roc, ax_pr = fig.subplots(1, 2)
    ax_roc.set_title("ROC curve")
    ax_pr.set_title("Precision-recall curve")
    if len(np.unique(y)) < 2:
        for ax in (ax_roc, ax_pr):
            _message(ax, "needs both classes in the test rows")
        return to_png(fig)
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
    return to_png(fig)


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
    fig = new_figure(6.0, 5.2)
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
    return to_png(fig)


def plot_roc_pr_per_label(y_true: np.ndarray, proba: np.ndarray, labels: Sequence[str]) -> bytes:
    """One ROC and one precision-recall curve per label of a multi-label task, side by side.

    ``y_true`` and ``proba`` are ``(n, L)``: 0/1 truth and each label's probability. The
    legends give each label's ROC AUC / average precision; a label with one outcome only
    among the rows is listed as "one class: no curve".
    """
    from matplotlib import colormaps
    from sklearn import metrics as skm

    y = np.asarray(y_true, dtype=int)
    p = np.asarray(proba, dtype=float)
    fig = new_figure(11.0, 5.0)
    ax_roc, ax_pr = fig.subplots(1, 2)
    ax_roc.set_title("ROC curve per label")
    ax_pr.set_title("Precision-recall curve per label")
    cmap = colormaps["tab10" if len(labels) <= 10 else "tab20"]
    for j, name in enumerate(labels):
        color = cmap(j % cmap.N)
        if len(np.unique(y[:, j])) < 2:
            ax_roc.plot([], [], color=color, label=f"{name}: one class, no curve")
            continue
        fpr, tpr, _ = skm.roc_curve(y[:, j], p[:, j])
        ax_roc.plot(fpr, tpr, color=color, lw=1.5,
                    label=f"{name} ({fmt(skm.roc_auc_score(y[:, j], p[:, j]))})")
        precision, recall, _ = skm.precision_recall_curve(y[:, j], p[:, j])
        ax_pr.step(recall, precision, where="post", color=color, lw=1.5,
                   label=f"{name} ({fmt(skm.average_precision_score(y[:, j], p[:, j]))})")
    ax_roc.plot([0, 1], [0, 1], ls="--", color="grey", label="chance (0.5000)")
    ax_roc.set_xlabel("False positive rate (1 - specificity)")
    ax_roc.set_ylabel("True positive rate (sensitivity)")
    ax_pr.set_xlabel("Recall (sensitivity)")
    ax_pr.set_ylabel("Precision (PPV)")
    for ax in (ax_roc, ax_pr):
        ax.set_xlim(-0.01, 1.01)
        ax.set_ylim(-0.01, 1.01)
        ax.set_aspect("equal")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right" if ax is ax_roc else "lower left", fontsize=7)
    return to_png(fig)
