"""Scoring: metrics of probabilities against labels, calibration and decision thresholds.

Pure functions of arrays (no model, no run directory), so every layer above -- training's
validation scores, the estimators' calibration, the evaluation reports -- shares them.
"""

from medfuse.scoring.calibration import THRESHOLD_METHODS, TemperatureScaler, choose_threshold
from medfuse.scoring.metrics import (
    METRIC_KEYS,
    classification_metrics,
    expected_calibration_error,
    summarize_folds,
)

__all__ = [
    "METRIC_KEYS",
    "THRESHOLD_METHODS",
    "TemperatureScaler",
    "choose_threshold",
    "classification_metrics",
    "expected_calibration_error",
    "summarize_folds",
]
