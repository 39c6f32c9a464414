"""The report's comparison sections as template contexts: subgroups, ablation, modality subsets.

Like :mod:`medfuse.evaluation.report.sections`: values for the macros of
``templates/report_sections.html.j2``, never HTML.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = [
    "ABLATION_METRICS",
    "SUBGROUP_COLUMNS",
    "SUBSET_METRICS",
    "ablation_section",
    "subgroups_section",
    "subsets_section",
]

ABLATION_METRICS = ("accuracy", "balanced_accuracy", "roc_auc", "pr_auc", "f1_macro",
                    "sensitivity", "specificity", "brier", "ece")
SUBGROUP_COLUMNS = ("column", "level", "n", "positives", "accuracy", "roc_auc", "sensitivity",
                    "specificity", "flagged")
#: Metrics of each subset of modalities (``modality_subsets.json``).
SUBSET_METRICS = ("accuracy", "roc_auc", "pr_auc", "sensitivity", "specificity")


def subgroups_section(rows: Any, problem: str | None) -> dict[str, Any]:
    """``subgroups.json`` rows as table cells (``rows`` None when absent: ``problem`` says why)."""
    if not isinstance(rows, list):
        return {"rows": None, "problem": problem}
    table = []
    for row in rows:
        flagged = bool(row.get("flagged"))
        cells = []
        for key in SUBGROUP_COLUMNS:
            value = row.get(key)
            if key in ("column", "level"):
                cells.append({"value": "" if value is None else value, "numeric": False})
            elif key == "flagged":
                cells.append({"value": "flagged" if flagged else "", "numeric": False})
            else:
                cells.append({"value": value, "numeric": True})
        table.append({"flagged": flagged, "cells": cells})
    return {
        "rows": table,
        "problem": problem,
        "columns": list(SUBGROUP_COLUMNS),
        "n_flagged": sum(bool(r.get("flagged")) for r in rows),
    }


def subsets_section(subsets: Mapping[str, Any]) -> dict[str, Any]:
    """Metrics with each subset of modalities, and per group of rows by available modalities."""
    tables = []
    for title, key, first in (("modalities used", "removed", None),
                              ("modalities the rows have", "available", "n")):
        groups: Mapping[str, Mapping[str, Any]] = subsets.get(key) or {}
        cols = [c for c in (first, *SUBSET_METRICS) if c]
        rows = [{"name": str(name), "cells": [m.get(c) for c in cols]}
                for name, m in groups.items()]
        if rows:
            tables.append({"header": [title, *cols], "rows": rows})
    return {"tables": tables}


def ablation_section(ablation: Any) -> dict[str, Any]:
    """Each model's metrics with CIs, the best single modality and the fusion comparison."""
    models: Mapping[str, Mapping[str, Any]] = ablation.get("models") or {}
    comparison: Mapping[str, Any] = ablation.get("comparison") or {}
    keys = [k for k in ABLATION_METRICS if any(k in m for m in models.values())]
    best = comparison.get("best_single")
    rows = []
    for name, m in models.items():
        ci95: Mapping[str, Any] = m.get("ci95") or {}
        rows.append({"name": str(name), "best": name == best,
                     "cells": [{"value": m.get(k), "ci": ci95.get(k)} for k in keys]})
    context: dict[str, Any] = {
        "columns": keys, "models": rows, "best_note": best in models, "comparison": None}
    if comparison:
        delta = comparison.get("delta_roc_auc")
        test = comparison.get("test")
        context["comparison"] = {
            "fused": "fused" if "fused" in models else "the fused model",
            "best": str(best),
            "sign": "+" if isinstance(delta, int | float) and delta > 0 else "",
            "delta": delta,
            "ci": comparison.get("delta_ci95"),
            "p_value": comparison.get("p_value"),
            "test": str(test) if test else None,
            "bootstrap_p_value": comparison.get("bootstrap_p_value"),
        }
    return context
