"""Label issues from out-of-sample probabilities: confident learning, through cleanlab.

A row's label is suspect when a model that never saw the row gives its label a low
probability *relative to how confident the model is about that class in general*.
Confident learning (Northcutt, Jiang & Chuang, JAIR 2021) estimates the joint
distribution of given and true labels from per-class probability thresholds and prunes
the rows most likely mislabelled. medfuse does not re-implement it: this module is a thin,
checked wrapper around :func:`cleanlab.filter.find_label_issues` (``prune_by_noise_rate``)
and :func:`cleanlab.rank.get_label_quality_scores` (``self_confidence``: the probability of
the given label, in ``[0, 1]``, low = suspect).

The probabilities must be out of sample -- out-of-fold predictions of ``medfuse cv``, or
cross-validated ones inside a training fold -- or every label looks right.

>>> import numpy as np
>>> y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
>>> p1 = np.array([.1, .2, .1, .9, .8, .9, .7, .95])  # row 3, labelled 0, looks like a 1
>>> found = find_issues(y, np.c_[1 - p1, p1])
>>> found.is_issue.nonzero()[0].tolist(), found.suggested.tolist()[3]
([3], 1)
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np

from medfuse.errors import DataError

#: what ``quality`` means, for files and reports
QUALITY_METHOD = "self_confidence"
FILTER_METHOD = "prune_by_noise_rate"


@dataclass
class LabelIssues:
    """Per row: ``quality`` (probability of the given label), ``is_issue``, ``suggested``.

    ``suggested`` is the most probable class index; ``notes`` holds cleanlab's warnings
    (e.g. a class too small to flag all its issues).
    """

    quality: np.ndarray
    is_issue: np.ndarray
    suggested: np.ndarray
    notes: list[str] = field(default_factory=list)


def find_issues(labels: np.ndarray, proba: np.ndarray) -> LabelIssues:
    """Confident-learning label issues of integer ``labels`` ``(n,)`` given ``proba`` ``(n, C)``.

    Raises :class:`~medfuse.errors.DataError` for mismatched shapes, labels outside
    ``0 .. C-1`` or probabilities that are not finite.
    """
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    labels = np.asarray(labels)
    proba = np.asarray(proba, dtype=np.float64)
    if proba.ndim != 2 or len(proba) != len(labels):
        raise DataError(f"label issues need one probability row per label: got {len(labels)} "
                        f"labels and probabilities of shape {proba.shape}.")
    n, k = proba.shape
    if n == 0:
        empty = np.zeros(0)
        return LabelIssues(empty, empty.astype(bool), empty.astype(int))
    if not np.isfinite(proba).all():
        bad = int(np.flatnonzero(~np.isfinite(proba).all(axis=1))[0])
        raise DataError(f"label issues: the probabilities of row {bad} are not finite "
                        f"({proba[bad].tolist()}); the predictions must be complete.")
    labels = labels.astype(int)
    if labels.min() < 0 or labels.max() >= k:
        raise DataError(f"label issues: labels must be class indices 0 .. {k - 1}; got "
                        f"{sorted(set(labels.tolist()) - set(range(k)))}.")
    proba = np.clip(proba, 0.0, None)
    proba = proba / np.clip(proba.sum(axis=1, keepdims=True), 1e-12, None)
    quality = get_label_quality_scores(labels, proba, method=QUALITY_METHOD)
    notes: list[str] = []
    if k < 2 or len(np.unique(labels)) < 2:
        notes.append("only one class among the labels: no label issues can be estimated")
        is_issue = np.zeros(n, dtype=bool)
    else:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            is_issue = np.asarray(find_label_issues(labels, proba, filter_by=FILTER_METHOD),
                                  dtype=bool)
        notes += sorted({str(w.message) for w in caught})
    return LabelIssues(np.asarray(quality, dtype=np.float64), is_issue,
                       proba.argmax(axis=1), notes)


@dataclass
class MultiLabelIssues:
    """Per row: ``quality`` (cleanlab's multi-label score, low = suspect) and ``is_issue``;
    per row and label: ``suspect`` (that label's own binary audit flags it)."""

    quality: np.ndarray
    is_issue: np.ndarray
    suspect: np.ndarray
    notes: list[str] = field(default_factory=list)


def find_multilabel_issues(hot: np.ndarray, proba: np.ndarray) -> MultiLabelIssues:
    """Confident-learning issues of a multi-label ``(n, L)`` 0/1 matrix given per-label
    probabilities ``(n, L)`` (cleanlab's ``multi_label=True`` filter and its multi-label
    quality score: per-label self-confidence aggregated by an exponential moving average).

    ``suspect[i, j]`` says which label of a flagged row looks wrong: label ``j`` audited
    alone as a binary task (:func:`find_issues`) flags row ``i``.

    >>> hot = np.array([[1, 0]] * 4 + [[0, 1]] * 4)
    >>> p = np.array([[.9, .1], [.8, .2], [.9, .1], [.1, .9]] + [[.1, .9]] * 4)
    >>> found = find_multilabel_issues(hot, p)
    >>> found.is_issue.nonzero()[0].tolist(), found.suspect[3].tolist()
    ([3], [True, True])
    """
    from cleanlab.filter import find_label_issues
    from cleanlab.multilabel_classification.rank import get_label_quality_scores

    hot = np.asarray(hot, dtype=int)
    proba = np.asarray(proba, dtype=np.float64)
    if proba.shape != hot.shape or proba.ndim != 2:
        raise DataError(f"multi-label issues need one probability per row and label: got "
                        f"labels of shape {hot.shape} and probabilities of shape {proba.shape}.")
    n, k = proba.shape
    if n == 0:
        empty = np.zeros(0)
        return MultiLabelIssues(empty, empty.astype(bool), np.zeros((0, k), dtype=bool))
    if not np.isfinite(proba).all():
        bad = int(np.flatnonzero(~np.isfinite(proba).all(axis=1))[0])
        raise DataError(f"label issues: the probabilities of row {bad} are not finite "
                        f"({proba[bad].tolist()}); the predictions must be complete.")
    proba = np.clip(proba, 0.0, 1.0)
    lists = [np.flatnonzero(row).tolist() for row in hot]
    quality = get_label_quality_scores(lists, proba)
    notes: list[str] = []
    suspect = np.zeros((n, k), dtype=bool)
    for j in range(k):
        one = find_issues(hot[:, j], np.c_[1.0 - proba[:, j], proba[:, j]])
        suspect[:, j] = one.is_issue
        notes += [f"label {j}: {note}" for note in one.notes]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        is_issue = np.asarray(find_label_issues(lists, proba, filter_by=FILTER_METHOD,
                                                multi_label=True), dtype=bool)
    notes += sorted({str(w.message) for w in caught})
    return MultiLabelIssues(np.asarray(quality, dtype=np.float64), is_issue, suspect, notes)
