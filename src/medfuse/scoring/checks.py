"""Checks of the arrays and numbers handed to the scoring and statistics functions.

Each failure is a :class:`~medfuse.errors.DataError` (bad data) or
:class:`~medfuse.errors.ConfigError` (bad parameter) naming the argument and the fix,
in scikit-learn's wording ("The 'alpha' parameter of f must be ... Got ... instead.").

>>> check_unit("alpha", 0.05, "f")
0.05
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike, NDArray

from medfuse.errors import ConfigError, DataError, check_option

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]


def where(owner: str) -> str:
    return f" of {owner}" if owner else ""


def number_error(param: str, value: object, valid: str, owner: str) -> ConfigError:
    return ConfigError(
        f"The '{param}' parameter{where(owner)} must be {valid}. Got {value!r} instead."
    )


def is_number(value: object) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(
        value, bool
    )


def check_int(param: str, value: object, minimum: int, owner: str) -> int:
    if not isinstance(value, int | np.integer) or isinstance(value, bool) or value < minimum:
        raise number_error(param, value, f"an integer >= {minimum}", owner)
    return int(value)


def check_unit(
    param: str, value: object, owner: str, low_open: bool = False, high_open: bool = False
) -> float:
    """``value`` as a float in [0, 1] (``low_open`` / ``high_open`` exclude 0 / 1)."""
    ok = is_number(value) and math.isfinite(float(value))  # type: ignore[arg-type]
    if ok:
        v = float(value)  # type: ignore[arg-type]
        ok = (v > 0 if low_open else v >= 0) and (v < 1 if high_open else v <= 1)
    if not ok:
        interval = ("(" if low_open else "[") + "0, 1" + (")" if high_open else "]")
        raise number_error(param, value, f"a number in {interval}", owner)
    return float(value)  # type: ignore[arg-type]


def as_proba(proba: ArrayLike, name: str = "proba") -> FloatArray:
    p = np.asarray(proba, dtype=float)
    if p.ndim == 1:
        p = np.column_stack([1.0 - p, p])
    if p.ndim != 2 or p.shape[1] < 2:
        raise DataError(
            f"'{name}' must be an (n, n_classes) array of class probabilities with at least "
            f"2 columns, or a 1-D vector of positive-class probabilities; got shape {p.shape}."
        )
    if len(p) == 0:
        raise DataError(f"'{name}' has no rows; evaluate on a non-empty set.")
    if not np.isfinite(p).all():
        raise DataError(
            f"'{name}' contains NaN or infinite values; drop or re-predict those rows first."
        )
    return p


def as_labels(y_true: ArrayLike, n: int, k: int, against: str = "proba") -> IntArray:
    y = np.asarray(y_true)
    if y.ndim != 1:
        raise DataError(f"'y_true' must be 1-D (one class index per row); got shape {y.shape}.")
    if len(y) != n:
        raise DataError(
            f"'y_true' has {len(y)} rows but '{against}' has {n}; pass arrays aligned row by row."
        )
    if y.dtype == bool:
        y = y.astype(int)
    if not np.issubdtype(y.dtype, np.number) or not np.all(np.mod(y, 1) == 0):
        raise DataError(
            f"'y_true' must hold integer class indices 0..{k - 1}; got dtype {y.dtype}. "
            "Encode the labels as class indices first."
        )
    y = y.astype(np.int64)
    if y.min() < 0 or y.max() >= k:
        raise DataError(
            f"'y_true' holds class index {int(y.min() if y.min() < 0 else y.max())} but "
            f"'{against}' has {k} columns (valid indices 0..{k - 1}); check the label encoding."
        )
    return y


def binary_labels(y_true: ArrayLike, n: int, against: str, need: int = 1) -> IntArray:
    y = as_labels(y_true, n, 2, against)
    n_pos = int(y.sum())
    if n_pos < need or n - n_pos < need:
        raise DataError(
            f"'y_true' has {n_pos} positive and {n - n_pos} negative rows; this needs at least "
            f"{need} of each. Evaluate on a set holding both classes."
        )
    return y


def as_scores(score: ArrayLike, name: str) -> FloatArray:
    s = np.asarray(score, dtype=float)
    if s.ndim != 1:
        raise DataError(
            f"'{name}' must be 1-D (one positive-class score per row); got shape {s.shape}."
        )
    if not np.isfinite(s).all():
        raise DataError(f"'{name}' contains NaN or infinite values; drop those rows first.")
    return s


def check_positive(positive: int | None, k: int, owner: str) -> int:
    if positive is None:
        return k - 1
    check_option("positive", positive, range(k), owner)
    return int(positive)


def check_sample_weight(sample_weight: object, n: int) -> np.ndarray:
    """``sample_weight`` as ``(n,)`` float64: finite, >= 0, not all 0 (else a ConfigError)."""
    try:
        w = np.asarray(sample_weight, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"The 'sample_weight' parameter must be numbers, one per training "
                          f"row: {e}.") from e
    if len(w) != n:
        raise ConfigError(f"The 'sample_weight' parameter holds {len(w)} weights for {n} "
                          "training rows: pass one weight per row of the training table.")
    bad = np.flatnonzero(~np.isfinite(w) | (w < 0))
    if len(bad):
        raise ConfigError(f"The 'sample_weight' parameter must be finite and >= 0; row "
                          f"{int(bad[0])} has {float(w[bad[0]])}.")
    if n and not w.any():
        raise ConfigError("The 'sample_weight' parameter is 0 for every row: nothing would "
                          "be learnt. Give the rows to keep a weight > 0.")
    return w
