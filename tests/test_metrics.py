from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from medfuse.evaluation.metrics import (
    METRIC_KEYS,
    classification_metrics,
    expected_calibration_error,
    summarize_folds,
)


def test_binary_metrics_match_definitions() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    p1 = np.clip(y * 0.6 + rng.random(200) * 0.5, 0, 1)
    proba = np.stack([1 - p1, p1], axis=1)
    m = classification_metrics(y, proba)
    assert set(METRIC_KEYS) <= set(m)
    pred = (p1 >= 0.5).astype(int)
    assert m["accuracy"] == pytest.approx((pred == y).mean())
    assert m["sensitivity"] == pytest.approx(pred[y == 1].mean())
    assert m["specificity"] == pytest.approx(1 - pred[y == 0].mean())
    assert m["roc_auc"] == pytest.approx(roc_auc_score(y, p1))
    assert m["n"] == 200


def test_positive_class_and_threshold() -> None:
    y = np.array([0, 0, 1, 1])
    proba = np.array([[0.8, 0.2], [0.6, 0.4], [0.3, 0.7], [0.55, 0.45]])
    assert classification_metrics(y, proba, threshold=0.4)["sensitivity"] == 1.0
    as_neg = classification_metrics(1 - y, proba[:, ::-1], positive=1)
    assert as_neg["accuracy"] == classification_metrics(y, proba)["accuracy"]


def test_single_class_gives_none_auc() -> None:
    m = classification_metrics(np.array([1, 1]), np.array([[0.2, 0.8], [0.6, 0.4]]))
    assert m["roc_auc"] is None and m["specificity"] is None and m["sensitivity"] == 0.5


def test_multiclass() -> None:
    y = np.array([0, 1, 2, 2])
    proba = np.eye(3)[[0, 1, 2, 1]] * 0.7 + 0.1
    m = classification_metrics(y, proba)
    assert m["accuracy"] == 0.75 and 0.0 <= m["roc_auc"] <= 1.0


def test_ece() -> None:
    conf = np.full(1000, 0.8)
    correct = np.arange(1000) % 5 != 0  # 80 % right at 80 % confidence
    assert expected_calibration_error(correct, conf) == pytest.approx(0.0, abs=1e-9)
    assert expected_calibration_error(np.ones(10, bool), np.full(10, 0.6)) == pytest.approx(0.4)


def test_summarize_folds() -> None:
    s = summarize_folds([{"fold": 0, "accuracy": 0.9, "roc_auc": None},
                         {"fold": 1, "accuracy": 0.8, "roc_auc": 0.7}])
    assert s["mean"]["accuracy"] == pytest.approx(0.85) and "fold" not in s["mean"]
    assert s["std"]["accuracy"] == pytest.approx(np.std([0.9, 0.8], ddof=1))
    assert s["mean"]["roc_auc"] == pytest.approx(0.7)  # folds without a value are skipped
