"""Accuracy, AUC, wall time and peak memory per model on the built-in datasets.

Every model of a dataset is fitted on the same duplicate- / patient-grouped holdout
split (``holdout_split``, seed 0) and scored on the same test rows, each in its own
process (wall seconds include start-up and imports; peak RSS is that process's):

* ``iu_xray``: medfuse fused (``configs/iu_xray.yaml``), medfuse hybrid
  (``configs/iu_xray_hybrid.yaml`` with its word-CNN-only network, ``IU_HYBRID_FAST``:
  the shipped fine-tuned MiniLM takes ~14 min and ~3.4 GB per fit, beyond this
  benchmark's time and 3 GB budgets) and the usual peer baseline, TF-IDF (word 1-2
  grams) + logistic regression from scikit-learn on the report text;
* ``iu_xray_findings`` (multi-label, ten findings): the peer TF-IDF + one-vs-rest
  logistic regression (:func:`tfidf_ovr_findings`), pooled out-of-fold over 5 patient-
  grouped ``kfold_splits`` folds, beside ``medfuse`` (:func:`cv_findings`: ``medfuse cv
  iu_xray_findings`` on the same folds);
* ``br35h``: medfuse hybrid (``configs/br35h_hybrid.yaml``, from a cold cache) on the
  rows of the training section (fine-tuned medfuse vs the plain PyTorch loop);
* ``synth_derm``: the fused model against each single modality (image / tabular / text);
* ``synth_derm_findings``: the same on the multi-label variant (macro ROC AUC over its
  three findings, each seen by one modality).

Accuracy is at the 0.5 threshold of the uncalibrated probabilities.
"""

from __future__ import annotations

import time
from typing import Any

from medfuse.benchmark._runner import Context, run_job
from medfuse.benchmark.training import plan, subsample

MODALITY_DROP: dict[str, dict[str, Any]] = {
    "image": {"tabular": {}, "text": None},
    "tabular": {"image": None, "text": None},
    "text": {"image": None, "tabular": {}},
    "fused": {},
}


def _split(config: str, overrides: list[str], n_rows: int | None) -> tuple[Any, ...]:
    from medfuse.config import load_config
    from medfuse.data import holdout_split, load_data

    cfg = load_config(config, overrides)
    df, _ = load_data(cfg.data)
    df = subsample(df, n_rows)
    split = holdout_split(df, cfg.data, seed=cfg.train.seed)
    return cfg, df.iloc[split.train], df.iloc[split.valid], df.iloc[split.test]


def fit_eval(config: str, overrides: list[str] | None = None, n_rows: int | None = None,
             modality: str | None = None, split_config: str | None = None,
             save: str | None = None) -> dict[str, Any]:
    """The job: fit a medfuse config on the holdout split, score the test rows.

    ``modality`` keeps one modality (``image`` / ``tabular`` / ``text``) of the spec;
    ``split_config`` takes the rows from another config with the same data (e.g. the
    hybrid Br35H model on the rows of the fine-tuned one); ``save`` writes the model.
    """
    from medfuse.runs import estimator_from_config
    from medfuse.scoring.metrics import classification_metrics

    cfg, train, valid, test = _split(split_config or config, overrides or [], n_rows)
    if split_config:
        from medfuse.config import load_config

        cfg = load_config(config, overrides or [])
    if modality is not None:
        cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update=MODALITY_DROP[modality])})
    clf = estimator_from_config(cfg)
    clf.progress = False
    t0 = time.perf_counter()
    clf.fit(train, valid)
    fit_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    proba = clf.predict_proba(test)
    predict_seconds = time.perf_counter() - t0
    y = clf.pre_.encode_target(test).numpy()
    extra: dict[str, Any] = {}
    if clf.multilabel:  # macro over the labels; each label's own AUC beside it
        from medfuse.scoring.metrics import multilabel_metrics

        m = multilabel_metrics(y.astype(int), proba, 0.5, clf.classes_)
        extra = {"roc_auc_micro": _r(m["roc_auc_micro"]), "pr_auc": _r(m["pr_auc"]),
                 "per_label_roc_auc": {k: _r(v["roc_auc"]) for k, v in m["per_label"].items()}}
    else:
        m = classification_metrics(y, proba)
    if save:
        clf.save(save)
    return {"train_rows": len(train), "valid_rows": len(valid), "test_rows": len(test),
            "accuracy": round(m["accuracy"], 4), "roc_auc": _r(m["roc_auc"]), **extra,
            "fit_seconds": round(fit_seconds, 1), "predict_seconds": round(predict_seconds, 2),
            "epochs": getattr(clf, "epochs_", None)}


def cv_findings(n_rows: int | None = None, folds: int = 5,
                overrides: list[str] | None = None) -> dict[str, Any]:
    """The job: ``medfuse cv iu_xray_findings`` (the shipped config) on the same folds as
    :func:`tfidf_ovr_findings`; the pooled out-of-fold macro / micro AUCs, each finding's
    ROC AUC with its patient-bootstrap 95 % CI, and the fold mean of the macro ROC AUC."""
    import tempfile
    from pathlib import Path

    from medfuse.config import load_config
    from medfuse.runs import cv_run

    cfg = load_config("iu_xray_findings", list(overrides or []))
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="medfuse-bench-cv-") as tmp:
        if n_rows:  # the peer's rows: subsample() of the validated table, as a user's CSV
            from medfuse.data import load_data

            df, _ = load_data(cfg.data)
            subsample(df, n_rows).to_csv(Path(tmp) / "rows.csv", index=False)
            cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={
                "dataset": None, "table": str(Path(tmp) / "rows.csv")})})
        summary = cv_run(cfg, folds, Path(tmp) / "cv")
    seconds = time.perf_counter() - t0
    pooled = summary["pooled"]
    return {"rows": pooled["n"], "folds": folds,
            "macro_roc_auc": _r(pooled["roc_auc"]), "macro_roc_auc_ci95": pooled["ci95"]["roc_auc"],
            "fold_mean_macro_roc_auc": _r(summary["mean"]["roc_auc"]),
            "micro_roc_auc": _r(pooled["roc_auc_micro"]), "macro_pr_auc": _r(pooled["pr_auc"]),
            "per_label_roc_auc": {k: _r(v["roc_auc"]) for k, v in pooled["per_label"].items()},
            "per_label_ci95": {k: v["ci95"]["roc_auc"] for k, v in pooled["per_label"].items()},
            "fit_seconds": round(seconds, 1)}


def tfidf_lr(n_rows: int | None = None, C: float = 4.0) -> dict[str, Any]:  # noqa: N803
    """The job: TF-IDF (word 1-2 grams) + logistic regression on IU X-ray reports."""
    import numpy as np
    import pandas as pd
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    from medfuse.scoring.metrics import classification_metrics

    cfg, train, valid, test = _split("iu_xray", [], n_rows)
    fit_rows = pd.concat([train, valid])  # no early stopping: validation rows train too
    text = cfg.data.text
    y = (fit_rows[cfg.data.target].astype(str) == cfg.data.positive).to_numpy().astype(int)
    model = make_pipeline(TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True),
                          LogisticRegression(C=C, max_iter=3000))
    t0 = time.perf_counter()
    model.fit(fit_rows[text].fillna("").astype(str), y)
    fit_seconds = time.perf_counter() - t0
    proba = model.predict_proba(test[text].fillna("").astype(str))
    y_test = (test[cfg.data.target].astype(str) == cfg.data.positive).to_numpy().astype(int)
    m = classification_metrics(np.asarray(y_test), proba)
    return {"train_rows": len(fit_rows), "test_rows": len(test),
            "accuracy": round(m["accuracy"], 4), "roc_auc": _r(m["roc_auc"]),
            "fit_seconds": round(fit_seconds, 2), "C": C}


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def tfidf_ovr_findings(n_rows: int | None = None, folds: int = 5,
                       seed: int = 0) -> dict[str, Any]:
    """The job: TF-IDF + one-vs-rest logistic regression on the ten IU X-ray findings.

    The multi-label peer of ``iu-xray-findings``: word 1-2 grams (``min_df=2``, sublinear
    tf) + ``OneVsRestClassifier(LogisticRegression(C=4, class_weight="balanced"))`` on the
    report text, over medfuse's own ``kfold_splits`` (grouped by patient) of the validated
    table; the vectorizer is fitted on each training fold only. Scores are pooled over the
    out-of-fold probabilities: macro / micro ROC AUC, macro PR AUC (average precision) and
    ROC AUC per finding (None for a finding with one class only, e.g. on a tiny subset;
    the macro figures average the findings that have both).
    """
    import numpy as np
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import average_precision_score, roc_auc_score
    from sklearn.multiclass import OneVsRestClassifier

    from medfuse.data.builtin import load_dataset
    from medfuse.data.labels import multi_hot
    from medfuse.data.splits import kfold_splits
    from medfuse.data.validation import validate_table

    raw, spec = load_dataset("iu-xray-findings")
    df, _ = validate_table(raw, spec, check_images="none")
    df = subsample(df, n_rows)
    assert spec.targets is not None and spec.text is not None
    labels = list(spec.targets)
    y = multi_hot(df[spec.target], labels, spec.separator, spec.target)
    text = df[spec.text].fillna("").astype(str).to_numpy()
    splits, _ = kfold_splits(df, spec, folds, seed)
    proba = np.full(y.shape, np.nan)
    t0 = time.perf_counter()
    for train, test in splits:
        vectorizer = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)
        model = OneVsRestClassifier(LogisticRegression(C=4.0, class_weight="balanced",
                                                       max_iter=5000))
        model.fit(vectorizer.fit_transform(text[train]), y[train])
        proba[test] = model.predict_proba(vectorizer.transform(text[test]))
    fit_seconds = time.perf_counter() - t0
    both = [j for j in range(len(labels)) if 0 < y[:, j].sum() < len(y)]
    roc = {j: float(roc_auc_score(y[:, j], proba[:, j])) for j in both}
    per_label = {name: _r(roc[j]) if j in roc else None for j, name in enumerate(labels)}
    macro_pr = [float(average_precision_score(y[:, j], proba[:, j])) for j in both]
    return {"rows": len(df), "folds": folds, "seed": seed,
            "macro_roc_auc": _r(float(np.mean(list(roc.values()))) if roc else None),
            "micro_roc_auc": _r(float(roc_auc_score(y.ravel(), proba.ravel()))
                                if 0 < y.sum() < y.size else None),
            "macro_pr_auc": _r(float(np.mean(macro_pr)) if macro_pr else None),
            "per_label_roc_auc": per_label,
            "positives": {name: int(y[:, j].sum()) for j, name in enumerate(labels)},
            "fit_seconds": round(fit_seconds, 2), "C": 4.0}


IU_HYBRID_FAST = ["model.text_encoder=wordcnn", "model.finetune_text=false",
                  "train.max_epochs=8"]


def section(ctx: Context) -> dict[str, Any]:
    quick = ctx.quick
    work = ctx.work("datasets")
    env = {"MEDFUSE_IMAGE_CACHE": str(work / "decoded")}  # every job starts from cold caches
    out: dict[str, Any] = {}
    iu_rows = 300 if quick else None
    iu_over = ["train.max_epochs=1"] if quick else []
    out["iu_xray"] = {
        "rows": iu_rows or "all",
        "tfidf_lr": run_job(ctx, "iu_xray-tfidf_lr", "datasets:tfidf_lr", n_rows=iu_rows),
        "fused": run_job(ctx, "iu_xray-fused", "datasets:fit_eval", env=env, config="iu_xray",
                         overrides=iu_over, n_rows=iu_rows),
        "hybrid": run_job(ctx, "iu_xray-hybrid", "datasets:fit_eval", env=env,
                          config="iu_xray_hybrid", overrides=IU_HYBRID_FAST + iu_over,
                          n_rows=iu_rows),
    }
    out["iu_xray_findings"] = {  # multi-label, pooled out-of-fold over 5 grouped folds
        "rows": iu_rows or "all",
        "folds": 5,
        "peer": run_job(ctx, "iu_xray_findings-peer", "datasets:tfidf_ovr_findings",
                        n_rows=iu_rows, folds=5, seed=0),
        "medfuse": run_job(ctx, "iu_xray_findings-medfuse", "datasets:cv_findings",
                           n_rows=iu_rows, folds=5),
    }
    br_rows, _ = plan(quick)
    out["br35h"] = {
        "rows": br_rows or "all",
        "hybrid": run_job(ctx, "br35h-hybrid", "datasets:fit_eval", env=env,
                          config="br35h_hybrid", overrides=["model.feature_cache=false"],
                          n_rows=br_rows, split_config="br35h"),
    }
    synth_over = (["data.dataset_options={n_rows: 120, image_size: 64, seed: 0}",
                   "train.max_epochs=1"] if quick else [])
    synth: dict[str, Any] = {"rows": 120 if quick else 1000}
    for modality in ("image", "tabular", "text", "fused"):
        synth[modality] = run_job(
            ctx, f"synth_derm-{modality}", "datasets:fit_eval", env=env, config="synth_derm",
            overrides=synth_over, modality=None if modality == "fused" else modality,
            save=str(work / "synth_derm_fused_model") if modality == "fused" else None)
    out["synth_derm"] = synth
    findings: dict[str, Any] = {"rows": 120 if quick else 1000}  # multi-label: 3 findings
    for modality in ("image", "tabular", "text", "fused"):
        findings[modality] = run_job(
            ctx, f"synth_derm_findings-{modality}", "datasets:fit_eval", env=env,
            config="synth_derm_findings", overrides=synth_over,
            modality=None if modality == "fused" else modality)
    out["synth_derm_findings"] = findings
    import shutil

    shutil.rmtree(work / "decoded", ignore_errors=True)
    return out
