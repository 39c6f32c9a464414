"""``medfuse audit``: the label audit of a cross-validation (or a run's test rows), rebuilt.

``medfuse cv`` runs :func:`audit_predictions` on its out-of-fold predictions and writes
``label_issues.csv``, ``label_issue_families.csv`` and ``cv_metrics.json["label_issues"]``.
:func:`audit_run` does the same for an existing directory -- a cross-validation made before
the audit existed included -- and rebuilds its report. On a ``medfuse train`` run it audits
the held-out test rows (the only rows its model never saw) and says so.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from medfuse.config import RunConfig
from medfuse.evaluation.label_audit import (
    ISSUE_FAMILIES_FILE,
    ISSUES_FILE,
    label_audit,
    pool_predictions,
    pooled_metrics,
)
from medfuse.io import MANIFEST, RunDirError, add_to_manifest
from medfuse.runs.files import _write_csv, _write_json

log = logging.getLogger(__name__)


#: suspect rows whose tabular values and text the report shows
EXAMPLES = 12
#: characters of a row's text shown
TEXT_CHARS = 400


def audit_examples(table: pd.DataFrame, df: pd.DataFrame | None, cfg: RunConfig
                   ) -> list[dict[str, Any]]:
    """The most suspect flagged rows with their tabular values and text, for the report."""
    spec = cfg.data
    out = []
    for _, r in table[table["is_issue"]].head(EXAMPLES).iterrows():
        entry: dict[str, Any] = {k: r[k] for k in ("row", "label", "suggested_label",
                                                   "quality", "split_group")}
        row = int(r["row"])
        if df is not None and 0 <= row < len(df):
            values = df.iloc[row]
            entry["values"] = {c: (None if pd.isna(values[c]) else values[c])
                               for c in spec.tabular if c in df.columns}
            if spec.text and spec.text in df.columns and not pd.isna(values[spec.text]):
                entry["text"] = str(values[spec.text])[:TEXT_CHARS]
        out.append(entry)
    return out


def audit_predictions(predictions: pd.DataFrame, cfg: RunConfig,
                      folds: list[dict[str, Any]] | None = None, source: str = "predictions.csv",
                      df: pd.DataFrame | None = None,
                      others: Sequence[tuple[str, pd.DataFrame]] = (),
                      ) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """The label audit of out-of-sample ``predictions`` (cleanlab), for the metrics file.

    Beside the counts: metrics pooled over every row (the labels as given) and over the rows
    not flagged -- an optimistic figure by construction (the model's own disagreements are
    left out), to show how much the suspect labels weigh, never to replace the first.
    ``folds`` (the per-fold metrics) give how many training rows each fold's
    ``train.label_issues`` handling flagged; ``df`` (the input table) the tabular values
    and text of the most suspect rows (``examples``). ``others``: ``(source, predictions)``
    of other models' out-of-sample predictions of the same rows, pooled with these for the
    audit (:func:`~medfuse.evaluation.label_audit.pool_predictions`); the metrics stay
    those of ``predictions``.
    """
    t0 = time.perf_counter()
    sep = cfg.data.separator
    audited, members = predictions, list[dict[str, Any]]()
    if others:
        audited, members = pool_predictions([(source, predictions), *others],
                                            cfg.data.target, sep)
    table, families, audit = label_audit(audited, cfg.data.target, cfg.data.image,
                                         source=source, sep=sep)
    if members:
        audit["pooled_models"] = members
        audit["method"] += ("; probabilities pooled over the out-of-sample predictions of "
                            f"{len(members)} models, weighted by accuracy")
    flagged = set(table.loc[table["is_issue"], "row"].tolist())
    rows = predictions["row"] if "row" in predictions else pd.Series(range(len(predictions)),
                                                                   index=predictions.index)
    clean = predictions[~rows.isin(flagged)]
    audit["metrics_on_all_rows"] = pooled_metrics(predictions, cfg.data.target, sep)
    audit["metrics_on_rows_not_flagged"] = pooled_metrics(clean, cfg.data.target, sep)
    audit["training"] = {
        "handling": cfg.train.label_issues,
        "flagged_per_fold": [f.get("label_issues_train", {}).get("flagged", 0)
                             for f in folds or []],
    }
    audit["examples"] = audit_examples(table, df, cfg)
    audit["seconds"] = round(time.perf_counter() - t0, 3)
    return table, families, audit


def audit_run(run: Path, others: Sequence[Path] = ()) -> dict[str, Any]:
    """Re-audit ``run`` (a ``medfuse cv`` or ``medfuse train`` directory); the summary.

    Writes the two CSV files, the ``label_issues`` entry of ``cv_metrics.json`` (or
    ``metrics.json``) and rebuilds ``report.html``. ``others``: directories (or
    ``predictions.csv`` files) of other models' cross-validations of the same table, whose
    out-of-fold probabilities are pooled with ``run``'s (``medfuse audit RUN --with OTHER``).
    """
    from medfuse.config import load_config
    from medfuse.evaluation.report import build_cv_report, build_report

    if not run.is_dir():
        raise RunDirError(f"{run} does not exist: pass the --out folder of 'medfuse cv' "
                          "(or of 'medfuse train').")
    preds_path, cfg_path = run / "predictions.csv", run / "config.yaml"
    for path, what in ((cfg_path, "config.yaml"), (preds_path, "predictions.csv")):
        if not path.is_file():
            raise RunDirError(
                f"{run} has no {what}: it holds no out-of-fold predictions to audit. Pass the "
                "--out folder of 'medfuse cv' (every row predicted out of fold) or of "
                "'medfuse train' (its test rows).")
    cfg = load_config(cfg_path)
    predictions = pd.read_csv(preds_path)
    is_cv = (run / "cv_metrics.json").is_file()
    metrics_path = run / ("cv_metrics.json" if is_cv else "metrics.json")
    metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    table, families, audit = audit_predictions(predictions, cfg, metrics.get("folds"),
                                               source=str(preds_path), df=_table(cfg),
                                               others=[_other(p) for p in others])
    audit["rows_audited"] = "every row, out of fold" if is_cv else \
        "the held-out test rows only (a holdout run's model saw the others)"
    _write_csv(run / ISSUES_FILE, table)
    _write_csv(run / ISSUE_FAMILIES_FILE, families)
    if metrics:
        metrics["label_issues"] = audit
        _write_json(metrics_path, metrics)
    if (run / MANIFEST).is_file():  # the files changed: their sha256 too
        add_to_manifest(run, [ISSUES_FILE, ISSUE_FAMILIES_FILE]
                        + ([metrics_path.name] if metrics else []))
    (build_cv_report if is_cv else build_report)(run)
    return audit


def _other(path: Path) -> tuple[str, pd.DataFrame]:
    """Another model's out-of-fold predictions, from its cv directory or predictions.csv."""
    file = path / "predictions.csv" if path.is_dir() else path
    if not file.is_file():
        raise RunDirError(f"{path} has no predictions.csv: pass to --with the --out folder of "
                          "another 'medfuse cv' of the same table.")
    if (file.parent / "metrics.json").is_file() and not (file.parent / "cv_metrics.json"
                                                         ).is_file():
        raise RunDirError(f"{path} is a 'medfuse train' run: its model saw most rows. Pass "
                          "to --with a 'medfuse cv' folder (every row predicted out of fold).")
    try:
        return str(file), pd.read_csv(file)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as e:
        raise RunDirError(f"{file} could not be read ({e}): rebuild it with 'medfuse cv'."
                          ) from e


def _table(cfg: RunConfig) -> pd.DataFrame | None:
    """The input table again (for the examples' values), or None when it cannot be read."""
    from medfuse.data import load_data
    from medfuse.errors import MedfuseError

    if not (cfg.data.tabular or cfg.data.text):
        return None
    try:
        return load_data(cfg.data)[0]  # the rows as cv numbered them (after validation)
    except (MedfuseError, OSError) as e:
        log.warning("the input table could not be read again (%s): the report shows the "
                    "suspect rows without their tabular values and text", e)
        return None
