"""Calibration and decision thresholds: what turns raw probabilities into a decision.

* :func:`choose_threshold` -- fixed, Youden or minimum-sensitivity decision thresholds.
* :class:`TemperatureScaler` -- one-parameter post-hoc calibration.
* :func:`choose_temperature` -- that temperature, kept only where it lowers the
  cross-validated ECE of the validation rows (calibration never silently hurts).

Both are fitted on validation rows by the estimators (:mod:`medfuse.estimators.base`).

>>> import numpy as np
>>> y = np.array([0, 0, 1, 1])
>>> choose_threshold(y, np.array([0.1, 0.4, 0.35, 0.8]), method="youden")
0.8
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from scipy import optimize, special
from sklearn import metrics as skm

from medfuse.errors import NotFittedError, check_option
from medfuse.scoring.checks import (
    FloatArray,
    as_labels,
    as_proba,
    as_scores,
    binary_labels,
    check_unit,
    is_number,
    number_error,
)
from medfuse.scoring.metrics import expected_calibration_error

__all__ = ["MIN_CALIBRATION_ROWS", "THRESHOLD_METHODS", "TemperatureScaler",
           "choose_temperature", "choose_threshold", "top_label_ece"]

THRESHOLD_METHODS: tuple[str, ...] = ("fixed", "youden", "sensitivity")
_PROBA_FLOOR = 1e-7
#: fewer validation rows than this: a fitted temperature (or threshold) is a guess
MIN_CALIBRATION_ROWS = 50
CALIBRATION_FOLDS = 5


def choose_threshold(
    y_true: ArrayLike, score: ArrayLike, method: str = "fixed", value: float | None = None
) -> float:
    """Decision threshold on the positive-class probability of a binary task.

    Rows with ``score >= threshold`` are called positive (as in
    :func:`~medfuse.evaluation.metrics.classification_metrics`).

    Parameters
    ----------
    y_true : array-like of {0, 1}, shape (n,)
        Binary labels (1 = positive).
    score : array-like of float, shape (n,)
        Positive-class probabilities.
    method : {"fixed", "youden", "sensitivity"}, default "fixed"
        ``"fixed"``: ``value`` (default 0.5). ``"youden"``: the ROC threshold maximising
        ``sensitivity + specificity - 1`` (the highest one on ties). ``"sensitivity"``: the
        highest threshold whose sensitivity is at least ``value``.
    value : float, optional
        The fixed threshold (in [0, 1]) or the minimum sensitivity (in (0, 1], required);
        ignored by ``"youden"``.

    Returns
    -------
    float
        The threshold, clipped to [0, 1].

    Raises
    ------
    ConfigError
        Unknown ``method`` or ``value`` out of range / missing.
    DataError
        Labels not binary or only one class present (data-driven methods).
    """
    owner = "choose_threshold"
    check_option("method", method, THRESHOLD_METHODS, owner)
    s = as_scores(score, "score")
    if method == "fixed":
        as_labels(y_true, len(s), 2, "score")
        return 0.5 if value is None else check_unit("value", value, f"{owner}(method='fixed')")
    y = binary_labels(y_true, len(s), "score")
    fpr, tpr, thresholds = skm.roc_curve(y, s, drop_intermediate=False)
    if method == "youden":
        best = int(np.argmax(tpr - fpr))
    else:
        target = check_unit("value", value, f"{owner}(method='sensitivity')", low_open=True)
        best = int(np.flatnonzero(tpr >= target - 1e-12)[0])
    return float(np.clip(thresholds[best], 0.0, 1.0))


class TemperatureScaler:
    """Post-hoc calibration with one temperature: ``softmax(log(proba) / T)``.

    ``T > 1`` softens over-confident probabilities, ``T < 1`` sharpens them; the arg-max
    (and so accuracy and ROC AUC) is unchanged.

    Attributes
    ----------
    temperature_ : float
        The fitted temperature (raises :class:`~medfuse.errors.NotFittedError` before ``fit``).

    Examples
    --------
    >>> import numpy as np
    >>> scaler = TemperatureScaler.from_dict({"temperature": 2.0})
    >>> scaler.transform(np.array([[0.1, 0.9]])).round(3)
    array([[0.25, 0.75]])
    """

    log_bounds: tuple[float, float] = (-3.0, 3.0)
    """Search interval of ``log(T)``."""

    def __init__(self) -> None:
        self._temperature: float | None = None

    @property
    def temperature_(self) -> float:
        if self._temperature is None:
            raise NotFittedError(
                "This TemperatureScaler is not fitted yet; call fit(proba, y_true) or "
                "TemperatureScaler.from_dict(...) first."
            )
        return self._temperature

    @staticmethod
    def _logits(proba: FloatArray) -> FloatArray:
        return np.log(np.clip(proba, _PROBA_FLOOR, 1.0))

    def fit(self, proba: ArrayLike, y_true: ArrayLike) -> TemperatureScaler:
        """Learn ``T`` minimising the negative log-likelihood of ``y_true``.

        Parameters
        ----------
        proba : array-like of float, shape (n, n_classes)
            Validation-set probabilities (1-D: positive-class probability).
        y_true : array-like of int, shape (n,)
            Class indices.

        Returns
        -------
        TemperatureScaler
            ``self``.
        """
        p = as_proba(proba)
        y = as_labels(y_true, len(p), p.shape[1])
        logits = self._logits(p)
        rows = np.arange(len(y))

        def nll(log_t: float) -> float:
            logp = special.log_softmax(logits / math.exp(log_t), axis=1)
            return float(-logp[rows, y].mean())

        res = optimize.minimize_scalar(
            nll, bounds=self.log_bounds, method="bounded", options={"xatol": 1e-6}
        )
        self._temperature = float(math.exp(float(res.x)))
        return self

    def transform(self, proba: ArrayLike) -> FloatArray:
        """Calibrated probabilities, same shape as ``proba`` (1-D in, 1-D out)."""
        one_d = np.ndim(proba) == 1
        p = as_proba(proba)
        out: FloatArray = special.softmax(self._logits(p) / self.temperature_, axis=1)
        return out[:, 1] if one_d else out

    def to_dict(self) -> dict[str, float]:
        """JSON-able state, ``{"temperature": T}``."""
        return {"temperature": self.temperature_}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TemperatureScaler:
        """Rebuild a fitted scaler from :meth:`to_dict`'s output."""
        t = d.get("temperature") if isinstance(d, Mapping) else None
        if not is_number(t) or not math.isfinite(float(t)) or float(t) <= 0:  # type: ignore[arg-type]
            raise number_error("temperature", t, "a finite number > 0", "TemperatureScaler")
        scaler = cls()
        scaler._temperature = float(t)  # type: ignore[arg-type]
        return scaler


def top_label_ece(proba: ArrayLike, y_true: ArrayLike) -> float:
    """Top-label expected calibration error (15 bins) of probabilities ``(n, n_classes)``."""
    p = as_proba(proba)
    y = as_labels(y_true, len(p), p.shape[1])
    return expected_calibration_error(p.argmax(1) == y, p.max(1))


def choose_temperature(proba: ArrayLike, y_true: ArrayLike, folds: int = CALIBRATION_FOLDS,
                       seed: int = 0) -> dict[str, Any]:
    """Fit a temperature on validation rows and keep it only if it helps out of sample.

    The rows are split into ``folds`` stratified folds; each fold's probabilities are
    scaled by the temperature fitted on the other folds, and the pooled, cross-validated
    top-label ECE of those scaled probabilities is compared with the ECE of the raw ones
    on the same rows. The temperature fitted on *all* rows is kept only where the
    cross-validated ECE is lower; otherwise it is 1 (no calibration) and ``reason`` says
    why -- so calibration never silently makes the probabilities worse.

    Returns
    -------
    dict
        ``temperature`` (1.0 when declined), ``fitted_temperature``, ``kept``, ``reason``,
        ``valid_rows``, ``cv_ece_raw``, ``cv_ece_scaled`` and ``warning`` (a message when
        there are fewer than :data:`MIN_CALIBRATION_ROWS` rows, else None).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> y = rng.integers(0, 2, 300)
    >>> p1 = 1 / (1 + np.exp(-4 * (2 * y - 1) * rng.uniform(0.2, 1.5, 300)))
    >>> flip = rng.random(300) < 0.15                       # over-confident and wrong
    >>> p1 = np.where(flip, 1 - p1, p1)
    >>> choice = choose_temperature(np.c_[1 - p1, p1], y)
    >>> choice["kept"], choice["temperature"] > 1
    (True, True)
    """
    from sklearn.model_selection import StratifiedKFold

    p = as_proba(proba)
    y = as_labels(y_true, len(p), p.shape[1])
    n = len(y)
    counts = np.bincount(y, minlength=p.shape[1])
    warning = None
    if n < MIN_CALIBRATION_ROWS:
        warning = (f"calibration: only {n} validation rows (fewer than "
                   f"{MIN_CALIBRATION_ROWS}); the temperature and threshold they choose are "
                   "noisy. Raise data.split.valid_size, or set evaluation.calibrate: false.")
    out: dict[str, Any] = {"temperature": 1.0, "fitted_temperature": None, "kept": False,
                           "valid_rows": int(n), "cv_ece_raw": None, "cv_ece_scaled": None,
                           "warning": warning}
    present = counts[counts > 0]
    if len(present) < 2:
        out["reason"] = "declined: the validation rows hold a single class"
        return out
    fitted = TemperatureScaler().fit(p, y).temperature_
    out["fitted_temperature"] = round(float(fitted), 6)
    k = int(min(folds, present.min()))
    if k < 2:
        out["reason"] = ("declined: too few validation rows of the smallest class "
                         f"({int(present.min())}) to check the temperature out of sample")
        return out
    scaled = np.empty_like(p)
    splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    for fit_idx, test_idx in splitter.split(np.zeros(n), y):
        if len(np.unique(y[fit_idx])) < 2:
            scaled[test_idx] = p[test_idx]
            continue
        scaler = TemperatureScaler().fit(p[fit_idx], y[fit_idx])
        scaled[test_idx] = scaler.transform(p[test_idx])
    raw_ece, cv_ece = top_label_ece(p, y), top_label_ece(scaled, y)
    out.update(cv_ece_raw=round(raw_ece, 6), cv_ece_scaled=round(cv_ece, 6))
    if cv_ece < raw_ece:
        out.update(temperature=float(fitted), kept=True,
                   reason=(f"kept: {k}-fold cross-validated ECE on the {n} validation rows "
                           f"{cv_ece:.4f} with it, {raw_ece:.4f} without"))
    else:
        out["reason"] = (f"declined: T = {fitted:.3f} did not lower the {k}-fold "
                         f"cross-validated ECE on the {n} validation rows ({cv_ece:.4f} with "
                         f"it, {raw_ece:.4f} without); probabilities are left as trained")
    return out
