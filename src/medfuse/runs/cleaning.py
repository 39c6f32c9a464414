"""``train.label_issues``: find suspect labels among a fold's *training* rows, and fit around them.

Inside one training fold (or the training rows of ``medfuse train``), never touching
validation or test rows:

1. out-of-sample probabilities of every training row: cleanlab's recipe,
   cross-validated (:data:`INNER_FOLDS` folds, grouped by split group so near copies
   of a row never predict it) predictions of a classical head on features of the rows.
   Hybrid models use their own features and head; fused models a frozen proxy of
   themselves (the same modalities and image backbone through :class:`HybridClassifier`
   with a logistic-regression head) -- the network's own predictions on rows it was
   trained on are memorised, and useless for this;
2. :func:`medfuse.scoring.label_issues.find_issues` on them;
3. ``drop``: the final fit leaves flagged rows out; ``downweight``: they count with
   their label quality (the cross-validated probability of their label, in [0, 1]) as
   per-row weight, other rows with 1.

The reported metrics are still those of the labels as given on untouched test rows.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import sparse

from medfuse.config import RunConfig
from medfuse.estimators import FusionClassifier
from medfuse.estimators.hybrid import HybridClassifier
from medfuse.estimators.hybrid.heads import head_pipeline
from medfuse.scoring.label_issues import find_issues, find_multilabel_issues

log = logging.getLogger(__name__)

#: inner folds of the cross-validated probabilities of the training rows
INNER_FOLDS = 5
#: the smallest weight a down-weighted row gets (a label quality of 0 still counts a little)
MIN_WEIGHT = 0.05


@dataclass
class TrainingIssues:
    """The label issues found among one fit's training rows and what was done about them."""

    handling: str
    rows: int
    flagged: np.ndarray  # bool per training row
    weight: np.ndarray  # per training row: 1, the quality (downweight), or 0 (drop)
    seconds: float
    method: str

    def to_dict(self) -> dict[str, Any]:
        return {"handling": self.handling, "rows": self.rows, "flagged": int(self.flagged.sum()),
                "seconds": round(self.seconds, 2), "method": self.method}


def cross_validated_proba(clf: HybridClassifier, X: Any, y: np.ndarray, groups: np.ndarray,
                          seed: int = 0) -> np.ndarray:
    """Out-of-sample probabilities ``(n, C)`` of ``clf``'s head on features ``X``.

    Grouped, stratified :data:`INNER_FOLDS`-fold (fewer when a class has fewer groups);
    a class absent from an inner training fold gets probability 0 there.
    """
    from sklearn.base import clone
    from sklearn.model_selection import StratifiedGroupKFold

    if y.ndim == 2:
        return _cross_validated_multilabel(clf, X, y, groups, seed)
    n_classes = int(y.max()) + 1 if len(y) else 0
    smallest = min(len(np.unique(groups[y == c])) for c in np.unique(y))
    folds = max(2, min(INNER_FOLDS, smallest))
    pipe = head_pipeline(clf.head, clf.head_params, "none", clf.seed, clf.class_weight,
                         dense=not sparse.issparse(X))
    proba = np.zeros((len(y), n_classes))
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    for fit_idx, pred_idx in splitter.split(np.zeros(len(y)), y, groups):
        model = clone(pipe).fit(X[fit_idx], y[fit_idx])
        cols = np.asarray(model.classes_, dtype=int)
        proba[np.ix_(pred_idx, cols)] = model.predict_proba(X[pred_idx])
    return proba


def _cross_validated_multilabel(clf: HybridClassifier, X: Any, y: np.ndarray,
                                groups: np.ndarray, seed: int) -> np.ndarray:
    """:func:`cross_validated_proba` of a multi-label head: ``(n, L)``, grouped inner folds
    stratified on every label at once."""
    from sklearn.base import clone

    from medfuse.data.splits import stratified_group_folds
    from medfuse.estimators.hybrid.heads import multilabel_proba

    folds = max(2, min(INNER_FOLDS, len(np.unique(groups))))
    pipe = head_pipeline(clf.head, clf.head_params, "none", clf.seed, clf.class_weight,
                         dense=not sparse.issparse(X), multilabel=True)
    proba = np.zeros(y.shape)
    for fit_idx, pred_idx in stratified_group_folds(y, groups, folds, seed):
        model = clone(pipe).fit(X[fit_idx], y[fit_idx])
        proba[pred_idx] = multilabel_proba(model, X[pred_idx])
    return proba


def _issues(handling: str, proba: np.ndarray, y: np.ndarray, t0: float,
            method: str) -> TrainingIssues:
    found: Any = find_multilabel_issues(y, proba) if y.ndim == 2 else find_issues(y, proba)
    weight = np.ones(len(y))
    if handling == "drop":
        weight[found.is_issue] = 0.0
    elif handling == "downweight":
        weight[found.is_issue] = np.clip(found.quality[found.is_issue], MIN_WEIGHT, 1.0)
    log.info("label issues among %d training rows: %d flagged (%s)", len(y),
             int(found.is_issue.sum()), handling)
    return TrainingIssues(handling, len(y), found.is_issue, weight,
                          time.perf_counter() - t0, method)


def hybrid_issues(clf: HybridClassifier, X: Any, y: np.ndarray, groups: np.ndarray,
                  handling: str) -> TrainingIssues:
    """Label issues of a hybrid model's training rows from its own features and head."""
    t0 = time.perf_counter()
    proba = cross_validated_proba(clf, X, y, groups, clf.seed)
    return _issues(handling, proba, y, t0,
                   f"{INNER_FOLDS}-fold grouped cross-validated {clf.head} head on the "
                   "model's own features")


def proxy_config(cfg: RunConfig) -> RunConfig:
    """The frozen hybrid model standing in for a fused one when its labels are audited."""
    m = cfg.model
    # a fused model's test-time views become the proxy's feature views (mirror only: cheap)
    views = m.image_views if m.tta == "none" else "hflip"
    model = m.model_copy(update={"kind": "hybrid", "extractor": "frozen", "head": "lr",
                                 "head_params": {}, "resample": "none", "tta": "none",
                                 "image_views": views})
    return cfg.model_copy(update={"model": model})


def fused_issues(cfg: RunConfig, train: pd.DataFrame, groups: np.ndarray,
                 run_dir: Path | None = None) -> TrainingIssues:
    """Label issues of a fused model's training rows, through :func:`proxy_config`."""
    t0 = time.perf_counter()
    proxy = HybridClassifier.from_config(proxy_config(cfg))
    X, y = proxy.fit_features(train, None, run_dir)
    proba = cross_validated_proba(proxy, X, y, groups, cfg.train.seed)
    return _issues(cfg.train.label_issues, proba, y, t0,
                   f"{INNER_FOLDS}-fold grouped cross-validated logistic regression on "
                   "frozen features of the same modalities (the fused model's proxy)")


def fit_around_issues(clf: FusionClassifier | HybridClassifier, cfg: RunConfig,
                      train: pd.DataFrame, valid: pd.DataFrame | None, groups: np.ndarray,
                      run_dir: Path | None = None, resume: bool = False
                      ) -> TrainingIssues | None:
    """Fit ``clf`` on ``train`` as ``cfg.train.label_issues`` says; what was found (or None).

    ``groups`` are the training rows' split groups. ``keep`` is a plain ``clf.fit``.
    """
    handling = cfg.train.label_issues
    if handling == "keep":
        clf.fit(train, valid, run_dir=run_dir, resume=resume)
        return None
    if isinstance(clf, HybridClassifier):
        t0 = time.perf_counter()
        X, y = clf.fit_features(train, valid, run_dir)
        clf.feature_seconds_ = time.perf_counter() - t0
        found = hybrid_issues(clf, X, y, groups, handling)
        fit_head_around(clf, X, y, found)
        return found
    found = fused_issues(cfg, train, groups, run_dir)
    if handling == "drop":
        clf.fit(train.iloc[np.flatnonzero(~found.flagged)], valid, run_dir=run_dir,
                resume=resume)
    else:
        clf.fit(train, valid, run_dir=run_dir, resume=resume, sample_weight=found.weight)
    return found


def fit_head_around(clf: HybridClassifier, X: Any, y: np.ndarray, found: TrainingIssues,
                    head: str | None = None, head_params: dict[str, Any] | None = None) -> None:
    """Fit the head on ``X`` leaving out (``drop``) or down-weighting the flagged rows."""
    if found.handling == "drop":
        keep = np.flatnonzero(~found.flagged)
        clf.fit_head(X[keep], y[keep], head=head, head_params=head_params)
    else:
        clf.fit_head(X, y, head=head, head_params=head_params, sample_weight=found.weight)
