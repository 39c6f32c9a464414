"""Statistics on top of the metrics: bootstrap CIs, paired tests, thresholds, calibration.

* :func:`bootstrap_ci` -- percentile bootstrap confidence intervals of the metrics,
  resampling rows or whole groups (patients).
* :func:`delong_test` -- DeLong's paired test of two ROC AUCs on the same rows.
* :func:`paired_bootstrap` -- paired bootstrap of the difference of any metric.
* :func:`choose_threshold` -- fixed, Youden or minimum-sensitivity decision thresholds.
* :class:`TemperatureScaler` -- one-parameter post-hoc calibration.
* :func:`subgroup_metrics` -- metrics per level of categorical / binned continuous columns,
  flagging subgroups that do clearly worse than the whole set.

They live in :mod:`medfuse.evaluation.bootstrap`, :mod:`medfuse.evaluation.paired`,
:mod:`medfuse.evaluation.subgroups` and :mod:`medfuse.scoring.calibration` (the metric
kernels in :mod:`medfuse.evaluation.kernels`); this module gathers them under one name.

All randomness comes from ``numpy.random.default_rng(seed)``: same inputs and seed, same
result. ``proba`` is always an ``(n, n_classes)`` array of class probabilities (a 1-D vector
is read as the positive-class probability of a binary task) and ``y_true`` holds class
indices; binary tasks use the last class as positive unless ``positive`` is given.

>>> import numpy as np
>>> y = np.array([0, 0, 1, 1])
>>> choose_threshold(y, np.array([0.1, 0.4, 0.35, 0.8]), method="youden")
0.8
"""

from __future__ import annotations

from medfuse.evaluation.bootstrap import CI_KEYS, bootstrap_ci
from medfuse.evaluation.kernels import BOOTSTRAP_KEYS
from medfuse.evaluation.paired import delong_test, paired_bootstrap
from medfuse.evaluation.subgroups import COLUMN_KINDS as COLUMN_KINDS
from medfuse.evaluation.subgroups import MISSING_LEVEL as MISSING_LEVEL
from medfuse.evaluation.subgroups import subgroup_metrics
from medfuse.scoring.calibration import TemperatureScaler, choose_threshold

__all__ = [
    "BOOTSTRAP_KEYS",
    "CI_KEYS",
    "TemperatureScaler",
    "bootstrap_ci",
    "choose_threshold",
    "delong_test",
    "paired_bootstrap",
    "subgroup_metrics",
]
