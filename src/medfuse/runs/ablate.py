"""``medfuse ablate``: single-modality models against the fused model on the same folds."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medfuse.config import RunConfig
from medfuse.data import kfold_splits, load_data
from medfuse.data.labels import check_fold_labels, label_names, stratification_target
from medfuse.data.splits import carve, group_labels
from medfuse.errors import ConfigError
from medfuse.io import atomic_write_text, write_manifest
from medfuse.runs.files import _write_csv, _write_json, peak_rss_mb
from medfuse.runs.models import estimator_from_config
from medfuse.scoring.metrics import classification_metrics

log = logging.getLogger(__name__)


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
    strat = stratification_target(df, cfg.data)  # (n, L) 0/1 for a multi-label target
    if cfg.data.multilabel:
        check_fold_labels(strat, list(cfg.data.targets or label_names(
            df[cfg.data.target], cfg.data.separator)), splits, groups)
    variants = ablation_specs(cfg)
    oof: dict[str, np.ndarray] = {}
    seconds: dict[str, float] = {}
    y = np.zeros(strat.shape if strat.ndim == 2 else len(df), dtype=int)
    for name, vcfg in variants.items():
        for i, (train_idx, test_idx) in enumerate(splits):
            rest, held = carve(strat[train_idx], groups[train_idx], cfg.data.split.valid_size,
                               cfg.train.seed)
            clf = estimator_from_config(vcfg)
            log.info("ablation: %s, fold %d of %d", name, i + 1, folds)
            clf.fit(df.iloc[train_idx[rest]], df.iloc[train_idx[held]],
                    run_dir=out / name / f"fold{i}")
            proba = clf.predict_proba(df.iloc[test_idx])
            if name not in oof:
                oof[name] = np.zeros((len(df), proba.shape[1]))
            oof[name][test_idx] = proba
            y[test_idx] = clf.pre_.encode_target(df.iloc[test_idx]).numpy()
            seconds[name] = seconds.get(name, 0.0) + clf.training_seconds()
    if cfg.data.multilabel:
        result = _multilabel_comparison(cfg, y, oof, groups, seconds, list(clf.classes_))
        return _write_ablation(out, cfg, folds, df, y_str, oof, validation, grouping, result)
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
    return _write_ablation(out, cfg, folds, df, y_str, oof, validation, grouping,
                           {"models": models, "comparison": comparison})


def _multilabel_comparison(cfg: RunConfig, y: np.ndarray, oof: dict[str, np.ndarray],
                           groups: np.ndarray, seconds: dict[str, float], labels: list[str]
                           ) -> dict[str, Any]:
    """Per variant: multi-label metrics (macro / micro, per label) with macro CIs; then,
    per label, the fused model against that label's best single modality (DeLong)."""
    from medfuse.evaluation.multilabel import multilabel_bootstrap_ci
    from medfuse.evaluation.stats import delong_test
    from medfuse.scoring.metrics import multilabel_metrics

    models: dict[str, dict[str, Any]] = {}
    for name, proba in oof.items():
        m = multilabel_metrics(y, proba, 0.5, labels)
        ci = multilabel_bootstrap_ci(y, proba, [0.5] * len(labels), labels, groups,
                                     cfg.evaluation.bootstrap or 1000, cfg.train.seed)
        m["ci95"] = {**ci["macro"], **{k: None for k in ("accuracy", "sensitivity",
                                                        "specificity")}}
        for label, interval in ci["per_label"].items():
            m["per_label"][label]["ci95"] = interval
        m["train_seconds"] = round(seconds[name], 2)
        models[name] = m
    singles = [m for m in cfg.data.modalities if models[m]["roc_auc"] is not None]
    best = max(singles, key=lambda m: models[m]["roc_auc"])
    per_label: dict[str, Any] = {}
    for j, label in enumerate(labels):
        if not 0 < y[:, j].sum() < len(y):
            continue
        aucs = {m: models[m]["per_label"][label]["roc_auc"] for m in singles}
        top = max(aucs, key=lambda m: aucs[m] if aucs[m] is not None else -1.0)
        d = delong_test(y[:, j], oof["fused"][:, j], oof[top][:, j])
        per_label[label] = {"best_single": top, "delta_roc_auc": d["delta"],
                            "p_value": d["p_value"], "delta_ci95": d["ci95"]}
    comparison = {"best_single": best, "multilabel": True, "test": "DeLong (paired), per label",
                  "delta_roc_auc": models["fused"]["roc_auc"] - models[best]["roc_auc"],
                  "per_label": per_label}
    return {"models": models, "comparison": comparison, "labels": labels}


def _write_ablation(out: Path, cfg: RunConfig, folds: int, df: pd.DataFrame,
                    y_str: np.ndarray, oof: dict[str, np.ndarray], validation: Any,
                    grouping: Any, result: dict[str, Any]) -> dict[str, Any]:
    """Write ``ablation.json`` / ``ablation.csv`` / ``predictions.csv`` / ``config.yaml``."""
    models = result["models"]
    result.update(folds_k=folds, data=validation.to_dict(), groups=grouping.to_dict(),
                  peak_rss_mb=round(peak_rss_mb(), 1))
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
        if "labels" in result:  # multi-label: one column per variant and label
            for j, label in enumerate(result["labels"]):
                preds[f"{name}_prob_{label}"] = proba[:, j]
        else:
            preds[f"{name}_prob"] = proba[:, -1]
    _write_csv(out / "predictions.csv", preds)
    atomic_write_text(out / "config.yaml", cfg.to_yaml())
    write_manifest(out, ["ablation.json", "ablation.csv", "predictions.csv", "config.yaml"])
    return result
