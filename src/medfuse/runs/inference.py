"""``medfuse evaluate`` and ``medfuse predict``: a saved model applied to a new table."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd

from medfuse.config import DataSpec
from medfuse.data import load_table
from medfuse.estimators import keep_missing
from medfuse.estimators.base import NO_CONFORMAL
from medfuse.evaluation.evaluate import evaluate, modality_subsets, predictions_frame
from medfuse.runs.files import SUBSETS_FILE, _write_csv, _write_json
from medfuse.runs.models import load_model

log = logging.getLogger(__name__)


def _outside_ok(spec: DataSpec, allow: bool) -> DataSpec:
    """``spec``, accepting image paths outside the table's folder if ``allow``."""
    return spec.model_copy(update={"allow_outside_paths": True}) if allow else spec


def evaluate_run(run: Path, table: Path, out: Path | None = None,
                 allow_outside_paths: bool = False) -> dict[str, Any]:
    """Evaluate a saved model on a labelled table; writes metrics.json + predictions.csv.

    ``allow_outside_paths`` accepts image paths outside the table's folder.
    """
    clf = load_model(run)
    if clf.conformal_ is None:
        log.warning("%s: %s", run, NO_CONFORMAL)
    spec = keep_missing(clf.spec) if clf.handles_missing else clf.spec
    df, validation = load_table(table, _outside_ok(spec, allow_outside_paths),
                                check_images="exists", training=False)
    metrics, preds = evaluate(clf, df, bootstrap=1000)
    metrics["data"] = validation.to_dict()
    target = out or run / "evaluation"
    target.mkdir(parents=True, exist_ok=True)
    _write_json(target / "metrics.json", metrics)
    _write_csv(target / "predictions.csv", preds)
    if clf.handles_missing:
        _write_json(target / SUBSETS_FILE, modality_subsets(clf, df))
    return metrics


def predict_run(run: Path, table: Path, out_csv: Path,
                allow_outside_paths: bool = False, without: list[str] | None = None
                ) -> pd.DataFrame:
    """Predict every row of ``table`` (labels optional) into ``out_csv``.

    ``allow_outside_paths`` accepts image paths outside the table's folder; ``without``
    leaves those modalities out of every row (their columns may be absent from the table;
    models trained with ``modality_dropout > 0``).
    """
    clf = load_model(run)
    if clf.conformal_ is None:
        log.warning("%s: %s", run, NO_CONFORMAL)
    spec = _outside_ok(clf.input_spec(), allow_outside_paths)
    if without:
        from medfuse.data.table import read_table
        from medfuse.data.validation import validate_table

        raw = read_table(table)
        df, _ = validate_table(clf._hide(raw, without), spec, root=Path(table).parent,
                               table=str(table), check_images="exists",
                               require_target=False, training=False)
    else:
        df, _ = load_table(table, spec, check_images="exists", require_target=False,
                           training=False)
    preds = predictions_frame(clf, df, clf.predict_proba(df))
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    _write_csv(out_csv, preds)
    return preds
