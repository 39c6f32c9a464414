"""``build_report``: a run directory to one self-contained ``report.html``.

Each section's context comes from :mod:`~medfuse.evaluation.report.sections`,
:mod:`~medfuse.evaluation.report.comparisons` or :mod:`~medfuse.evaluation.report.card`;
the page is ``evaluation/templates/report.html.j2`` (section bodies in
``report_sections.html.j2``, tables and figures in ``report_macros.html.j2``, the CSS
inline from ``report.css.j2``). Autoescape is on: every value is HTML-escaped with
:func:`html.escape` (:func:`~medfuse.evaluation.report.formatting.escape`).
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import jinja2
import pandas as pd

from medfuse.evaluation.label_audit import ISSUES_FILE
from medfuse.evaluation.report.audit import (
    cv_summary_section,
    error_families_section,
    label_audit_section,
)
from medfuse.evaluation.report.card import model_card
from medfuse.evaluation.report.comparisons import (
    ablation_section,
    subgroups_section,
    subsets_section,
)
from medfuse.evaluation.report.formatting import FILTERS, TESTS, escape
from medfuse.evaluation.report.inputs import _Plots, _Predictions, _read_config, _read_json
from medfuse.evaluation.report.sections import (
    calibration_section,
    data_section,
    per_label_section,
    performance_section,
    summary_section,
    training_section,
)
from medfuse.evaluation.report.uncertainty import conformal_section
from medfuse.io import RunDirError, atomic_write_text

__all__ = ["NOT_AVAILABLE", "SECTIONS", "build_cv_report", "build_report", "environment"]

SECTIONS: dict[str, str] = {
    "summary": "Summary",
    "data": "Data",
    "training": "Training",
    "performance": "Performance",
    "calibration": "Calibration",
    "uncertainty": "Uncertainty",
    "subgroups": "Subgroups",
    "ablation": "Ablation",
    "modality-subsets": "Missing modalities",
    "label-audit": "Label audit",
    "model-card": "Model card",
    "cv-summary": "Cross-validation",
    "error-families": "Error families",
    "per-label": "Per label",
}
NOT_AVAILABLE = "not available for this run"


@cache
def environment() -> jinja2.Environment:
    """The report's template environment (autoescape on, undefined names raise)."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("medfuse.evaluation", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        finalize=escape,
    )
    env.filters.update(FILTERS)
    env.tests.update(TESTS)
    env.globals["not_available"] = NOT_AVAILABLE
    return env


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
    contexts: list[tuple[str, dict[str, Any]]] = [  # built in page order (plots are saved)
        ("summary", summary_section(metrics)),
        ("data", data_section(metrics, report, report_problem, plots)),
        ("training", training_section(run, metrics, config_text, config_problem, plots)),
        ("performance", performance_section(preds, plots, metrics.get("per_label"))),
        ("calibration", calibration_section(metrics, preds, plots)),
        ("uncertainty", conformal_section(metrics.get("conformal"), plots,
                                          multilabel=preds.multilabel)),
        ("subgroups", subgroups_section(subgroups, subgroups_problem)),
    ]
    if isinstance(ablation, dict):
        contexts.append(("ablation", ablation_section(ablation)))
    if isinstance(subsets, dict):
        contexts.append(("modality-subsets", subsets_section(subsets)))
    if (run / ISSUES_FILE).is_file():  # `medfuse audit RUN` audited the test rows
        contexts.append(("label-audit",
                         label_audit_section(run, metrics.get("label_issues"), plots)))
    contexts.append(("model-card", model_card(metrics, cfg, preds, subgroups, report)))
    name = cfg.name if cfg is not None and cfg.name else run.name
    return _render(run, out, f"medfuse report: {name}", contexts)


def _render(run: Path, out: Path | None, title: str,
            contexts: list[tuple[str, dict[str, Any]]]) -> Path:
    sections = [{"id": sid, "title": SECTIONS[sid], "context": context}
                for sid, context in contexts]
    page = environment().get_template("report.html.j2").render(
        title=title, run_dir=str(run), sections=sections)
    target = Path(out) if out is not None else run / "report.html"
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(target, page)
    return target


def build_cv_report(run: Path, out: Path | None = None) -> Path:
    """``report.html`` of a ``medfuse cv`` directory: folds, error families, label audit.

    Requires ``cv_metrics.json``; the error-family and label-audit sections say what is
    missing when their files are absent (a cross-validation from before the audit:
    ``medfuse audit RUN`` builds them). Plots go to ``run/plots``.
    """
    run = Path(run)
    metrics, _ = _read_json(run / "cv_metrics.json", required=True)
    if not isinstance(metrics, dict):
        raise RunDirError(f"{run / 'cv_metrics.json'} must hold a JSON object; re-run the "
                          "cross-validation.")
    cfg, _, _ = _read_config(run / "config.yaml")
    plots = _Plots(run / "plots")
    contexts = [("cv-summary", cv_summary_section(metrics))]
    pooled = metrics.get("pooled")
    if isinstance(pooled, dict) and (run / "predictions.csv").is_file():  # multi-label
        preds = _Predictions(pd.read_csv(run / "predictions.csv"),
                             cfg.data if cfg is not None else None)
        contexts.append(("per-label", per_label_section(
            preds, pooled.get("per_label"), plots, scope="rows, each predicted out of fold")))
    contexts += [
        ("uncertainty", conformal_section(metrics.get("conformal"), plots,
                                          scope="out-of-fold rows",
                                          multilabel=isinstance(pooled, dict))),
        ("error-families", error_families_section(run, metrics)),
        ("label-audit", label_audit_section(run, metrics.get("label_issues"), plots)),
    ]
    name = cfg.name if cfg is not None and cfg.name else run.name
    return _render(run, out, f"medfuse cross-validation: {name}", contexts)
