"""Classification metrics (moved to :mod:`medfuse.scoring.metrics`; this path still works)."""

from medfuse.scoring.metrics import (
    METRIC_KEYS,
    classification_metrics,
    expected_calibration_error,
    summarize_folds,
)

__all__ = ["METRIC_KEYS", "classification_metrics", "expected_calibration_error", "summarize_folds"]
