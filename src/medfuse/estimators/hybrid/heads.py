"""The classical heads of a hybrid model: scikit-learn / XGBoost classifiers by short name,
behind an optional imbalanced-learn resampler (which only ever sees the rows passed to
``fit``) and a scaler for the distance / penalty based ones.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from medfuse.errors import ConfigError, DataError, check_option

HEADS = ("lr", "rf", "adaboost", "xgboost", "svm")
RESAMPLERS = ("none", "smote", "adasyn", "oversample")


def make_head(name: str, params: dict[str, Any] | None = None, seed: int = 0,
              class_weight: bool = True) -> Any:
    """A fresh classical classifier by short name, ``params`` passed to its constructor.

    >>> make_head("lr", {"C": 0.5}).C
    0.5
    >>> make_head("xgbost")
    Traceback (most recent call last):
    ...
    medfuse.errors.ConfigError: The 'head' parameter must be one of {'lr', 'rf', 'adaboost', \
'xgboost', 'svm'}. Got 'xgbost' instead. Did you mean 'xgboost'?
    """
    check_option("head", name, HEADS)
    params = dict(params or {})
    balanced = "balanced" if class_weight else None
    try:
        if name == "lr":
            from sklearn.linear_model import LogisticRegression

            kw = {"C": 1.0, "max_iter": 3000, "class_weight": balanced}
            return LogisticRegression(**{**kw, **params})
        if name == "rf":
            from sklearn.ensemble import RandomForestClassifier

            kw = {"n_estimators": 300, "class_weight": balanced, "random_state": seed,
                  "n_jobs": -1}
            return RandomForestClassifier(**{**kw, **params})
        if name == "adaboost":
            from sklearn.ensemble import AdaBoostClassifier
            from sklearn.tree import DecisionTreeClassifier

            depth = int(params.pop("max_depth", 2))
            stump = DecisionTreeClassifier(max_depth=depth, class_weight=balanced,
                                           random_state=seed)
            kw = {"n_estimators": 200, "learning_rate": 0.5, "random_state": seed}
            return AdaBoostClassifier(stump, **{**kw, **params})
        if name == "xgboost":
            from xgboost import XGBClassifier

            kw = {"n_estimators": 300, "max_depth": 4, "learning_rate": 0.1,
                  "subsample": 0.9, "colsample_bytree": 0.5, "random_state": seed,
                  "n_jobs": os.cpu_count() or 1, "tree_method": "hist"}
            return XGBClassifier(**{**kw, **params})
        from sklearn.calibration import CalibratedClassifierCV
        from sklearn.svm import SVC

        # Platt scaling on out-of-fold decision values (SVC(probability=True) is deprecated)
        kw = {"C": 1.0, "kernel": "rbf", "class_weight": balanced, "random_state": seed}
        return CalibratedClassifierCV(SVC(**{**kw, **params}), ensemble=False, cv=3)
    except TypeError as e:
        raise ConfigError(f"bad head_params for head {name!r}: {e}") from e


def make_resampler(name: str, seed: int = 0) -> Any:
    """An imbalanced-learn sampler (``None`` for ``"none"``)."""
    check_option("resample", name, RESAMPLERS)
    if name == "none":
        return None
    from imblearn.over_sampling import ADASYN, SMOTE, RandomOverSampler

    cls = {"smote": SMOTE, "adasyn": ADASYN, "oversample": RandomOverSampler}[name]
    return cls(random_state=seed)


def head_pipeline(head: str, params: dict[str, Any] | None, resample: str, seed: int,
                  class_weight: bool, dense: bool, multilabel: bool = False) -> Any:
    """``[resampler] -> [scaler] -> head``; an imblearn Pipeline (resampling at fit only).

    ``multilabel``: one binary head per label (:func:`multilabel_pipeline`).
    """
    from imblearn.pipeline import Pipeline
    from sklearn.preprocessing import MaxAbsScaler, StandardScaler

    if multilabel:
        return multilabel_pipeline(head, params, resample, seed, class_weight, dense)
    steps: list[tuple[str, Any]] = []
    sampler = make_resampler(resample, seed)
    if sampler is not None:
        steps.append(("resample", sampler))
    if head in ("lr", "svm"):  # distance / penalty based: scale; trees don't care
        steps.append(("scale", StandardScaler() if dense else MaxAbsScaler()))
    # resampled classes are balanced already: weighting them again would over-correct
    steps.append(("head", make_head(head, params, seed, class_weight and sampler is None)))
    return Pipeline(steps)


def multilabel_pipeline(head: str, params: dict[str, Any] | None, resample: str, seed: int,
                        class_weight: bool, dense: bool) -> Any:
    """``[scaler] -> one binary head per label`` for an ``(n, L)`` 0/1 target.

    scikit-learn's ``MultiOutputClassifier`` fits a clone of ``[resampler] -> head`` per
    label, so SMOTE / ADASYN resample each label's own positives and ``class_weight``
    balances each label's own classes. XGBoost is multi-label natively (one model, a
    probability per label; balanced class weights need one weight per row *and* label,
    so none are applied there: the ranking metrics do not depend on them).
    """
    from imblearn.pipeline import Pipeline
    from sklearn.multioutput import MultiOutputClassifier
    from sklearn.preprocessing import MaxAbsScaler, StandardScaler

    sampler = make_resampler(resample, seed)
    steps: list[tuple[str, Any]] = []
    if head in ("lr", "svm"):
        steps.append(("scale", StandardScaler() if dense else MaxAbsScaler()))
    one = make_head(head, params, seed, class_weight and sampler is None)
    if head == "xgboost":
        if sampler is not None:
            raise ConfigError(
                f"resample={resample!r} with head 'xgboost' on a multi-label target: XGBoost "
                "fits every label in one model, so there is no per-label set of rows to "
                "resample. Use resample='none', or head 'lr' / 'rf' / 'adaboost' / 'svm' "
                "(one head per label, each resampled on its own).")
        steps.append(("head", one))
    else:
        inner = Pipeline([("resample", sampler), ("head", one)]) if sampler is not None else one
        steps.append(("head", MultiOutputClassifier(inner)))
    return Pipeline(steps)


def multilabel_proba(pipe: Any, X: Any) -> np.ndarray:
    """``(n, L)`` positive-label probabilities of a fitted :func:`multilabel_pipeline`."""
    out = pipe.predict_proba(X)
    if isinstance(out, list):  # MultiOutputClassifier: one (n, 2) array per label
        return np.column_stack([p[:, 1] for p in out])
    return np.asarray(out)


def strip_resamplers(pipe: Any) -> Any:
    """The fitted multi-label pipeline without its per-label resamplers (they only act
    during fit), so what is saved is scaler + plain heads."""
    multi = pipe[-1]
    if hasattr(multi, "estimators_"):
        multi.estimators_ = [e[-1] if hasattr(e, "steps") else e for e in multi.estimators_]
    return pipe


def fit_pipeline(pipe: Any, X: Any, y: np.ndarray, head: str, resample: str,
                 class_weight: bool, sample_weight: Any = None) -> Any:
    """Fit a :func:`head_pipeline` on ``X, y`` with optional per-row ``sample_weight``.

    XGBoost takes the balanced class weights as row weights (times ``sample_weight``).
    A resampler cannot give a weight to the rows it makes up, so ``sample_weight`` needs
    ``resample='none'``; a resampler without enough neighbours is a clear DataError.
    """
    from medfuse.scoring.checks import check_sample_weight

    fit_kw: dict[str, Any] = {}
    rows = np.ones(len(y))
    if sample_weight is not None:
        rows = check_sample_weight(sample_weight, len(y))
        if resample != "none":
            raise ConfigError(
                f"sample_weight with resample={resample!r}: resampling makes up rows that "
                "have no weight. Use resample='none' (class weights balance the classes) "
                "or do not weight the rows (train.label_issues: drop / keep).")
        fit_kw["head__sample_weight"] = rows
    if class_weight and resample == "none" and head == "xgboost" and y.ndim == 1:
        fit_kw["head__sample_weight"] = sample_weights(y) * rows
    try:
        return pipe.fit(X, y, **fit_kw)
    except ValueError as e:
        if resample != "none" and "neighbors" in str(e):
            raise DataError(
                f"resample={resample!r} failed: {e}. The minority class has too few training "
                "rows for its nearest neighbours; use resample='oversample' or more data."
            ) from e
        raise


def sample_weights(y: np.ndarray) -> np.ndarray:
    """Balanced per-row weights ``n / (k * count[y])`` for heads without ``class_weight``."""
    counts = np.bincount(y)
    return (len(y) / (len(counts) * counts[y])).astype(np.float64)


def require_two_classes(y: np.ndarray, n_classes: int, table: str = "train") -> None:
    present = np.unique(y)
    if len(present) < 2:
        raise DataError(
            f"{table}: only one class present in the training rows ({n_classes} known): a "
            "classifier needs examples of at least two classes; check the target column "
            "or use more rows."
        )
