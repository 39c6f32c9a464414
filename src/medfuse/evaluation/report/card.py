"""The model card of the run report, as a template context.

Intended use, data, headline metrics and limitations (subgroups, calibration); the page's
``model-card`` section (``templates/report_sections.html.j2``) holds the fixed text. The
medfuse version is the installed distribution's (:func:`importlib.metadata.version`): the
evaluation layer does not import the top-level package.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from medfuse.config import RunConfig
from medfuse.evaluation.report.formatting import fmt
from medfuse.evaluation.report.inputs import _Predictions
from medfuse.evaluation.report.sections import HEADLINE_METRICS

__all__ = ["CARD_METRICS", "medfuse_version", "model_card"]

CARD_METRICS = ("accuracy", "balanced_accuracy", "roc_auc", "pr_auc", "sensitivity",
                "specificity", "ece")


def medfuse_version() -> str:
    """The installed medfuse's version, ``"unknown"`` when it is not installed."""
    try:
        return importlib.metadata.version("medfuse")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _subgroups_text(subgroups: Any) -> str:
    if isinstance(subgroups, list) and subgroups:
        flagged = [f"{r.get('column')}={r.get('level')}" for r in subgroups if r.get("flagged")]
        return (f"{len(flagged)} of {len(subgroups)} subgroups flagged"
                + (": " + ", ".join(flagged) if flagged else "") + ".")
    return "no subgroup analysis for this run; performance per subgroup is unknown."


def _calibration_text(metrics: Mapping[str, Any]) -> str:
    calibration = metrics.get("calibration")
    if isinstance(calibration, Mapping) and calibration.get("kept") is False:
        return (f"temperature scaling {calibration.get('reason', 'declined')}; test ECE "
                f"{fmt(metrics.get('ece'))}. Treat the probabilities as scores, not as "
                "calibrated risks.")
    if isinstance(calibration, Mapping):
        return (f"temperature scaling (T = {fmt(calibration.get('temperature'))}) changed "
                f"the ECE from {fmt(calibration.get('ece_before'))} to "
                f"{fmt(calibration.get('ece_after'))}; probabilities may still be "
                "miscalibrated on other populations.")
    return (f"no post-hoc calibration; ECE {fmt(metrics.get('ece'))}. Treat the "
            "probabilities as scores, not as calibrated risks.")


def model_card(metrics: Mapping[str, Any], cfg: RunConfig | None, preds: _Predictions,
               subgroups: Any, report: Mapping[str, Any] | None) -> dict[str, Any]:
    """What the model card says about this run (``metrics`` lists headline metrics with CIs)."""
    spec = cfg.data if cfg is not None else None
    validation = metrics.get("data") if isinstance(metrics.get("data"), Mapping) else {}
    source: object = None
    if spec is not None:
        source = f"dataset {spec.dataset}" if spec.dataset else spec.table
    source = source or (validation or {}).get("table") or "unknown"
    rows = (validation or {}).get("rows_out")
    if rows is None and report is not None:
        rows = report.get("n_rows")
    ci95: Mapping[str, Any] = metrics.get("ci95") or {}
    return {
        "name": cfg.name if cfg is not None and cfg.name else "unnamed run",
        "kind": f"{cfg.model.kind} model" if cfg is not None else "model",
        "source": str(source),
        "rows": rows,
        "classes": list(preds.classes),
        "positive": None if preds.multilabel else preds.positive,
        "multilabel": preds.multilabel,
        "modalities": (", ".join(spec.modalities) if spec is not None
                       else "unknown (no config.yaml)"),
        "n": metrics.get("n"),
        "metrics": _card_metrics(metrics, ci95, preds.multilabel),
        "subgroups": _subgroups_text(subgroups),
        "calibration": _calibration_text(metrics),
        "generated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "version": medfuse_version(),
    }


#: a multi-label model's card: what each headline figure is over the labels
MULTILABEL_CARD = {"accuracy": "Accuracy (label-wise, 1 - Hamming loss)",
                   "subset_accuracy": "Subset accuracy (every label right)",
                   "roc_auc": "ROC AUC (macro over labels)",
                   "roc_auc_micro": "ROC AUC (micro: every row and label pooled)",
                   "pr_auc": "PR AUC (macro over labels)",
                   "sensitivity": "Sensitivity (macro over labels)",
                   "specificity": "Specificity (macro over labels)",
                   "ece": "ECE (mean over labels)"}


def _card_metrics(metrics: Mapping[str, Any], ci95: Mapping[str, Any], multilabel: bool
                  ) -> list[dict[str, Any]]:
    names = MULTILABEL_CARD if multilabel else {k: HEADLINE_METRICS[k] for k in CARD_METRICS}
    return [{"label": label, "value": metrics[k], "ci": ci95.get(k)}
            for k, label in names.items() if k in metrics]
