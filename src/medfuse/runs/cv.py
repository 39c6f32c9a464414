"""``medfuse cv``: grouped, stratified k-fold cross-validation, resumable fold by fold.

For hybrid models several classical heads can be compared on the same features of the
same folds (:func:`_cv_hybrid_fold`); finished folds are kept by :mod:`medfuse.runs.folds`.
"""

from __future__ import annotations

import logging
import time
import warnings
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd

from medfuse.config import RunConfig
from medfuse.data import kfold_splits, load_data
from medfuse.data.labels import check_fold_labels, label_names, stratification_target
from medfuse.data.splits import carve, group_labels
from medfuse.distributed import is_primary
from medfuse.errors import ConfigError, check_option
from medfuse.estimators import FusionClassifier
from medfuse.estimators.base import CalibrationWarning
from medfuse.estimators.hybrid import HEADS, HybridClassifier
from medfuse.evaluation.evaluate import evaluate, predictions_frame, score
from medfuse.evaluation.families import error_families
from medfuse.evaluation.label_audit import ISSUE_FAMILIES_FILE, ISSUES_FILE
from medfuse.evaluation.report import build_cv_report
from medfuse.io import atomic_write_text, write_manifest
from medfuse.runs.audit import audit_predictions
from medfuse.runs.cleaning import (
    cross_validated_proba,
    fit_around_issues,
    fit_head_around,
    hybrid_issues,
)
from medfuse.runs.files import FAMILIES_FILE, _write_csv, _write_json, peak_rss_mb
from medfuse.runs.folds import (
    FOLD_FILE,
    FoldResults,
    _earlier_fold,
    _finish_fold,
    _finished_results,
    _fold_key,
    _start_fold,
)
from medfuse.runs.models import estimator_from_config
from medfuse.scoring.conformal import conformal_metrics, missing_classes_problem, parse_sets
from medfuse.scoring.metrics import summarize_folds

log = logging.getLogger(__name__)

#: the columns of ``heads.csv`` (means; the first two also with their ``_std``)
HEAD_TABLE_KEYS = ("accuracy", "roc_auc", "balanced_accuracy", "pr_auc", "sensitivity",
                   "specificity", "fit_seconds", "feature_seconds")


def cv_run(cfg: RunConfig, folds: int, out: Path, heads: list[str] | None = None,
           resume: bool = False, only: list[int] | None = None) -> dict[str, Any]:
    """K-fold cross-validation (grouped, stratified); validation carved from each training fold.

    For hybrid models, ``heads`` (e.g. ``["lr", "rf", "xgboost"]``) are all fitted on the
    same features of the same folds; ``cv_metrics.json`` then also holds ``heads``:
    ``{name: {"folds", "mean", "std"}}`` and ``heads.csv`` one row per head. The top-level
    ``folds`` / ``mean`` / ``std`` are those of the first head.

    ``predictions.csv`` holds every row once, out of fold, with its ``fold``, ``row``
    (position in the table) and ``split_group`` (patient / near-duplicate group).
    :data:`FAMILIES_FILE` ranks the groups holding errors, and ``cv_metrics.json``'s
    ``error_families`` says how many were missed whole (:func:`error_families`).

    Each finished fold is kept in ``out/fold<i>/`` (:data:`FOLD_FILE` + its test
    predictions). With ``resume=True`` a fold finished by an earlier, interrupted run of the
    same config, fold count, heads and split is read back instead of re-trained, and a fused
    fold killed mid-training continues from its ``checkpoints/last.ckpt``; a fold folder
    written by another config is refused.

    ``only`` (e.g. ``[2, 4]``) trains just those folds, so the folds of one
    cross-validation can run in separate processes or machines on the same ``out``. The
    other folds are read back when an earlier run finished them, never trained; until
    every fold is finished the result is ``{"partial": True, "folds": [...], "missing":
    [...]}`` and ``cv_metrics.json`` is not written.
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
    wrong = sorted({i for i in only or [] if not 0 <= i < folds})
    if wrong:
        raise ConfigError(f"--only names fold(s) {wrong}, but folds are numbered 0 to "
                          f"{folds - 1} with --folds {folds}.")
    out.mkdir(parents=True, exist_ok=True)
    df, validation = load_data(cfg.data)
    groups, grouping = group_labels(df, cfg.data)
    splits, _ = kfold_splits(df, cfg.data, folds, seed=cfg.train.seed, groups=groups)
    y = stratification_target(df, cfg.data)  # labels, or (n, L) 0/1 for multi-label
    multilabel = cfg.data.multilabel
    if multilabel and cfg.evaluation.conformal_alpha is not None:
        log.info("multi-label target: no conformal prediction sets (they are single-label "
                 "here); every label is scored at its own threshold instead")
    if multilabel:  # before any fold trains: every label on both sides of each training fold
        labels = list(cfg.data.targets or label_names(df[cfg.data.target], cfg.data.separator))
        check_fold_labels(y, labels, splits, groups)
    per_head: dict[str, list[dict[str, Any]]] = {h: [] for h in heads or ["model"]}
    oof = []
    missing: list[int] = []
    frozen_hybrid = cfg.model.kind == "hybrid" and cfg.model.extractor == "frozen"
    for i, (train_idx, test_idx) in enumerate(splits):
        fold_dir = out / f"fold{i}"
        key = _fold_key(cfg, folds, list(per_head), test_idx)
        skipped = only is not None and i not in only
        earlier = _earlier_fold(fold_dir, key) if resume or skipped else None
        results = _finished_results(fold_dir, earlier) if earlier else None
        if results is not None:
            log.info("fold %d: finished by an earlier run, read from %s", i, fold_dir / FOLD_FILE)
        elif skipped:
            missing.append(i)
            continue
        else:
            if frozen_hybrid:  # nothing stops early: every training row fits the head
                rest, held = np.arange(len(train_idx)), np.arange(0)
            else:
                rest, held = carve(
                    y[train_idx], groups[train_idx], cfg.data.split.valid_size, cfg.train.seed
                )
            train_df, valid_df = df.iloc[train_idx[rest]], df.iloc[train_idx[held]]
            test_df = df.iloc[test_idx]
            alpha = None if multilabel else cfg.evaluation.conformal_alpha
            problem = None if alpha is None or not len(held) else missing_classes_problem(
                valid_df[cfg.data.target].tolist(),
                df.iloc[train_idx][cfg.data.target].tolist(), f"fold {i}'s validation rows")
            if problem:  # one fold's small validation split does not stop the others
                warnings.warn(f"{problem} Fold {i} makes no prediction sets.",
                              CalibrationWarning, stacklevel=2)
                alpha = None
            _start_fold(fold_dir, key)
            clf = estimator_from_config(cfg)
            fit_groups = groups[train_idx[np.r_[rest, held]]]
            if clf.kind == "hybrid":
                results = _cv_hybrid_fold(cast(HybridClassifier, clf), heads, train_df,
                                          valid_df, test_df, fold_dir, fit_groups,
                                          cfg.train.label_issues, alpha)
            else:
                fused = cast(FusionClassifier, clf)
                last = fold_dir / "checkpoints" / "last.ckpt"
                continued = earlier is not None and last.is_file()
                if continued:
                    log.info("fold %d: continuing its training from %s", i, last)
                found = fit_around_issues(fused, cfg, train_df, valid_df,
                                          groups[train_idx[rest]], fold_dir, continued)
                if alpha is not None and is_primary():
                    fused.fit_conformal(valid_df, alpha)
                metrics, preds = evaluate(fused, test_df)
                metrics.update(train_seconds=round(fused.training_seconds(), 2),
                               epochs=fused.epochs_, precision=fused.training_precision())
                if found is not None:
                    metrics["label_issues_train"] = found.to_dict()
                results = {"model": (metrics, preds)}
            if not getattr(clf, "is_primary_", True):
                continue  # another DDP process: the first one keeps the fold
            _finish_fold(fold_dir, key, results)
        for name, (metrics, preds) in results.items():
            metrics["fold"] = i
            per_head[name].append(metrics)
            if name == next(iter(per_head)):
                oof.append(preds.assign(fold=i, row=test_idx, split_group=groups[test_idx]))
            log.info("fold %d %s: accuracy %.4f, roc_auc %s", i, name, metrics["accuracy"],
                     metrics["roc_auc"])
    if not is_primary():
        return {}  # another DDP process: the first one writes the results
    if missing:
        return {"partial": True, "folds": next(iter(per_head.values())), "missing": missing}
    summaries = {name: summarize_folds(rows) for name, rows in per_head.items()}
    summary = dict(next(iter(summaries.values())))
    predictions = pd.concat(oof)
    families, summary["error_families"] = error_families(predictions, cfg.data.target,
                                                         cfg.data.image)
    issues, issue_families, summary["label_issues"] = audit_predictions(
        predictions, cfg, next(iter(per_head.values())), df=df)
    pooled = pooled_conformal(predictions, cfg, next(iter(per_head.values())))
    if pooled is not None:
        summary["conformal"] = pooled
    if multilabel:  # every label over every out-of-fold row; per_label: its labels
        summary["pooled"] = pooled_multilabel(predictions, cfg)
        summary["per_label"] = summary["pooled"]["per_label"]
    summary.update(peak_rss_mb=round(peak_rss_mb(), 1), data=validation.to_dict(),
                   groups=grouping.to_dict(), folds_k=folds)
    files = ["config.yaml", "cv_metrics.json", "predictions.csv", FAMILIES_FILE, ISSUES_FILE,
             ISSUE_FAMILIES_FILE]
    if heads:
        summary["heads"] = summaries
        table = pd.DataFrame([{"head": name, **{k: s["mean"].get(k) for k in HEAD_TABLE_KEYS},
                               **{f"{k}_std": s["std"].get(k) for k in HEAD_TABLE_KEYS[:2]}}
                              for name, s in summaries.items()])
        _write_csv(out / "heads.csv", table)
        files.append("heads.csv")
    atomic_write_text(out / "config.yaml", cfg.to_yaml())
    _write_json(out / "cv_metrics.json", summary)
    _write_csv(out / "predictions.csv", predictions)
    _write_csv(out / FAMILIES_FILE, families)
    _write_csv(out / ISSUES_FILE, issues)
    _write_csv(out / ISSUE_FAMILIES_FILE, issue_families)
    write_manifest(out, files)
    build_cv_report(out)
    return summary


def pooled_multilabel(predictions: pd.DataFrame, cfg: RunConfig, bootstrap: int = 1000
                      ) -> dict[str, Any]:
    """``cv_metrics.json["pooled"]`` of a multi-label cross-validation: every out-of-fold
    row scored at once (:func:`~medfuse.scoring.metrics.multilabel_metrics` at each fold's
    own thresholds, i.e. the ``pred_<label>`` decisions), with patient-bootstrap 95 % CIs
    per label and of the macro ROC / PR AUC. The per-label table and the ROC curves of the
    report are built from it."""
    from medfuse.data.labels import multi_hot
    from medfuse.evaluation.multilabel import multilabel_bootstrap_ci
    from medfuse.scoring.metrics import multilabel_metrics

    labels = [c[len("pred_"):] for c in predictions.columns if str(c).startswith("pred_")]
    y = multi_hot(predictions[cfg.data.target].fillna("").astype(str), labels,
                  cfg.data.separator, cfg.data.target)
    proba = predictions[[f"prob_{c}" for c in labels]].to_numpy(dtype=np.float64)
    decided = predictions[[f"pred_{c}" for c in labels]].to_numpy(dtype=int)
    from sklearn.metrics import f1_score

    scored = multilabel_metrics(y, proba, 0.5, labels)
    ranking = ("roc_auc", "pr_auc", "brier", "ece", "positives", "prevalence")
    out: dict[str, Any] = {k: scored[k] for k in (
        "n", "n_labels", "roc_auc", "pr_auc", "roc_auc_macro", "pr_auc_macro", "roc_auc_micro",
        "pr_auc_micro", "brier", "ece")}
    out["per_label"] = {}
    # decisions were made at each fold's own thresholds: score them as made
    for j, name in enumerate(labels):
        d, t = decided[:, j], y[:, j]
        tp, tn = int(((d == 1) & (t == 1)).sum()), int(((d == 0) & (t == 0)).sum())
        pos, neg, said = int(t.sum()), int(len(t) - t.sum()), int(d.sum())
        out["per_label"][name] = {
            **{k: scored["per_label"][name][k] for k in ranking},
            "accuracy": (tp + tn) / len(t) if len(t) else None,
            "sensitivity": tp / pos if pos else None,
            "specificity": tn / neg if neg else None,
            "ppv": tp / said if said else None,
            "npv": tn / (len(t) - said) if len(t) - said else None,
            "f1": float(f1_score(t, d, zero_division=0)),
        }

    def macro(key: str) -> float | None:
        values = [v[key] for v in out["per_label"].values() if v[key] is not None]
        return float(np.mean(values)) if values else None

    out.update(accuracy=float((decided == y).mean()) if len(y) else None,
               subset_accuracy=float((decided == y).all(axis=1).mean()) if len(y) else None,
               sensitivity=macro("sensitivity"), specificity=macro("specificity"),
               f1_macro=float(f1_score(y, decided, average="macro", zero_division=0)),
               f1_micro=float(f1_score(y, decided, average="micro", zero_division=0)),
               thresholds="per fold (each fold's validation rows)")
    groups = predictions["split_group"].astype(str).to_numpy() \
        if "split_group" in predictions else None
    ci = multilabel_bootstrap_ci(y, proba, [0.5] * len(labels), labels, groups, bootstrap,
                                 cfg.train.seed)
    out["ci95"] = ci["macro"]
    for name, interval in ci["per_label"].items():
        out["per_label"][name]["ci95"] = {k: interval[k] for k in ("roc_auc", "pr_auc")
                                          if k in interval}
    return out


def pooled_conformal(predictions: pd.DataFrame, cfg: RunConfig,
                     folds: list[dict[str, Any]]) -> dict[str, Any] | None:
    """``cv_metrics.json["conformal"]``: coverage and set sizes of the out-of-fold sets.

    Pooled over the folds that made sets (``folds_without_sets`` lists the others: a
    validation split without some class); None when none did
    (``evaluation.conformal_alpha: null``).
    """
    alpha = cfg.evaluation.conformal_alpha
    with_sets = [f["fold"] for f in folds if f.get("conformal")]
    if alpha is None or "prediction_set" not in predictions.columns or not with_sets:
        return None
    without = sorted(f["fold"] for f in folds if not f.get("conformal"))
    predictions = predictions[predictions["fold"].astype(int).isin(with_sets)]
    classes = [c[len("prob_"):] for c in predictions.columns
               if c.startswith("prob_") and not c.startswith("raw_prob_")]
    index = {c: j for j, c in enumerate(classes)}
    y = np.array([index[str(v)] for v in predictions[cfg.data.target]])
    sets = parse_sets(predictions["prediction_set"].tolist(), classes)
    subsets = (predictions["modalities"].fillna("").astype(str).to_numpy()
               if "modalities" in predictions.columns else None)
    out = conformal_metrics(y, sets, classes, alpha, subsets)
    out["folds_without_sets"] = without
    return out


def _cv_hybrid_fold(
    clf: HybridClassifier, heads: list[str], train: pd.DataFrame, valid: pd.DataFrame,
    test: pd.DataFrame, run_dir: Path, fit_groups: np.ndarray, handling: str = "keep",
    alpha: float | None = None,
) -> FoldResults:
    """Extract one fold's features once, then fit and score every head on them.

    ``fit_groups`` are the split groups of ``train`` then ``valid``; with ``handling``
    ``drop`` / ``downweight`` the label issues of the rows the head is fitted on are found
    once (with the configured head) and every head is fitted around them.

    With ``alpha``, the first head's conformal sets are calibrated on the validation rows
    (a trained extractor) or, where the frozen extractor holds no rows out, on the
    grouped cross-validated probabilities of the head on its own training rows
    (cross-conformal calibration; :func:`~medfuse.runs.cleaning.cross_validated_proba`).
    """
    t0 = time.perf_counter()
    # the frozen extractor learns nothing: its validation rows are training rows too
    fit_rows = pd.concat([train, valid]) if clf.extractor == "frozen" else train
    X, y = clf.fit_features(fit_rows, valid if clf.extractor == "trained" else None, run_dir)
    X_test = clf.transform(test)
    feature_seconds = time.perf_counter() - t0
    y_test = clf.pre_.encode_target(test).numpy()
    if clf.multilabel:
        y_test = y_test.astype(int)
    found = None
    if handling != "keep":
        found = hybrid_issues(clf, X, y, fit_groups[:len(y)], handling)
    results = {}
    for h in heads:
        params = clf.head_params if h == heads[0] else None
        if found is None:
            clf.fit_head(X, y, head=h, head_params=params)
        else:
            fit_head_around(clf, X, y, found, head=h, head_params=params)
        if alpha is not None and h == heads[0]:
            if len(valid) and clf.extractor == "trained":
                clf.fit_conformal(valid, alpha)
            else:
                oof = cross_validated_proba(clf, X, y, fit_groups[:len(y)], clf.seed)
                clf.fit_conformal_proba(oof, y, alpha, clf.available_modalities(fit_rows))
        elif alpha is not None:
            clf.conformal_ = None  # sets belong to the first head only
            clf._conformal_sets = None
        proba = clf.predict_proba_features(X_test)
        sets = clf.prediction_sets(test, proba)
        metrics = score(clf, y_test, proba)
        metrics.update(fit_seconds=round(clf.fit_seconds_, 3),
                       feature_seconds=round(feature_seconds, 2),
                       train_seconds=round(clf.fit_seconds_ + feature_seconds, 2))
        if found is not None:
            metrics["label_issues_train"] = found.to_dict()
        if sets is not None and alpha is not None:
            metrics["conformal"] = conformal_metrics(y_test, sets, clf.classes_, alpha)
        results[h] = (metrics, predictions_frame(clf, test, proba, sets=sets))
    return results
