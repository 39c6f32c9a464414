"""``medfuse train``: one holdout train / valid / test run written to a run directory."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from medfuse.config import RunConfig
from medfuse.data import holdout_split, load_data
from medfuse.data.splits import group_labels
from medfuse.evaluation.evaluate import evaluate, modality_subsets
from medfuse.io import atomic_write_text
from medfuse.runs.cleaning import fit_around_issues
from medfuse.runs.files import SUBSETS_FILE, _write_csv, _write_json, peak_rss_mb
from medfuse.runs.models import estimator_from_config
from medfuse.scoring.conformal import check_calibration_classes

log = logging.getLogger(__name__)


def train_run(cfg: RunConfig, out: Path, resume: bool = False) -> dict[str, Any]:
    """Holdout train / valid / test run written to ``out``; returns the test metrics.

    The temperature, threshold and conformal sets are fitted on the validation rows (the
    temperature kept only where it lowers their cross-validated ECE); the test rows
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
    ev = cfg.evaluation
    if ev.conformal_alpha is not None and not cfg.data.multilabel:  # fail before training
        check_calibration_classes(valid[cfg.data.target].tolist(),
                                  df[cfg.data.target].dropna().tolist(), "the validation rows")
    found = None
    if cfg.train.label_issues == "keep":
        clf.fit(df.iloc[split.train], valid, run_dir=out, resume=resume)
    else:
        groups, _ = group_labels(df, cfg.data)
        found = fit_around_issues(clf, cfg, df.iloc[split.train], valid,
                                  groups[split.train], out, resume)
    if not getattr(clf, "is_primary_", True):
        return {}  # another DDP process: the first one evaluates and writes the run directory
    clf.calibrate(valid, temperature=ev.calibrate, threshold=ev.threshold,
                  value=ev.threshold_value, conformal_alpha=ev.conformal_alpha,
                  seed=cfg.train.seed)
    metrics, preds = evaluate(clf, df.iloc[split.test], bootstrap=ev.bootstrap,
                              seed=cfg.train.seed, subgroups=ev.subgroups,
                              bins=ev.subgroup_bins)
    subgroups = metrics.pop("subgroups", None)
    if not cfg.data.multilabel:  # multi-label: metrics["thresholds"], one per label
        metrics["threshold"] = clf.threshold_
    metrics.update(
        train_seconds=round(clf.training_seconds(), 2),
        peak_rss_mb=round(peak_rss_mb(), 1),
        epochs=getattr(clf, "epochs_", None),
        precision=clf.training_precision(),
        data=validation.to_dict(),
        split=split.report.to_dict(),
    )
    if found is not None:
        metrics["label_issues_train"] = found.to_dict()
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
