"""The report's *Uncertainty* section: conformal coverage against its target, per class and
per available-modality subset, with set sizes and abstentions (``metrics["conformal"]`` of
a run, or ``cv_metrics.json["conformal"]`` out of fold).

The figure shows coverage as bars beside the target line (``1 - alpha``), so a class or a
modality subset whose sets cover less than promised stands out, and the distribution of
set sizes (size 1: a decision; 0 or several: "uncertain: refer").
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from medfuse.evaluation.report.inputs import _Plots
from medfuse.evaluation.report.plots import COLORS, new_figure, to_png

__all__ = ["MIN_ROWS_SHOWN", "conformal_section", "plot_coverage"]

#: coverage of fewer rows than this is shown but not judged against the target
MIN_ROWS_SHOWN = 30
NO_SETS = ("this run has no conformal prediction sets: trained before medfuse made them, or "
           "with evaluation.conformal_alpha: null (retrain to get them)")


def _row(scope: str, name: str, m: Mapping[str, Any], target: float,
         tolerance: float) -> dict[str, Any]:
    coverage, n = m.get("coverage"), int(m.get("n") or 0)
    below = (coverage is not None and n >= MIN_ROWS_SHOWN
             and float(coverage) < target - tolerance)
    return {"scope": scope, "name": name, "n": n, "coverage": coverage,
            "mean_set_size": m.get("mean_set_size"), "abstain_rate": m.get("abstain_rate"),
            "below": bool(below)}


MULTILABEL_NO_SETS = ("a multi-label model has no conformal prediction sets (medfuse's sets "
                      "are class-conditional sets of one label among several); each label is "
                      "decided at its own threshold, fitted on the validation rows (see the "
                      "per-label table)")


def conformal_section(conformal: Mapping[str, Any] | None, plots: _Plots,
                      scope: str = "test rows", multilabel: bool = False) -> dict[str, Any]:
    """Context of the Uncertainty section (``available`` False with ``problem`` otherwise).

    ``scope`` names the rows the coverage was measured on (``"test rows"`` or
    ``"out-of-fold rows"``). A row of the table is flagged when its coverage falls more than
    ``2 * sqrt(alpha (1 - alpha) / n)`` (two binomial standard errors) below the target.
    """
    if not isinstance(conformal, Mapping) or conformal.get("coverage") is None:
        return {"available": False, "problem": MULTILABEL_NO_SETS if multilabel else NO_SETS}
    alpha = float(conformal["alpha"])
    target = 1.0 - alpha

    def tol(n: int) -> float:
        return 2.0 * float(np.sqrt(alpha * (1 - alpha) / max(n, 1)))

    n_all = int(conformal.get("n") or 0)
    rows = [_row("all", "every row", conformal, target, tol(n_all))]
    counts = {}
    for name, subset in (conformal.get("by_modalities") or {}).items():
        counts[name] = int(subset.get("n") or 0)
    class_n = conformal.get("class_n") or {}
    for cls, cov in (conformal.get("class_coverage") or {}).items():
        n = class_n.get(cls)
        below = (cov is not None and n is not None and n >= MIN_ROWS_SHOWN
                 and float(cov) < target - tol(int(n)))
        rows.append({"scope": "class", "name": str(cls), "n": n, "coverage": cov,
                     "mean_set_size": None, "abstain_rate": None, "below": bool(below)})
    by_mod = conformal.get("by_modalities") or {}
    if len(by_mod) > 1:  # one subset only: the same as "every row"
        for name, m in by_mod.items():
            rows.append(_row("modalities", str(name), m, target, tol(counts[name])))
    sizes = {int(k): int(v) for k, v in (conformal.get("set_sizes") or {}).items()}
    png = plot_coverage(conformal, sizes)
    figure = plots.add("conformal_coverage", png, "Conformal coverage and set sizes",
                       f"Left: share of {scope} whose prediction set holds the true class, "
                       f"overall, per class and per available-modality subset; dashed: the "
                       f"target {target:.2f}. Right: rows per set size (1 is a decision; 0 or "
                       "several is an abstention: uncertain, refer).")
    return {"available": True, "alpha": alpha, "target": target, "scope": scope,
            "rows": rows, "n": n_all, "coverage": conformal.get("coverage"),
            "mean_set_size": conformal.get("mean_set_size"),
            "abstain_rate": conformal.get("abstain_rate"),
            "below": [r for r in rows if r["below"]], "figure": figure,
            "warnings": list(conformal.get("calibration_warnings") or [])}


def plot_coverage(conformal: Mapping[str, Any], sizes: Mapping[int, int]) -> bytes:
    """PNG: coverage bars (overall, per class, per modality subset) against the target, and
    a bar chart of rows per set size."""
    target = 1.0 - float(conformal["alpha"])
    labels, values, colours = ["all rows"], [float(conformal["coverage"])], [COLORS[0]]
    for cls, cov in (conformal.get("class_coverage") or {}).items():
        if cov is not None:
            labels.append(f"class {cls}")
            values.append(float(cov))
            colours.append(COLORS[1])
    by_mod = conformal.get("by_modalities") or {}
    if len(by_mod) > 1:
        for name, m in by_mod.items():
            if m.get("coverage") is not None:
                labels.append(f"{name} (n={m.get('n')})")
                values.append(float(m["coverage"]))
                colours.append(COLORS[2])
    fig = new_figure(9.0, max(2.6, 0.38 * len(labels) + 1.2))
    ax, ax2 = fig.subplots(1, 2, width_ratios=[2.2, 1])
    pos = np.arange(len(labels))[::-1]
    ax.barh(pos, values, color=colours)
    ax.axvline(target, ls="--", color="black", lw=1, label=f"target {target:.2f}")
    ax.set_yticks(pos, labels)
    low = min([*values, target])
    ax.set_xlim(max(0.0, low - 0.1), 1.0)
    for p, v in zip(pos, values, strict=True):
        ax.text(v, p, f" {v:.3f}", va="center", fontsize=8)
    ax.set_xlabel("coverage (true class in the set)")
    ax.legend(loc="lower left", fontsize=8)
    ks = sorted(sizes)
    ax2.bar([str(k) for k in ks], [sizes[k] for k in ks],
            color=[COLORS[2] if k == 1 else COLORS[3] for k in ks])
    ax2.set_xlabel("set size")
    ax2.set_ylabel("rows")
    return to_png(fig)
