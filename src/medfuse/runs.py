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
from medfuse.errors import ConfigError, check_option
from medfuse.estimators import FusionClassifier, prediction_spec
from medfuse.evaluation.metrics import classification_metrics, summarize_folds
from medfuse.hybrid import HEADS, HybridClassifier
from medfuse.io import write_manifest

log = logging.getLogger(__name__)

Estimator = FusionClassifier | HybridClassifier


def estimator_from_config(cfg: RunConfig) -> Estimator:
    """The estimator ``model.kind`` names: ``fusion`` or ``hybrid``."""
    if cfg.model.kind == "hybrid":
        return HybridClassifier.from_config(cfg)
    return FusionClassifier.from_config(cfg)


def load_model(run: Path) -> Estimator:
    """Load any saved medfuse model (the estimator class is read from ``estimator.json``)."""
    from medfuse.estimators import ESTIMATOR_FILE
    from medfuse.io import RunDirError

    meta = run / ESTIMATOR_FILE
    if not meta.is_file():
        raise RunDirError(
            f"{run} is not a medfuse model directory: {ESTIMATOR_FILE} is missing. Pass the "
            "--out folder of 'medfuse train' (for 'cv', one of its fold folders is not a model)."
        )
    try:
        name = json.loads(meta.read_text()).get("estimator")
    except json.JSONDecodeError as e:
        raise RunDirError(f"{meta} is not valid JSON ({e}); re-create the run.") from e
    if name == "HybridClassifier":
        return HybridClassifier.load(run)
    return FusionClassifier.load(run)


def _fit_seconds(clf: Estimator) -> float:
    if isinstance(clf, HybridClassifier):
        return float(clf.fit_seconds_ + getattr(clf, "feature_seconds_", 0.0))
    return float(clf.train_seconds_)


def peak_rss_mb() -> float:
    """Peak resident memory of this process (and finished children), in MB."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, kids) / 1024.0


def evaluate(clf: Estimator, df: pd.DataFrame) -> tuple[dict[str, Any], pd.DataFrame]:
    """Metrics (``metrics.json`` keys) and a predictions table for labelled rows ``df``."""
    proba = clf.predict_proba(df)
    y = clf.pre_.encode_target(df[clf.spec.target]).numpy()
    metrics = classification_metrics(y, proba)
    return metrics, predictions_frame(clf, df, proba)


def predictions_frame(clf: Estimator, df: pd.DataFrame, proba: np.ndarray) -> pd.DataFrame:
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
    clf = estimator_from_config(cfg)
    clf.fit(df.iloc[split.train], df.iloc[split.valid], run_dir=out, resume=resume)
    metrics, preds = evaluate(clf, df.iloc[split.test])
    metrics.update(
        train_seconds=round(_fit_seconds(clf), 2),
        peak_rss_mb=round(peak_rss_mb(), 1),
        epochs=getattr(clf, "epochs_", None),
        data=validation.to_dict(),
        split=split.report.to_dict(),
    )
    (out / "config.yaml").write_text(cfg.to_yaml())
    _write_json(out / "metrics.json", metrics)
    preds.to_csv(out / "predictions.csv", index=False)
    clf.save(out)
    return metrics


def cv_run(cfg: RunConfig, folds: int, out: Path,
           heads: list[str] | None = None) -> dict[str, Any]:
    """K-fold cross-validation (grouped, stratified); validation carved from each training fold.

    For hybrid models, ``heads`` (e.g. ``["lr", "rf", "xgboost"]``) are all fitted on the
    same features of the same folds; ``cv_metrics.json`` then also holds ``heads``:
    ``{name: {"folds", "mean", "std"}}`` and ``heads.csv`` one row per head. The top-level
    ``folds`` / ``mean`` / ``std`` are those of the first head.
    """
    if heads and cfg.model.kind != "hybrid":
        raise ConfigError(
            "--heads compares classical heads of hybrid models; this config has "
            f"model.kind={cfg.model.kind!r}. Use a hybrid config (e.g. br35h_hybrid) or "
            "--set model.kind=hybrid."
        )
    heads = heads or ([cfg.model.head] if cfg.model.kind == "hybrid" else [])
    for h in heads:
        check_option("head", h, HEADS)
    out.mkdir(parents=True, exist_ok=True)
    df, validation = load_data(cfg.data)
    groups, grouping = group_labels(df, cfg.data)
    splits, _ = kfold_splits(df, cfg.data, folds, seed=cfg.train.seed, groups=groups)
    y = df[cfg.data.target].astype(str).to_numpy()
    per_head: dict[str, list[dict[str, Any]]] = {h: [] for h in heads or ["model"]}
    oof = []
    for i, (train_idx, test_idx) in enumerate(splits):
        rest, held = carve(
            y[train_idx], groups[train_idx], cfg.data.split.valid_size, cfg.train.seed
        )
        train_df, valid_df = df.iloc[train_idx[rest]], df.iloc[train_idx[held]]
        test_df = df.iloc[test_idx]
        clf = estimator_from_config(cfg)
        if isinstance(clf, HybridClassifier):
            results = _cv_hybrid_fold(clf, heads, train_df, valid_df, test_df, out / f"fold{i}")
        else:
            clf.fit(train_df, valid_df, run_dir=out / f"fold{i}")
            metrics, preds = evaluate(clf, test_df)
            metrics.update(train_seconds=round(clf.train_seconds_, 2), epochs=clf.epochs_)
            results = {"model": (metrics, preds)}
        for name, (metrics, preds) in results.items():
            metrics["fold"] = i
            per_head[name].append(metrics)
            if name == next(iter(per_head)):
                oof.append(preds.assign(fold=i, row=test_idx))
            log.info("fold %d %s: accuracy %.4f, roc_auc %s", i, name, metrics["accuracy"],
                     metrics["roc_auc"])
    summaries = {name: summarize_folds(rows) for name, rows in per_head.items()}
    summary = dict(next(iter(summaries.values())))
    summary.update(peak_rss_mb=round(peak_rss_mb(), 1), data=validation.to_dict(),
                   groups=grouping.to_dict(), folds_k=folds)
    files = ["config.yaml", "cv_metrics.json", "predictions.csv"]
    if heads:
        summary["heads"] = summaries
        table = pd.DataFrame([{"head": name, **{k: s["mean"].get(k) for k in HEAD_TABLE_KEYS},
                               **{f"{k}_std": s["std"].get(k) for k in HEAD_TABLE_KEYS[:2]}}
                              for name, s in summaries.items()])
        table.to_csv(out / "heads.csv", index=False)
        files.append("heads.csv")
    (out / "config.yaml").write_text(cfg.to_yaml())
    _write_json(out / "cv_metrics.json", summary)
    pd.concat(oof).to_csv(out / "predictions.csv", index=False)
    write_manifest(out, files)
    return summary


HEAD_TABLE_KEYS = ("accuracy", "roc_auc", "balanced_accuracy", "pr_auc", "sensitivity",
                   "specificity", "fit_seconds", "feature_seconds")


def _cv_hybrid_fold(
    clf: HybridClassifier, heads: list[str], train: pd.DataFrame, valid: pd.DataFrame,
    test: pd.DataFrame, run_dir: Path,
) -> dict[str, tuple[dict[str, Any], pd.DataFrame]]:
    """Extract one fold's features once, then fit and score every head on them."""
    import time

    t0 = time.perf_counter()
    # the frozen extractor learns nothing: its validation rows are training rows too
    fit_rows = pd.concat([train, valid]) if clf.extractor == "frozen" else train
    X, y = clf.fit_features(fit_rows, valid if clf.extractor == "trained" else None, run_dir)
    X_test = clf.transform(test)
    feature_seconds = time.perf_counter() - t0
    y_test = clf.pre_.encode_target(test[clf.spec.target]).numpy()
    results = {}
    for h in heads:
        params = clf.head_params if h == heads[0] else None
        clf.fit_head(X, y, head=h, head_params=params)
        proba = clf.predict_proba_features(X_test)
        metrics = classification_metrics(y_test, proba)
        metrics.update(fit_seconds=round(clf.fit_seconds_, 3),
                       feature_seconds=round(feature_seconds, 2),
                       train_seconds=round(clf.fit_seconds_ + feature_seconds, 2))
        results[h] = (metrics, predictions_frame(clf, test, proba))
    return results


def evaluate_run(run: Path, table: Path, out: Path | None = None) -> dict[str, Any]:
    """Evaluate a saved model on a labelled table; writes metrics.json + predictions.csv."""
    clf = load_model(run)
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
    clf = load_model(run)
    df, _ = load_table(table, prediction_spec(clf.spec), check_images="exists",
                       require_target=False, training=False)
    preds = predictions_frame(clf, df, clf.predict_proba(df))
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    preds.to_csv(out_csv, index=False)
    return preds
