"""IU X-ray hybrid: head settings compared on the same in-fold features of the same 5 folds.

Usage:  .venv/bin/python benchmarks/iu_hybrid_heads.py [--text-features none]
        [--no-extractor-tabular] [--out DIR]

The folds, the validation carve and the in-fold word-CNN extractor are exactly those of
``medfuse cv iu_xray_hybrid --folds 5``; each fold's features are extracted once and every
head variant below is fitted on them (issue 4 target: XGBoost head ROC AUC >= 0.99).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from medfuse.config import load_config
from medfuse.data import kfold_splits, load_data
from medfuse.data.splits import carve, group_labels
from medfuse.evaluation.metrics import classification_metrics
from medfuse.hybrid import HybridClassifier

BASE = {  # the first shipped head
   "n_estimators": 800, "max_depth": 2, "learning_rate": 0.02, "subsample": 0.8}
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "xgb_base": ("xgboost", BASE),
    "xgb_colsample0.5": ("xgboost", {**BASE, "colsample_bytree": 0.5}),
    "xgb_colsample0.3_1500": ("xgboost", {**BASE, "colsample_bytree": 0.3,
                                          "n_estimators": 1500, "learning_rate": 0.01}),
    "xgb_d3_mcw5": ("xgboost", {**BASE, "max_depth": 3, "min_child_weight": 5,
                                "colsample_bytree": 0.5}),
    "xgb_lambda10": ("xgboost", {**BASE, "reg_lambda": 10.0, "colsample_bytree": 0.5}),
    "xgb_d1_2000": ("xgboost", {**BASE, "max_depth": 1, "n_estimators": 2000,
                                "learning_rate": 0.05}),
    "xgb_lambda10_npt4": ("xgboost", {**BASE, "reg_lambda": 10.0, "colsample_bytree": 0.5,
                                      "num_parallel_tree": 4}),
    "xgb_lambda10_1600": ("xgboost", {**BASE, "reg_lambda": 10.0, "colsample_bytree": 0.5,
                                      "n_estimators": 1600, "learning_rate": 0.01}),
    "lr_C0.1": ("lr", {"C": 0.1}),
    "lr_C1": ("lr", {"C": 1.0}),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--text-features", default="none")
    ap.add_argument("--no-extractor-tabular", action="store_true",
                    help="train the in-fold network on the text only (the first config)")
    ap.add_argument("--out", type=Path, default=Path("runs/bench-iu-hybrid-heads"))
    args = ap.parse_args()
    tabular = not args.no_extractor_tabular
    cfg = load_config("iu_xray_hybrid", [f"model.text_features={args.text_features}",
                                         f"model.extractor_tabular={tabular}"])
    df, _ = load_data(cfg.data)
    groups, _ = group_labels(df, cfg.data)
    splits, _ = kfold_splits(df, cfg.data, args.folds, seed=cfg.train.seed, groups=groups)
    y_all = df[cfg.data.target].astype(str).to_numpy()
    variants = {"xgb_shipped": (cfg.model.head, dict(cfg.model.head_params)), **VARIANTS}
    scores: dict[str, list[float]] = {k: [] for k in variants}
    for i, (train_idx, test_idx) in enumerate(splits):
        rest, held = carve(y_all[train_idx], groups[train_idx], cfg.data.split.valid_size,
                           cfg.train.seed)
        train, valid = df.iloc[train_idx[rest]], df.iloc[train_idx[held]]
        test = df.iloc[test_idx]
        clf = HybridClassifier.from_config(cfg, progress=False)
        X, y = clf.fit_features(train, valid)
        X_test = clf.transform(test)
        y_test = clf.pre_.encode_target(test[cfg.data.target]).numpy()
        for name, (head, params) in variants.items():
            clf.fit_head(X, y, head=head, head_params=params)
            m = classification_metrics(y_test, clf.predict_proba_features(X_test))
            scores[name].append(float(m["roc_auc"]))
        print(f"fold {i}: " + ", ".join(f"{k} {v[-1]:.4f}" for k, v in scores.items()),
              flush=True)
    summary = {k: {"folds": [round(s, 4) for s in v], "mean_roc_auc": round(float(np.mean(v)), 4)}
               for k, v in scores.items()}
    args.out.mkdir(parents=True, exist_ok=True)
    tag = args.text_features + ("-text-only" if args.no_extractor_tabular else "")
    (args.out / f"heads-{tag}.json").write_text(json.dumps(summary, indent=1))
    for k, v in summary.items():
        print(f"{k:24s} {v['mean_roc_auc']:.4f}  {v['folds']}")


if __name__ == "__main__":
    main()
