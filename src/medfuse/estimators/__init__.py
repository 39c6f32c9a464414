"""Scikit-learn-like estimators over multimodal tables.

* :class:`FusionClassifier` (:mod:`~medfuse.estimators.fused`) -- image, tabular and text
  encoders fused and trained end to end;
* :class:`HybridClassifier` (:mod:`~medfuse.estimators.hybrid`) -- deep features and a
  classical head;
* :class:`~medfuse.estimators.base.DecisionMixin` -- the temperature and threshold both
  share (fitted on validation rows).

``__init__`` stores arguments only; ``fit`` validates them (errors name the
parameter, the value and the valid options) and learns; fitted state ends in ``_``.

>>> from medfuse import FusionClassifier, load_dataset   # doctest: +SKIP
>>> df, spec = load_dataset("synth-derm")               # doctest: +SKIP
>>> clf = FusionClassifier(spec, max_epochs=2).fit(df)  # doctest: +SKIP
>>> clf.predict_proba(df.head(3)).shape                 # doctest: +SKIP
(3, 2)
"""

from medfuse.estimators.base import (
    ESTIMATOR_FILE,
    MODEL_FILE,
    PREPROCESS_FILE,
    TEXT_ENCODERS,
    DecisionMixin,
    keep_missing,
    prediction_spec,
)
from medfuse.estimators.fused import LOG_FILE, FusionClassifier
from medfuse.estimators.hybrid import HEADS, HybridClassifier

__all__ = [
    "ESTIMATOR_FILE",
    "HEADS",
    "LOG_FILE",
    "MODEL_FILE",
    "PREPROCESS_FILE",
    "TEXT_ENCODERS",
    "DecisionMixin",
    "FusionClassifier",
    "HybridClassifier",
    "keep_missing",
    "prediction_spec",
]
