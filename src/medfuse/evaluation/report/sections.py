"""The sections of the run report about the run itself, each as a template context.

One function per section (summary, data, training, performance, calibration): it returns
the dict that its macro in ``templates/report_sections.html.j2`` renders (values, not
HTML; the templates escape them). Sections that plot save their PNGs through
:class:`~medfuse.evaluation.report.inputs._Plots`. The comparison sections (subgroups,
ablation, missing modalities) and the model card are in
:mod:`medfuse.evaluation.report.card`.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from medfuse.evaluation.report.data import plot_data_report
from medfuse.evaluation.report.inputs import _Plots, _Predictions, _slug
from medfuse.evaluation.report.plots import (
    confusion_counts,
    plot_confusion,
    plot_learning_curves,
    plot_reliability,
    plot_roc_pr,
    plot_roc_pr_per_label,
)

__all__ = [
    "HEADLINE_METRICS",
    "MAX_LEVEL_ROWS",
    "REPORT_ECE_BINS",
    "RUN_NUMBERS",
    "calibration_section",
    "data_section",
    "per_label_section",
    "performance_section",
    "summary_section",
    "training_section",
]

#: Rows shown per table of category levels (the JSON holds them all).
MAX_LEVEL_ROWS = 30
#: Bins of the reliability diagram; 15 like the ``ece`` of ``metrics.json``.
REPORT_ECE_BINS = 15
#: Statistics of each continuous column per class (keys of ``data_report.json``).
STAT_KEYS = ("n", "mean", "std", "median", "q1", "q3", "min", "max")

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


def summary_section(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """``rows``: key, label, value and 95 % CI of each headline and other numeric metric."""
    ci95: Mapping[str, Any] = metrics.get("ci95") or {}
    keys = [k for k in HEADLINE_METRICS if k in metrics]
    extra = [k for k, v in metrics.items() if k not in HEADLINE_METRICS
             and isinstance(v, numbers.Number) and not isinstance(v, bool)]
    return {"rows": [
        {"key": key, "label": HEADLINE_METRICS.get(key) or RUN_NUMBERS.get(key) or key,
         "value": metrics[key], "ci": ci95.get(key)}
        for key in keys + extra
    ]}


def data_section(metrics: Mapping[str, Any], report: Mapping[str, Any] | None,
                 problem: str | None, plots: _Plots) -> dict[str, Any]:
    """The table's validation and split (``metrics.json``) and the data report's tables."""
    validation, split = metrics.get("data"), metrics.get("split")
    context: dict[str, Any] = {
        "validation": validation if isinstance(validation, Mapping) else None,
        "split": split if isinstance(split, Mapping) else None,
        "problem": problem,
        "report": None,
    }
    if report is None:
        return context

    balance: Mapping[str, Any] = report.get("class_balance") or {}
    total = sum(int(v) for v in balance.values()) or 1
    missing: Mapping[str, Any] = report.get("missing") or {}
    n_rows = int(report.get("n_rows") or 0) or 1
    categories = []
    for col, rows in (report.get("positive_rate_by_category") or {}).items():
        shown = rows[:MAX_LEVEL_ROWS]
        categories.append({"column": str(col), "levels": shown, "more": len(rows) - len(shown)})
    continuous = [
        {"column": str(col),
         "classes": [{"label": label, "stats": [s.get(k) for k in STAT_KEYS]}
                     for label, s in per_class.items()]}
        for col, per_class in (report.get("continuous_by_class") or {}).items()
    ]
    text_length = report.get("text_length")
    duplicates = report.get("duplicates")
    figures = [plots.add(f"data_{i:02d}_{_slug(title)}", png, title, title)
               for i, (title, png) in enumerate(plot_data_report(report))]
    context["report"] = {
        "n_rows": report.get("n_rows"),
        "target": str(report.get("target", "?")),
        "positive": str(report.get("positive")),
        "balance": [{"label": c, "n": n, "share": int(n) / total} for c, n in balance.items()],
        "missing": [{"column": c, "n": n, "share": int(n) / n_rows} for c, n in missing.items()],
        "categories": categories,
        "stat_keys": list(STAT_KEYS),
        "continuous": continuous,
        "text_length": [
            {"label": c, "median": s.get("median_words"), "mean": s.get("mean_words")}
            for c, s in (text_length or {}).items()
        ],
        "duplicates": duplicates if isinstance(duplicates, Mapping) and duplicates else None,
        "figures": figures,
    }
    return context


def training_section(run: Path, metrics: Mapping[str, Any], config_text: str | None,
                     config_problem: str | None, plots: _Plots) -> dict[str, Any]:
    """Run numbers (time, memory, epochs), the learning curves and the resolved config."""
    png = plot_learning_curves(run / "logs" / "metrics.csv")
    curves = None if png is None else plots.add(
        "learning_curves", png, "Learning curves",
        "Loss and validation scores per epoch (logs/metrics.csv).")
    return {
        "facts": {RUN_NUMBERS[k]: metrics[k] for k in RUN_NUMBERS if metrics.get(k) is not None},
        "curves": curves,
        "config_problem": config_problem,
        "config_text": config_text,
    }


def per_label_section(preds: _Predictions, per_label: Mapping[str, Any] | None,
                      plots: _Plots, scope: str = "test rows") -> dict[str, Any]:
    """A multi-label model's labels: one table row per label (counts of true / false
    positives and negatives at the label's threshold, ROC / PR AUC with 95 % CIs from
    ``per_label``) and the ROC / PR curves of every label; ``labelled`` None without truth."""
    if preds.hot is None or preds.decided is None:
        return {"labelled": None, "multilabel": True}
    y, d = preds.hot, preds.decided
    rows = []
    for j, name in enumerate(preds.classes):
        m = dict((per_label or {}).get(name) or {})
        ci = m.get("ci95") or {}
        rows.append({
            "label": name, "positives": int(y[:, j].sum()),
            "tp": int(((d[:, j] == 1) & (y[:, j] == 1)).sum()),
            "fp": int(((d[:, j] == 1) & (y[:, j] == 0)).sum()),
            "fn": int(((d[:, j] == 0) & (y[:, j] == 1)).sum()),
            "tn": int(((d[:, j] == 0) & (y[:, j] == 0)).sum()),
            "roc_auc": m.get("roc_auc"), "roc_ci": ci.get("roc_auc"),
            "pr_auc": m.get("pr_auc"), "sensitivity": m.get("sensitivity"),
            "specificity": m.get("specificity"), "threshold": m.get("threshold"),
        })
    figure = plots.add(
        "roc_pr_per_label", plot_roc_pr_per_label(y, preds.proba, preds.classes),
        "ROC and precision-recall curves per label",
        f"Each label scored alone on the {scope} (its prob_ column against its 0/1 truth); "
        "legends: ROC AUC / average precision; dashed line: chance.")
    return {"labelled": len(y), "multilabel": True, "scope": scope, "rows": rows,
            "figure": figure, "subset_accuracy": float((d == y).all(axis=1).mean())
            if len(y) else None}


def performance_section(preds: _Predictions, plots: _Plots,
                        per_label: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Confusion matrix (table and plot) and ROC / PR curves; ``labelled`` None without truth.

    A multi-label model gets :func:`per_label_section` instead.
    """
    if preds.multilabel:
        return per_label_section(preds, per_label, plots)
    mask = preds.labelled
    if preds.truth is None or not mask.any():
        return {"labelled": None}
    truth = preds.truth[mask].to_numpy()
    predicted = preds.predicted[mask].to_numpy()
    counts = confusion_counts(truth, predicted, preds.classes)
    confusion = [{"label": c, "counts": [int(v) for v in counts[i]]}
                 for i, c in enumerate(preds.classes)]
    confusion_figure = plots.add(
        "confusion", plot_confusion(truth, predicted, preds.classes), "Confusion matrix",
        "Rows: true class; columns: predicted class (the prediction column of predictions.csv).")
    j = preds.classes.index(preds.positive)
    y01 = (truth == preds.positive).astype(int)
    note = "" if len(preds.classes) == 2 else " (positive class against all other classes)"
    roc_pr_figure = plots.add(
        "roc_pr", plot_roc_pr(y01, preds.proba[mask, j]), "ROC and precision-recall curves",
        f"Probability of {preds.positive}{note}; dashed lines: chance.")
    return {
        "labelled": int(mask.sum()),
        "positive": preds.positive,
        "classes": list(preds.classes),
        "confusion": confusion,
        "confusion_figure": confusion_figure,
        "roc_pr_figure": roc_pr_figure,
    }


def calibration_section(metrics: Mapping[str, Any], preds: _Predictions,
                        plots: _Plots) -> dict[str, Any]:
    """ECE, Brier and calibration numbers, and the top-label reliability diagram."""
    facts: dict[str, Any] = {}
    for key in ("ece", "brier"):
        if metrics.get(key) is not None:
            facts[key] = metrics[key]
    calibration = metrics.get("calibration")
    decision = None
    if isinstance(calibration, Mapping):
        facts.update({f"calibration: {k}": v for k, v in calibration.items()
                      if k not in ("reason", "warning")})
        decision = {"reason": calibration.get("reason"), "warning": calibration.get("warning"),
                    "kept": calibration.get("kept")}
    mask = preds.labelled
    if preds.truth is None or not mask.any():
        return {"facts": facts, "figure": None, "decision": decision}
    if preds.hot is not None:  # multi-label: every (row, label) pair, pooled
        after, hot = preds.proba.ravel(), preds.hot.ravel()
        if preds.raw_proba is not None:
            png = plot_reliability(hot, preds.raw_proba.ravel(), after, bins=REPORT_ECE_BINS)
        else:
            png = plot_reliability(hot, after, bins=REPORT_ECE_BINS)
        figure = plots.add("reliability", png, "Reliability diagram", (
            "Every (row, label) pair pooled: a label's probability against how often the "
            "label is present"
            + (", before (raw_prob_) and after (prob_) the per-label temperatures"
               if preds.raw_proba is not None else "")
            + f"; {REPORT_ECE_BINS} equal-width bins (metrics.json's ece is the mean of the "
            "labels' own)."))
        return {"facts": facts, "figure": figure, "decision": decision}
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
    figure = plots.add("reliability", png, "Reliability diagram", caption + (
        ": confidence = highest class probability, observed = share of correct predictions; "
        f"{REPORT_ECE_BINS} equal-width bins, as the ece of metrics.json."))
    return {"facts": facts, "figure": figure, "decision": decision}
