"""Split-conformal prediction sets, class-conditional and per available-modality subset.

A probability is not a guarantee; a conformal prediction set is. Calibrated on labelled
rows the model never trained on (the validation rows), the set of a new row holds its true
class with probability at least ``1 - alpha`` -- *for every class* (Mondrian,
class-conditional) and, for models that predict without a modality, *for every set of
available modalities*: each (modality subset, class) pair is its own Mondrian category.

The p-values come from `crepes <https://github.com/henrikbostrom/crepes>`_ (Boström's
conformal classifiers): it works on precomputed non-conformity scores, which is what a
model that already returns probabilities has, and takes Mondrian categories as plain
labels. MAPIE and puncc wrap an estimator object instead and have no per-candidate-class
categories for combined (class, subset) calibration. The non-conformity score is the hinge
``1 - p(class)`` (crepes' :func:`~crepes.extras.hinge`, "LAC"); p-values are not smoothed,
so the same inputs always give the same sets (coverage is then ``>= 1 - alpha``, slightly
conservative with few calibration rows).

A row's set holds every class whose p-value is at least ``alpha``; it may hold several
classes (the model cannot tell them apart at this confidence) or none (the row looks
unlike every class's calibration rows). Either way the row is an *abstention*: only a
single-class set is a decision.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> y = rng.integers(0, 2, 400)
>>> p1 = np.clip(0.5 + 0.35 * (2 * y - 1) + 0.2 * rng.standard_normal(400), 0.01, 0.99)
>>> proba = np.c_[1 - p1, p1]
>>> sets = ConformalSets(alpha=0.1).fit(proba[:200], y[:200]).predict(proba[200:])
>>> sets.shape, bool(sets[np.arange(200), y[200:]].mean() >= 0.85)
((200, 2), True)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from medfuse.errors import ConfigError, DataError
from medfuse.scoring.checks import as_labels, as_proba, is_number

__all__ = [
    "ALL_MODALITIES",
    "DEFAULT_ALPHA",
    "SET_SEP",
    "ConformalSets",
    "check_alpha",
    "check_calibration_classes",
    "conformal_metrics",
    "format_sets",
    "min_rows",
    "missing_classes_problem",
    "parse_sets",
]

DEFAULT_ALPHA = 0.1
SET_SEP = "|"
#: the subset name of rows of a model that always has every modality
ALL_MODALITIES = "all"


def check_alpha(alpha: object, owner: str = "evaluation.conformal_alpha") -> float:
    """``alpha`` as a float in (0, 1), or a :class:`ConfigError` naming ``owner``."""
    if not is_number(alpha) or not 0.0 < float(alpha) < 1.0:  # type: ignore[arg-type]
        raise ConfigError(
            f"{owner}={alpha!r}: the miscoverage of conformal prediction sets must lie "
            "strictly between 0 and 1 (e.g. 0.1 for sets holding the true class 90% of the "
            "time); set it to null to turn conformal sets off."
        )
    return float(alpha)  # type: ignore[arg-type]


def check_calibration_classes(valid_labels: Sequence[object], all_labels: Sequence[object],
                              where: str = "the validation rows") -> None:
    """Before training: every class of the table must have calibration rows.

    Raises a :class:`DataError` naming the absent classes and what to set, so a run fails
    before it spends its training time, not after.

    >>> check_calibration_classes(["a", "b"], ["a", "b", "c"])
    Traceback (most recent call last):
    ...
    medfuse.errors.DataError: conformal calibration: the validation rows hold no row of ...
    """
    problem = missing_classes_problem(valid_labels, all_labels, where)
    if problem:
        raise DataError(problem)


def missing_classes_problem(valid_labels: Sequence[object], all_labels: Sequence[object],
                            where: str = "the validation rows") -> str | None:
    """The message of :func:`check_calibration_classes`, or None when every class is there."""
    have = {str(v) for v in valid_labels}
    absent = sorted({str(v) for v in all_labels} - have)
    if not absent:
        return None
    return (f"conformal calibration: {where} hold no row of class {absent} "
            f"({len(valid_labels)} rows); class-conditional prediction sets need every class "
            "there. Raise data.split.valid_size, or set evaluation.conformal_alpha: null to "
            "turn conformal sets off.")


def min_rows(alpha: float) -> int:
    """Fewest calibration rows of a class for its sets to ever leave it out at ``alpha``.

    With ``n`` rows the smallest p-value is ``1 / (n + 1)``; below this count every set
    holds the class.

    >>> min_rows(0.1), min_rows(0.05)
    (9, 19)
    """
    return max(1, math.ceil(1.0 / alpha - 1.0 - 1e-9))


class ConformalSets:
    """Class-conditional (Mondrian) split-conformal prediction sets over crepes.

    Parameters
    ----------
    alpha : float, default 0.1
        Target miscoverage: each class's sets hold it with probability >= ``1 - alpha``.

    Attributes
    ----------
    counts_ : dict
        ``{subset: {class index: calibration rows}}``.
    subsets_ : list of str
        The modality subsets calibrated (``["all"]`` for a model without missing inputs).
    warnings_ : list of str
        Categories with too few calibration rows (:func:`min_rows`): their sets always
        hold that class.
    """

    def __init__(self, alpha: float = DEFAULT_ALPHA) -> None:
        self.alpha = check_alpha(alpha, "ConformalSets(alpha)")
        self._scores: np.ndarray | None = None
        self._bins: np.ndarray | None = None
        self.n_classes_ = 0
        self.subsets_: list[str] = []
        self.counts_: dict[str, dict[int, int]] = {}
        self.warnings_: list[str] = []
        self._cc: Any = None

    # ------------------------------------------------------------------ fit
    def fit(self, proba: ArrayLike, y: ArrayLike,
            subsets: Sequence[str] | np.ndarray | None = None,
            class_names: Sequence[str] | None = None) -> ConformalSets:
        """Calibrate on labelled rows the model did not train on.

        Parameters
        ----------
        proba : array-like, shape (n, n_classes)
            The model's probabilities of the calibration rows.
        y : array-like of int, shape (n,)
            Their class indices.
        subsets : sequence of str, optional
            Each row's available-modality subset (e.g. ``"image+text"``); one
            calibration per subset. None: every row has every modality.
        class_names : sequence of str, optional
            For messages only.

        Raises
        ------
        DataError
            A class with no calibration row in some subset.
        """
        p = as_proba(proba)
        labels = as_labels(y, len(p), p.shape[1], "conformal calibration")
        names = _subsets(subsets, len(p))
        self.n_classes_ = p.shape[1]
        self.subsets_ = sorted(set(names.tolist()), key=lambda s: (-s.count("+"), s))
        index = {s: i for i, s in enumerate(self.subsets_)}
        shown = list(class_names) if class_names else [str(c) for c in range(p.shape[1])]
        self.counts_, self.warnings_ = {}, []
        need = min_rows(self.alpha)
        for s in self.subsets_:
            rows = names == s
            counts = np.bincount(labels[rows], minlength=self.n_classes_)
            self.counts_[s] = {c: int(n) for c, n in enumerate(counts)}
            absent = [shown[c] for c in range(self.n_classes_) if counts[c] == 0]
            if absent:
                where = "" if s == ALL_MODALITIES else f" with modalities {s!r}"
                raise DataError(
                    f"conformal calibration: the validation rows{where} have no row of class "
                    f"{absent} (counts {dict(zip(shown, counts.tolist(), strict=True))}); "
                    "class-conditional sets need every class. Raise data.split.valid_size, or "
                    "set evaluation.conformal_alpha: null to turn conformal sets off."
                )
            few = [f"{shown[c]!r}: {int(counts[c])}" for c in range(self.n_classes_)
                   if counts[c] < need]
            if few:
                where = "" if s == ALL_MODALITIES else f" (modalities {s})"
                self.warnings_.append(
                    f"conformal calibration{where}: {', '.join(few)} validation rows, fewer "
                    f"than the {need} that alpha={self.alpha:g} needs, so every prediction "
                    "set holds that class; raise data.split.valid_size or "
                    "evaluation.conformal_alpha."
                )
        self._scores = 1.0 - p[np.arange(len(p)), labels]  # crepes.extras.hinge at the label
        self._bins = np.array([index[s] for s in names], dtype=np.int64) * self.n_classes_ \
            + labels
        self._cc = None
        return self

    def _classifier(self) -> Any:
        if self._scores is None or self._bins is None:
            from medfuse.errors import NotFittedError

            raise NotFittedError("This ConformalSets is not fitted: call fit(proba, y) or "
                                 "ConformalSets.from_dict(...) first.")
        if self._cc is None:
            from crepes import ConformalClassifier

            self._cc = ConformalClassifier().fit(self._scores, bins=self._bins)
        return self._cc

    # ------------------------------------------------------------------ predict
    def p_values(self, proba: ArrayLike,
                 subsets: Sequence[str] | np.ndarray | None = None) -> np.ndarray:
        """``(n, n_classes)`` p-values; a subset never calibrated gets 1 (every class)."""
        from crepes.extras import hinge

        cc = self._classifier()
        p = as_proba(proba)
        if p.shape[1] != self.n_classes_:
            raise DataError(f"conformal sets: probabilities have {p.shape[1]} columns, the "
                            f"calibration had {self.n_classes_} classes")
        names = _subsets(subsets, len(p))
        out = np.ones(p.shape)
        index = {s: i for i, s in enumerate(self.subsets_)}
        known = np.array([s in index for s in names], dtype=bool)
        if not known.any():
            return out
        alphas = hinge(p[known])
        base = np.array([index[s] for s in names[known]], dtype=np.int64) * self.n_classes_
        for c in range(self.n_classes_):
            out[known, c] = cc.predict_p(alphas, bins=base + c, smoothing=False)[:, c]
        return out

    def predict(self, proba: ArrayLike,
                subsets: Sequence[str] | np.ndarray | None = None) -> np.ndarray:
        """Boolean ``(n, n_classes)``: class ``c`` is in row ``i``'s set."""
        return self.p_values(proba, subsets) >= self.alpha

    # ------------------------------------------------------------------ state
    def to_dict(self) -> dict[str, Any]:
        """JSON-able state (the calibration scores and their categories)."""
        self._classifier()
        assert self._scores is not None and self._bins is not None
        return {"alpha": self.alpha, "n_classes": self.n_classes_, "subsets": self.subsets_,
                "scores": [round(float(s), 8) for s in self._scores],
                "bins": self._bins.astype(int).tolist(),
                "warnings": list(self.warnings_)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ConformalSets:
        """Rebuild from :meth:`to_dict`'s output."""
        try:
            out = cls(float(d["alpha"]))
            out.n_classes_ = int(d["n_classes"])
            out.subsets_ = [str(s) for s in d["subsets"]]
            out._scores = np.asarray(d["scores"], dtype=float)
            out._bins = np.asarray(d["bins"], dtype=np.int64)
        except (KeyError, TypeError, ValueError) as e:
            raise DataError(f"conformal state is incomplete or malformed ({e}); retrain the "
                            "model to recalibrate its prediction sets") from e
        if len(out._scores) != len(out._bins):
            raise DataError("conformal state: scores and bins differ in length; retrain")
        out.warnings_ = [str(w) for w in d.get("warnings", [])]
        for b in np.unique(out._bins):
            s, c = out.subsets_[int(b) // out.n_classes_], int(b) % out.n_classes_
            out.counts_.setdefault(s, {})[c] = int((out._bins == b).sum())
        return out


def _subsets(subsets: Sequence[str] | np.ndarray | None, n: int) -> np.ndarray:
    if subsets is None:
        return np.full(n, ALL_MODALITIES, dtype=object)
    out = np.asarray(subsets, dtype=object)
    if out.shape != (n,):
        raise DataError(f"conformal sets: {out.shape[0] if out.ndim else 0} subset names "
                        f"for {n} rows")
    return out


def format_sets(sets: np.ndarray, classes: Sequence[str]) -> list[str]:
    """``"0|1"``-style strings, classes in model order (``""`` for an empty set).

    >>> format_sets(np.array([[True, False], [True, True], [False, False]]), ["0", "1"])
    ['0', '0|1', '']
    """
    names = [str(c) for c in classes]
    return [SET_SEP.join(n for n, keep in zip(names, row, strict=True) if keep)
            for row in np.asarray(sets, dtype=bool)]


def parse_sets(values: Sequence[object], classes: Sequence[str]) -> np.ndarray:
    """The boolean matrix of :func:`format_sets`' strings (blank / NaN: the empty set)."""
    names = [str(c) for c in classes]
    out = np.zeros((len(values), len(names)), dtype=bool)
    where = {n: j for j, n in enumerate(names)}
    for i, v in enumerate(values):
        if v is None or (isinstance(v, float) and math.isnan(v)):
            text = ""
        elif isinstance(v, float) and v.is_integer() and str(v) not in where:
            text = str(int(v))  # a column of single-class sets read back as numbers
        else:
            text = str(v)
        for part in filter(None, text.split(SET_SEP)):
            if part not in where:
                raise DataError(f"prediction_set row {i}: {part!r} is not one of the model's "
                                f"classes {names}")
            out[i, where[part]] = True
    return out


def _summary(y: np.ndarray, sets: np.ndarray, classes: Sequence[str]) -> dict[str, Any]:
    size = sets.sum(axis=1)
    covered = sets[np.arange(len(y)), y] if len(y) else np.zeros(0, bool)
    by_class = {str(c): (float(covered[y == j].mean()) if (y == j).any() else None)
                for j, c in enumerate(classes)}
    sizes = {str(k): int((size == k).sum()) for k in range(sets.shape[1] + 1)}
    return {"n": len(y),
            "coverage": float(covered.mean()) if len(y) else None,
            "class_coverage": by_class,
            "mean_set_size": float(size.mean()) if len(y) else None,
            "abstain_rate": float((size != 1).mean()) if len(y) else None,
            "set_sizes": sizes}


def conformal_metrics(y: ArrayLike, sets: np.ndarray, classes: Sequence[str], alpha: float,
                      subsets: Sequence[str] | np.ndarray | None = None) -> dict[str, Any]:
    """Coverage and set sizes of prediction sets on labelled rows.

    ``{"alpha", "target", "n", "coverage", "class_coverage": {class: coverage},
    "mean_set_size", "abstain_rate", "set_sizes": {size: rows}, "by_modalities":
    {subset: the same}}`` (``by_modalities`` only with ``subsets``).

    >>> m = conformal_metrics([0, 1, 1], np.array([[1, 0], [1, 1], [1, 0]], bool), ["a", "b"], 0.1)
    >>> m["coverage"], m["class_coverage"], m["abstain_rate"]
    (0.6666666666666666, {'a': 1.0, 'b': 0.5}, 0.3333333333333333)
    """
    s = np.asarray(sets, dtype=bool)
    labels = as_labels(y, len(s), s.shape[1], "prediction sets")
    out: dict[str, Any] = {"alpha": float(alpha), "target": 1.0 - float(alpha),
                           **_summary(labels, s, classes)}
    if subsets is not None:
        names = _subsets(subsets, len(s))
        out["by_modalities"] = {
            str(name): _summary(labels[names == name], s[names == name], classes)
            for name in sorted(set(names.tolist()), key=lambda v: (-str(v).count("+"), v))
        }
    return out
