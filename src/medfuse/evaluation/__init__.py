"""Evaluation: metrics (``metrics.json`` contract)."""

from medfuse.scoring.metrics import METRIC_KEYS, classification_metrics, summarize_folds

__all__ = ["METRIC_KEYS", "classification_metrics", "summarize_folds"]
