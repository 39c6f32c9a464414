"""The label-audit section, and the other sections of a cross-validation's report.

:func:`label_audit_section` reads ``label_issues.csv``, ``label_issue_families.csv`` and
the ``label_issues`` summary of the metrics file (:mod:`medfuse.evaluation.label_audit`);
:func:`cv_summary_section` and :func:`error_families_section` describe ``cv_metrics.json``
and ``error_families.csv``. Each returns its template context (values, not HTML).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from medfuse.evaluation.families import FAMILIES_FILE
from medfuse.evaluation.label_audit import ISSUE_FAMILIES_FILE, ISSUES_FILE, plot_montage
from medfuse.evaluation.report.inputs import _Plots

#: rows / families listed in the section (the CSV files hold them all)
MAX_ROWS = 20
MAX_FAMILIES = 15
CV_METRICS = ("accuracy", "balanced_accuracy", "roc_auc", "pr_auc", "sensitivity",
              "specificity", "f1_macro", "ece", "train_seconds")


def _read_csv(path: Path) -> tuple[pd.DataFrame | None, str | None]:
    if not path.is_file():
        return None, f"{path.name} is missing"
    try:
        return pd.read_csv(path), None
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as e:
        return None, f"{path.name} could not be read ({e})"


def _records(frame: pd.DataFrame, columns: list[str]) -> list[dict[str, Any]]:
    """Rows as dicts of ``columns`` (a column the frame lacks is None: blank cells)."""
    full = frame.reindex(columns=columns)
    return [{c: (None if pd.isna(v) else v) for c, v in zip(columns, row, strict=True)}
            for row in full.itertuples(index=False)]


def label_audit_section(run: Path, audit: Mapping[str, Any] | None, plots: _Plots
                        ) -> dict[str, Any]:
    """Counts, the most suspect rows and families, a montage of their images, examples."""
    issues, problem = _read_csv(run / ISSUES_FILE)
    if issues is None or not isinstance(audit, Mapping):
        why = problem or "the metrics file has no label_issues entry"
        return {"available": False,
                "problem": f"{why}; run `medfuse audit {run}` to build the label audit"}
    families, _ = _read_csv(run / ISSUE_FAMILIES_FILE)
    flagged = issues[issues["is_issue"].astype(bool)]
    montage = plot_montage(issues)
    figure = plots.add("label_audit_montage", montage, "most suspect images",
                       "The most suspect flagged images: row, label as given -> suggested "
                       "label, label quality (the out-of-fold probability of the given label)."
                       ) if montage is not None else None
    cleanup = audit.get("cleanup", {})
    every = audit.get("metrics_on_all_rows", {})
    clean = audit.get("metrics_on_rows_not_flagged", {})
    comparison = [{"metric": k, "all": every.get(k), "not_flagged": clean.get(k)}
                  for k in ("n", "accuracy", "balanced_accuracy", "roc_auc") if k in every]
    training = audit.get("training", {})
    return {
        "available": True, "method": audit.get("method", ""),
        "rows_audited": audit.get("rows_audited", "every row, out of fold"),
        "pooled_models": list(audit.get("pooled_models", [])),
        "counts": {"rows": audit.get("rows"), "issues": audit.get("issues"),
                   "families with issues": audit.get("families_with_issues"),
                   "families": audit.get("families"),
                   "clean-up: rows relabelled one by one": cleanup.get("rows"),
                   "clean-up: families mostly flagged": cleanup.get("families"),
                   "clean-up: rows in those families": cleanup.get("family_rows")},
        "by_label": [{"label": k, **v} for k, v in audit.get("by_label", {}).items()],
        "comparison": comparison,
        "training": training,
        "rows": _records(flagged.head(MAX_ROWS), ["row", "label", "suggested_label", "quality",
                                                  "split_group", "family_issue", "fold",
                                                  "image"]),
        "more_rows": max(0, len(flagged) - MAX_ROWS),
        "families": _records(families.head(MAX_FAMILIES), list(families.columns))
        if families is not None else [],
        "family_columns": list(families.columns) if families is not None else [],
        "more_families": max(0, len(families) - MAX_FAMILIES) if families is not None else 0,
        "montage": figure,
        "examples": list(audit.get("examples", [])),
        "notes": list(audit.get("notes", [])),
    }


def cv_summary_section(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """Mean, standard deviation and per-fold value of the headline metrics."""
    folds = metrics.get("folds", [])
    mean, std = metrics.get("mean", {}), metrics.get("std", {})
    rows = [{"key": k, "mean": mean.get(k), "std": std.get(k),
             "folds": [f.get(k) for f in folds]} for k in CV_METRICS if k in mean]
    return {"k": metrics.get("folds_k", len(folds)), "rows": rows,
            "fold_headers": [f"fold {f.get('fold', i)}" for i, f in enumerate(folds)],
            "groups": metrics.get("groups"), "peak_rss_mb": metrics.get("peak_rss_mb")}


def error_families_section(run: Path, metrics: Mapping[str, Any]) -> dict[str, Any]:
    """The families holding out-of-fold errors, most errors first."""
    table, problem = _read_csv(run / FAMILIES_FILE)
    if table is not None and "images" in table:  # file names: the folder is the same for all
        table["images"] = table["images"].astype(object).fillna("").astype(str).map(
            lambda s: " ".join(Path(p).name for p in s.split()))
    return {"summary": metrics.get("error_families"), "problem": problem,
            "columns": list(table.columns) if table is not None else [],
            "rows": _records(table.head(MAX_FAMILIES), list(table.columns))
            if table is not None else [],
            "more": max(0, len(table) - MAX_FAMILIES) if table is not None else 0}
