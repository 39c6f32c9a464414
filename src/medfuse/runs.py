"""The jobs behind ``medfuse train / cv / evaluate / predict``, writing run directories.

A training run directory holds ``config.yaml`` (resolved), ``model.safetensors``,
``preprocess.json``, ``estimator.json``, ``metrics.json``, ``predictions.csv``,
``manifest.json`` (sha256 of every file), ``logs/`` and ``checkpoints/``.
"""

from __future__ import annotations

import json
import logging
import resource
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medfuse.config import DataSpec, RunConfig
from medfuse.data import holdout_split, kfold_splits, load_data, load_table
from medfuse.data.splits import carve, group_labels
from medfuse.distributed import is_primary
from medfuse.errors import ConfigError, check_option
from medfuse.estimators import FusionClassifier, keep_missing
from medfuse.estimators.hybrid import HEADS, HybridClassifier
from medfuse.evaluation.families import error_families
from medfuse.io import (
    RunDirError,
    atomic_path,
    atomic_write_json,
    atomic_write_text,
    write_manifest,
)
from medfuse.scoring.metrics import classification_metrics, summarize_folds

log = logging.getLogger(__name__)

Estimator = FusionClassifier | HybridClassifier
#: metrics per modality subset (models trained for missing modalities)
SUBSETS_FILE = "modality_subsets.json"
#: ``medfuse cv``'s out-of-fold errors per split group (label-audit candidates)
FAMILIES_FILE = "error_families.csv"


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
    if not run.is_dir():
        raise RunDirError(f"run directory {run} does not exist: pass the --out folder of "
                          "'medfuse train'.")
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


def _precision(clf: Estimator) -> str | None:
    """The precision a fused model trained in (``auto`` resolved: it depends on the CPU)."""
    return clf.training_precision() if isinstance(clf, FusionClassifier) else None


def peak_rss_mb() -> float:
    """Peak resident memory of this process (and finished children), in MB."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, kids) / 1024.0


def evaluate(
    clf: Estimator, df: pd.DataFrame, bootstrap: int = 0, seed: int = 0,
    subgroups: Mapping[str, str] | None = None, bins: int = 4,
) -> tuple[dict[str, Any], pd.DataFrame]:
    """Metrics (``metrics.json`` keys) and a predictions table for labelled rows ``df``.

    Metrics use the model's calibrated probabilities and its decision threshold.
    ``bootstrap > 0`` adds ``ci95`` (95% CIs resampling patients, i.e. ``spec.group``,
    when the spec has one); ``subgroups`` adds ``subgroups`` (metrics per level / bin);
    a calibrated model also reports ``calibration`` (ECE before / after).
    """
    from medfuse.evaluation.stats import bootstrap_ci, subgroup_metrics
    from medfuse.scoring.metrics import expected_calibration_error

    raw = clf.predict_proba(df, calibrated=False)
    proba = clf.scale(raw)
    y = clf.pre_.encode_target(df[clf.spec.target]).numpy()
    metrics = classification_metrics(y, proba, threshold=clf.threshold_)
    groups = df[clf.spec.group].astype(str).to_numpy() if clf.spec.group else None
    if bootstrap:
        metrics["ci95"] = bootstrap_ci(y, proba, groups=groups, n_boot=bootstrap, seed=seed,
                                       threshold=clf.threshold_)
    if clf.temperature_ != 1.0:
        def ece(p: np.ndarray) -> float:
            return expected_calibration_error(p.argmax(1) == y, p.max(1))

        metrics["calibration"] = {"temperature": clf.temperature_,
                                  "ece_before": ece(raw), "ece_after": ece(proba)}
    if subgroups:
        metrics["subgroups"] = subgroup_metrics(
            df.reset_index(drop=True), y, proba, dict(subgroups), bins=bins,
            threshold=clf.threshold_
        )
    return metrics, predictions_frame(clf, df, proba, raw)


def modality_subsets(clf: Estimator, df: pd.DataFrame) -> dict[str, Any]:
    """Metrics of a model that handles missing modalities, per modality subset.

    ``removed``: for each non-empty subset of the model's modalities (key: the modalities
    used, e.g. ``tabular+text``), the metrics of every row of ``df`` predicted with the
    other modalities left out (``predict_proba(without=...)``); ``all`` uses everything.
    ``available``: rows grouped by the modalities they actually have (their empty cells),
    with ``n`` and the metrics of each group.
    """
    from itertools import combinations

    from medfuse.data.dataset import presence

    if not clf.handles_missing:
        raise ConfigError("per-modality-subset metrics need a model trained for missing "
                          "modalities (model.modality_dropout > 0)")
    modalities = list(clf.spec.modalities)
    y = clf.pre_.encode_target(df[clf.spec.target]).numpy()
    removed: dict[str, Any] = {}
    full = clf.predict_proba(df)
    for k in range(len(modalities), 0, -1):
        for used in combinations(modalities, k):
            without = [m for m in modalities if m not in used]
            proba = clf.predict_proba(df, without=without) if without else full
            removed["+".join(used)] = classification_metrics(y, proba, threshold=clf.threshold_)
    # which modalities each row really has (validated as for prediction: empty cells kept)
    from medfuse.data.validation import validate_table

    clean, _ = validate_table(df, clf.input_spec(), table="evaluate", check_images="exists",
                              require_target=False, training=False)
    has = presence(clean, clf.spec).astype(bool)
    names = np.array(["+".join(m for m, h in zip(modalities, row, strict=True) if h)
                      for row in has])
    available: dict[str, Any] = {}
    for name in sorted(set(names.tolist()), key=lambda n: (-n.count("+"), n)):
        rows = names == name
        available[name or "none"] = {
            "n": int(rows.sum()),
            **classification_metrics(y[rows], full[rows], threshold=clf.threshold_),
        }
    return {"modalities": modalities, "removed": removed, "available": available}


def predictions_frame(clf: Estimator, df: pd.DataFrame, proba: np.ndarray,
                      raw: np.ndarray | None = None) -> pd.DataFrame:
    """One row per input row: ids, target (if present), ``prob_<class>``, ``prediction``.

    With ``raw`` (uncalibrated probabilities that differ from ``proba``), also
    ``raw_prob_<class>``; gated fused models add the gate's weight of each modality
    (``gate_<modality>``).
    """
    spec = clf.spec
    keep = [c for c in (spec.group, spec.image, spec.target) if c and c in df.columns]
    out = df[keep].reset_index(drop=True).copy()
    for j, cls in enumerate(clf.classes_):
        out[f"prob_{cls}"] = proba[:, j]
    if raw is not None and not np.array_equal(raw, proba):
        for j, cls in enumerate(clf.classes_):
            out[f"raw_prob_{cls}"] = raw[:, j]
    out["prediction"] = clf.decide(proba)
    if isinstance(clf, FusionClassifier) and clf.fusion == "gated" and len(df):
        gates = clf.modality_weights(df)
        for m in gates.columns:
            out[f"gate_{m}"] = gates[m].to_numpy()
    return out


def _write_json(path: Path, data: dict[str, Any]) -> None:
    atomic_write_json(path, data, default=float)


def _write_csv(path: Path, df: pd.DataFrame) -> None:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)


def train_run(cfg: RunConfig, out: Path, resume: bool = False) -> dict[str, Any]:
    """Holdout train / valid / test run written to ``out``; returns the test metrics.

    The temperature and threshold are fitted on the validation rows; the test rows
    give ``metrics.json`` (with bootstrap CIs), ``predictions.csv`` and
    ``subgroups.json``; ``data_report.json`` describes the whole table; ``report.html``
    shows it all.
    """
    from medfuse.evaluation.report import build_report, data_report

    out.mkdir(parents=True, exist_ok=True)
    df, validation = load_data(cfg.data)
    split = holdout_split(df, cfg.data, seed=cfg.train.seed)
    log.info("split: %s", split.report.sizes)
    clf = estimator_from_config(cfg)
    valid = df.iloc[split.valid]
    clf.fit(df.iloc[split.train], valid, run_dir=out, resume=resume)
    if not getattr(clf, "is_primary_", True):
        return {}  # another DDP process: the first one evaluates and writes the run directory
    ev = cfg.evaluation
    clf.calibrate(valid, temperature=ev.calibrate, threshold=ev.threshold,
                  value=ev.threshold_value)
    metrics, preds = evaluate(clf, df.iloc[split.test], bootstrap=ev.bootstrap,
                              seed=cfg.train.seed, subgroups=ev.subgroups,
                              bins=ev.subgroup_bins)
    subgroups = metrics.pop("subgroups", None)
    metrics.update(
        threshold=clf.threshold_,
        train_seconds=round(_fit_seconds(clf), 2),
        peak_rss_mb=round(peak_rss_mb(), 1),
        epochs=getattr(clf, "epochs_", None),
        precision=_precision(clf),
        data=validation.to_dict(),
        split=split.report.to_dict(),
    )
    atomic_write_text(out / "config.yaml", cfg.to_yaml())
    _write_json(out / "metrics.json", metrics)
    _write_csv(out / "predictions.csv", preds)
    if subgroups is not None:
        _write_json(out / "subgroups.json", subgroups)
    if clf.handles_missing:
        _write_json(out / SUBSETS_FILE, modality_subsets(clf, df.iloc[split.test]))
    duplicates = {k: v for k, v in split.report.to_dict().items() if k != "sizes"}
    _write_json(out / "data_report.json", data_report(df, cfg.data, duplicates=duplicates))
    clf.save(out)
    build_report(out)
    return metrics


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
    y = df[cfg.data.target].astype(str).to_numpy()
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
            _start_fold(fold_dir, key)
            clf = estimator_from_config(cfg)
            if isinstance(clf, HybridClassifier):
                results = _cv_hybrid_fold(clf, heads, train_df, valid_df, test_df, fold_dir)
            else:
                last = fold_dir / "checkpoints" / "last.ckpt"
                continued = earlier is not None and last.is_file()
                if continued:
                    log.info("fold %d: continuing its training from %s", i, last)
                clf.fit(train_df, valid_df, run_dir=fold_dir, resume=continued)
                metrics, preds = evaluate(clf, test_df)
                metrics.update(train_seconds=round(clf.train_seconds_, 2), epochs=clf.epochs_,
                               precision=_precision(clf))
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
    summary.update(peak_rss_mb=round(peak_rss_mb(), 1), data=validation.to_dict(),
                   groups=grouping.to_dict(), folds_k=folds)
    files = ["config.yaml", "cv_metrics.json", "predictions.csv", FAMILIES_FILE]
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
    write_manifest(out, files)
    return summary


#: a cross-validation fold's identity and, once finished, its metrics (``out/fold<i>/``)
FOLD_FILE = "cv_fold.json"
FOLD_PREDICTIONS = "test_predictions.csv"


def _fold_key(cfg: RunConfig, folds: int, heads: list[str], test_idx: np.ndarray) -> str:
    """What a fold's result depends on: the config, the fold count, the heads, its test rows."""
    import hashlib

    blob = json.dumps({"config": cfg.to_yaml(), "folds": folds, "heads": heads,
                       "test_rows": np.asarray(test_idx).tolist()}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def _earlier_fold(fold_dir: Path, key: str) -> dict[str, Any] | None:
    """The fold file an earlier run of this same cross-validation left, if any.

    A fold file of another cross-validation (``key`` differs) is refused.
    """
    path = fold_dir / FOLD_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise RunDirError(f"{path} is not valid JSON ({e}): delete {fold_dir} to run that "
                          "fold again.") from e
    if not isinstance(data, dict) or not isinstance(data.get("key"), str):
        raise RunDirError(f"{path} is not a medfuse cross-validation fold file: delete "
                          f"{fold_dir} to run that fold again.")
    if data["key"] != key:
        raise ConfigError(
            f"cannot resume: {path} belongs to a cross-validation with another "
            "config, fold count, head list or data. Use a new --out folder, or run without "
            "--resume to start this one again."
        )
    return data


FoldResults = dict[str, tuple[dict[str, Any], pd.DataFrame]]


def _finished_results(fold_dir: Path, earlier: dict[str, Any]) -> FoldResults | None:
    """The results kept in an earlier run's fold file; None if that fold never finished."""
    if not earlier.get("finished"):
        return None
    preds_path = fold_dir / FOLD_PREDICTIONS
    if not preds_path.is_file():
        raise RunDirError(f"{preds_path} is missing although {fold_dir / FOLD_FILE} says the "
                          f"fold finished: delete {fold_dir} to run that fold again.")
    results = earlier.get("results")
    if not isinstance(results, dict) or not results:
        raise RunDirError(f"{fold_dir / FOLD_FILE} says the fold finished but holds no "
                          f"results: delete {fold_dir} to run that fold again.")
    preds = pd.read_csv(preds_path, dtype=str, keep_default_na=False)
    first = next(iter(results))
    return {name: (m, preds if name == first else pd.DataFrame()) for name, m in results.items()}


def _start_fold(fold_dir: Path, key: str) -> None:
    """Mark ``fold_dir`` as this cross-validation's, not finished yet."""
    if is_primary():
        fold_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(fold_dir / FOLD_FILE, {"key": key, "finished": False})


def _finish_fold(fold_dir: Path, key: str, results: FoldResults) -> None:
    """Keep a finished fold: its test predictions (first head), then its metrics."""
    first = next(iter(results))
    _write_csv(fold_dir / FOLD_PREDICTIONS, results[first][1])
    _write_json(fold_dir / FOLD_FILE, {"key": key, "finished": True,
                                       "results": {n: m for n, (m, _) in results.items()}})


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


def _outside_ok(spec: DataSpec, allow: bool) -> DataSpec:
    """``spec``, accepting image paths outside the table's folder if ``allow``."""
    return spec.model_copy(update={"allow_outside_paths": True}) if allow else spec


def evaluate_run(run: Path, table: Path, out: Path | None = None,
                 allow_outside_paths: bool = False) -> dict[str, Any]:
    """Evaluate a saved model on a labelled table; writes metrics.json + predictions.csv.

    ``allow_outside_paths`` accepts image paths outside the table's folder.
    """
    clf = load_model(run)
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


def ablation_specs(cfg: RunConfig) -> dict[str, RunConfig]:
    """One config per single modality present, plus ``fused`` (the config as is)."""
    spec = cfg.data
    empty: dict[str, Any] = {"image": None, "tabular": {}, "text": None}
    out = {}
    for m in spec.modalities:
        keep = {k: v for k, v in empty.items() if k != m}
        out[m] = cfg.model_copy(update={"data": spec.model_copy(update=keep)})
    out["fused"] = cfg
    return out


def ablate_run(cfg: RunConfig, folds: int, out: Path) -> dict[str, Any]:
    """Single-modality models vs the fused model on the same grouped folds.

    Out-of-fold probabilities of every model give its metrics with grouped-bootstrap
    95% CIs; the fused model is compared with the best single modality (by ROC AUC)
    by DeLong's paired test and a paired (patient-)bootstrap of the AUC difference.
    Writes ``ablation.json``, ``ablation.csv`` and ``predictions.csv``.
    """
    from medfuse.evaluation.stats import bootstrap_ci, delong_test, paired_bootstrap

    if len(cfg.data.modalities) < 2:
        raise ConfigError(
            f"ablation compares modalities, and this config uses only "
            f"{cfg.data.modalities}: add an image, tabular or text column to data."
        )
    out.mkdir(parents=True, exist_ok=True)
    df, validation = load_data(cfg.data)
    groups, grouping = group_labels(df, cfg.data)
    splits, _ = kfold_splits(df, cfg.data, folds, seed=cfg.train.seed, groups=groups)
    y_str = df[cfg.data.target].astype(str).to_numpy()
    variants = ablation_specs(cfg)
    oof: dict[str, np.ndarray] = {}
    seconds: dict[str, float] = {}
    y = np.zeros(len(df), dtype=int)
    for name, vcfg in variants.items():
        for i, (train_idx, test_idx) in enumerate(splits):
            rest, held = carve(y_str[train_idx], groups[train_idx], cfg.data.split.valid_size,
                               cfg.train.seed)
            clf = estimator_from_config(vcfg)
            log.info("ablation: %s, fold %d of %d", name, i + 1, folds)
            clf.fit(df.iloc[train_idx[rest]], df.iloc[train_idx[held]],
                    run_dir=out / name / f"fold{i}")
            proba = clf.predict_proba(df.iloc[test_idx])
            if name not in oof:
                oof[name] = np.zeros((len(df), proba.shape[1]))
            oof[name][test_idx] = proba
            y[test_idx] = clf.pre_.encode_target(df[cfg.data.target].iloc[test_idx]).numpy()
            seconds[name] = seconds.get(name, 0.0) + _fit_seconds(clf)
    models: dict[str, dict[str, Any]] = {}
    for name, proba in oof.items():
        m = classification_metrics(y, proba)
        m["ci95"] = bootstrap_ci(y, proba, groups=groups, n_boot=cfg.evaluation.bootstrap or
                                 1000, seed=cfg.train.seed)
        m["train_seconds"] = round(seconds[name], 2)
        models[name] = m
    singles = [m for m in cfg.data.modalities if models[m]["roc_auc"] is not None]
    best = max(singles, key=lambda m: models[m]["roc_auc"])
    comparison: dict[str, Any] = {"best_single": best}
    if oof["fused"].shape[1] == 2:
        d = delong_test(y, oof["fused"][:, 1], oof[best][:, 1])
        b = paired_bootstrap(y, oof["fused"], oof[best], groups=groups,
                             seed=cfg.train.seed)
        comparison.update(delta_roc_auc=d["delta"], p_value=d["p_value"],
                          delta_ci95=d["ci95"], test="DeLong (paired)",
                          bootstrap_p_value=b["p_value"], bootstrap_delta_ci95=b["ci95"])
    result = {"models": models, "comparison": comparison, "folds_k": folds,
              "data": validation.to_dict(), "groups": grouping.to_dict(),
              "peak_rss_mb": round(peak_rss_mb(), 1)}
    _write_json(out / "ablation.json", result)
    rows = []
    for name, m in models.items():
        row: dict[str, Any] = {"model": name}
        for k in ("accuracy", "roc_auc", "pr_auc", "sensitivity", "specificity"):
            ci = (m.get("ci95") or {}).get(k) or [None, None]
            row.update({k: m[k], f"{k}_lo": ci[0], f"{k}_hi": ci[1]})
        rows.append(row)
    _write_csv(out / "ablation.csv", pd.DataFrame(rows))
    preds = pd.DataFrame({"row": np.arange(len(df)), "target": y_str})
    for name, proba in oof.items():
        preds[f"{name}_prob"] = proba[:, -1]
    _write_csv(out / "predictions.csv", preds)
    atomic_write_text(out / "config.yaml", cfg.to_yaml())
    write_manifest(out, ["ablation.json", "ablation.csv", "predictions.csv", "config.yaml"])
    return result
