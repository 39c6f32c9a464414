"""The jobs behind ``medfuse train / cv / evaluate / predict``, writing run directories.

A training run directory holds ``config.yaml`` (resolved), ``model.safetensors``,
``preprocess.json``, ``estimator.json``, ``metrics.json``, ``predictions.csv``,
``manifest.json`` (sha256 of every file), ``logs/`` and ``checkpoints/``.
"""

from __future__ import annotations

import json
import logging
import resource
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medfuse.config import RunConfig
from medfuse.data import holdout_split, kfold_splits, load_data, load_table
from medfuse.data.splits import carve, group_labels
from medfuse.estimators import FusionClassifier, prediction_spec
from medfuse.evaluation.metrics import classification_metrics, summarize_folds
from medfuse.io import write_manifest

log = logging.getLogger(__name__)


def peak_rss_mb() -> float:
    """Peak resident memory of this process (and finished children), in MB."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, kids) / 1024.0


def evaluate(clf: FusionClassifier, df: pd.DataFrame) -> tuple[dict[str, Any], pd.DataFrame]:
    """Metrics (``metrics.json`` keys) and a predictions table for labelled rows ``df``."""
    proba = clf.predict_proba(df)
    y = clf.pre_.encode_target(df[clf.spec.target]).numpy()
    metrics = classification_metrics(y, proba)
    return metrics, predictions_frame(clf, df, proba)


def predictions_frame(clf: FusionClassifier, df: pd.DataFrame, proba: np.ndarray) -> pd.DataFrame:
    """One row per input row: ids, target (if present), ``prob_<class>``, ``prediction``."""
    spec = clf.spec
    keep = [c for c in (spec.group, spec.image, spec.target) if c and c in df.columns]
    out = df[keep].reset_index(drop=True).copy()
    for j, cls in enumerate(clf.classes_):
        out[f"prob_{cls}"] = proba[:, j]
    out["prediction"] = np.asarray(clf.classes_, dtype=object)[proba.argmax(axis=1)]
    return out


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=1, default=float))


def train_run(cfg: RunConfig, out: Path, resume: bool = False) -> dict[str, Any]:
    """Holdout train / valid / test run written to ``out``; returns the test metrics."""
    out.mkdir(parents=True, exist_ok=True)
    df, validation = load_data(cfg.data)
    split = holdout_split(df, cfg.data, seed=cfg.train.seed)
    log.info("split: %s", split.report.sizes)
    clf = FusionClassifier.from_config(cfg)
    clf.fit(df.iloc[split.train], df.iloc[split.valid], run_dir=out, resume=resume)
    metrics, preds = evaluate(clf, df.iloc[split.test])
    metrics.update(
        train_seconds=round(clf.train_seconds_, 2),
        peak_rss_mb=round(peak_rss_mb(), 1),
        epochs=clf.epochs_,
        data=validation.to_dict(),
        split=split.report.to_dict(),
    )
    (out / "config.yaml").write_text(cfg.to_yaml())
    _write_json(out / "metrics.json", metrics)
    preds.to_csv(out / "predictions.csv", index=False)
    clf.save(out)
    return metrics


def cv_run(cfg: RunConfig, folds: int, out: Path) -> dict[str, Any]:
    """K-fold cross-validation (grouped, stratified); validation carved from each training fold."""
    out.mkdir(parents=True, exist_ok=True)
    df, validation = load_data(cfg.data)
    groups, grouping = group_labels(df, cfg.data)
    splits, _ = kfold_splits(df, cfg.data, folds, seed=cfg.train.seed, groups=groups)
    y = df[cfg.data.target].astype(str).to_numpy()
    results, oof = [], []
    for i, (train_idx, test_idx) in enumerate(splits):
        rest, held = carve(
            y[train_idx], groups[train_idx], cfg.data.split.valid_size, cfg.train.seed
        )
        clf = FusionClassifier.from_config(cfg)
        clf.fit(df.iloc[train_idx[rest]], df.iloc[train_idx[held]], run_dir=out / f"fold{i}")
        metrics, preds = evaluate(clf, df.iloc[test_idx])
        metrics.update(fold=i, train_seconds=round(clf.train_seconds_, 2), epochs=clf.epochs_)
        results.append(metrics)
        oof.append(preds.assign(fold=i, row=test_idx))
        log.info("fold %d: accuracy %.4f, roc_auc %s", i, metrics["accuracy"], metrics["roc_auc"])
    summary = summarize_folds(results)
    summary.update(peak_rss_mb=round(peak_rss_mb(), 1), data=validation.to_dict(),
                   groups=grouping.to_dict(), folds_k=folds)
    (out / "config.yaml").write_text(cfg.to_yaml())
    _write_json(out / "cv_metrics.json", summary)
    pd.concat(oof).to_csv(out / "predictions.csv", index=False)
    write_manifest(out, ["config.yaml", "cv_metrics.json", "predictions.csv"])
    return summary


def evaluate_run(run: Path, table: Path, out: Path | None = None) -> dict[str, Any]:
    """Evaluate a saved model on a labelled table; writes metrics.json + predictions.csv."""
    clf = FusionClassifier.load(run)
    df, validation = load_table(table, clf.spec, check_images="exists", training=False)
    metrics, preds = evaluate(clf, df)
    metrics["data"] = validation.to_dict()
    target = out or run / "evaluation"
    target.mkdir(parents=True, exist_ok=True)
    _write_json(target / "metrics.json", metrics)
    preds.to_csv(target / "predictions.csv", index=False)
    return metrics


def predict_run(run: Path, table: Path, out_csv: Path) -> pd.DataFrame:
    """Predict every row of ``table`` (labels optional) into ``out_csv``."""
    clf = FusionClassifier.load(run)
    df, _ = load_table(table, prediction_spec(clf.spec), check_images="exists",
                       require_target=False, training=False)
    preds = predictions_frame(clf, df, clf.predict_proba(df))
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    preds.to_csv(out_csv, index=False)
    return preds
