"""What turns raw class probabilities into a decision: temperature and threshold.

Both are learned on *validation* rows (never test rows) by
:meth:`DecisionMixin.calibrate` and saved with the model, so ``predict_proba``
returns calibrated probabilities and ``predict`` decides at the chosen
threshold everywhere: in ``evaluate``, ``predict`` and the app.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any, ClassVar, Literal, Protocol, runtime_checkable

import numpy as np
import pandas as pd

from medfuse.config import DataPolicy, DataSpec
from medfuse.errors import ConfigError
from medfuse.scoring.calibration import TemperatureScaler, choose_threshold

MODEL_FILE, PREPROCESS_FILE = "model.safetensors", "preprocess.json"
ESTIMATOR_FILE = "estimator.json"
TEXT_ENCODERS = ("wordcnn", "minilm", "wordcnn+minilm")
EXPLAIN_BACKEND = "medfuse.explain"  # module whose explain(clf, df, ...) backs clf.explain



@runtime_checkable
class Classifier(Protocol):
    """What the layers above the estimators (evaluation, explanations, runs, the service)
    ask of a fitted medfuse model, instead of importing its class.

    ``kind`` says which family it is (``"fused"``: trained end to end, ``model_`` is its
    network; ``"hybrid"``: deep features + a classical head), for the few places that
    treat the two differently (explanations, ONNX export).
    """

    kind: ClassVar[Literal["fused", "hybrid"]]
    spec: DataSpec
    classes_: list[str]
    temperature_: float
    threshold_: float
    threshold_method_: str

    @property
    def handles_missing(self) -> bool: ...

    def input_spec(self) -> DataSpec: ...

    def predict_proba(self, df: pd.DataFrame, calibrated: bool = True,
                      without: Sequence[str] = ()) -> np.ndarray: ...

    def decide(self, proba: np.ndarray) -> np.ndarray: ...

    def predict(self, df: pd.DataFrame, without: Sequence[str] = ()) -> np.ndarray: ...

    def training_seconds(self) -> float: ...

    def training_precision(self) -> str | None: ...

    def save(self, path: Any) -> Any: ...


class DecisionMixin:
    """Temperature scaling + decision threshold shared by every medfuse estimator.

    Subclasses implement ``_raw_proba(df)`` and have ``classes_``, ``pre_`` and ``spec``.
    """

    kind: ClassVar[Literal["fused", "hybrid"]]
    temperature_: float = 1.0
    threshold_: float = 0.5
    threshold_method_: str = "fixed"
    classes_: list[str]
    pre_: Any
    spec: Any

    def _raw_proba(self, df: pd.DataFrame) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def _check_fitted(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    @property
    def handles_missing(self) -> bool:
        """True when the model predicts rows that lack a modality (see ``without``)."""
        return False

    def input_spec(self) -> Any:
        """The spec prediction tables are validated with (rows are never dropped)."""
        return prediction_spec(self.spec, missing=self.handles_missing)

    def _hide(self, df: pd.DataFrame, without: Sequence[str]) -> pd.DataFrame:
        """``df`` with the cells of the modalities ``without`` emptied (columns made if absent).

        Only models that handle missing modalities accept ``without``.
        """
        without = list(dict.fromkeys(without))
        if not without:
            return df
        unknown = [m for m in without if m not in self.spec.modalities]
        if unknown:
            raise ConfigError(f"without={unknown}: this model's modalities are "
                              f"{self.spec.modalities}")
        if not self.handles_missing:
            raise ConfigError(
                f"without={without}: this {type(self).__name__} was not trained to predict "
                "without a modality; train a fused model with model.modality_dropout > 0 "
                "(e.g. --set model.modality_dropout=0.2)."
            )
        if set(without) == set(self.spec.modalities):
            raise ConfigError(f"without={without} leaves no modality to predict from")
        out = df.copy()
        for m in without:
            if m == "image":
                out[self.spec.image] = ""
            elif m == "text":
                out[self.spec.text] = ""
            else:
                for col in self.spec.tabular:
                    out[col] = np.nan
        return out

    def predict_proba(self, df: pd.DataFrame, calibrated: bool = True,
                      without: Sequence[str] = ()) -> np.ndarray:
        """Class probabilities ``(n, n_classes)`` in ``classes_`` order.

        ``calibrated=False`` skips the temperature learned by :meth:`calibrate`.
        ``without`` names modalities to leave out of every row (their columns may be
        absent from ``df``); for models trained with ``modality_dropout > 0``.
        """
        self._check_fitted()
        raw = self._raw_proba(self._hide(df, without))
        return self.scale(raw) if calibrated else raw

    def scale(self, raw: np.ndarray) -> np.ndarray:
        """Apply the fitted temperature to raw probabilities."""
        if self.temperature_ == 1.0:
            return raw
        return TemperatureScaler.from_dict({"temperature": self.temperature_}).transform(raw)

    def decide(self, proba: np.ndarray) -> np.ndarray:
        """Class labels from (calibrated) probabilities: the threshold for binary tasks."""
        classes = np.asarray(self.classes_, dtype=object)
        if len(classes) == 2:
            return classes[(proba[:, 1] >= self.threshold_).astype(int)]
        return classes[proba.argmax(axis=1)]

    def predict(self, df: pd.DataFrame, without: Sequence[str] = ()) -> np.ndarray:
        """Predicted class labels (strings, as in ``classes_``) at ``threshold_``."""
        return self.decide(self.predict_proba(df, without=without))

    def calibrate(self, valid: pd.DataFrame, temperature: bool = True,
                  threshold: str = "fixed", value: float | None = None) -> DecisionMixin:
        """Fit the temperature and choose the threshold on labelled validation rows.

        ``threshold``: ``fixed`` (``value`` or 0.5), ``youden`` or ``sensitivity`` (the
        highest threshold whose sensitivity is at least ``value``).
        """
        self._check_fitted()
        raw = self._raw_proba(valid)
        y = self.pre_.encode_target(valid[self.spec.target]).numpy()
        self.temperature_ = 1.0
        if temperature and len(np.unique(y)) > 1:
            self.temperature_ = float(TemperatureScaler().fit(raw, y).temperature_)
        if len(self.classes_) == 2:
            self.threshold_ = float(choose_threshold(y == 1, self.scale(raw)[:, 1], threshold,
                                                     value))
            self.threshold_method_ = threshold
        return self

    def explain(self, df: pd.DataFrame, rows: list[int] | None = None,
                out_dir: str | None = None, **kw: Any) -> list[dict[str, Any]]:
        """Per-row explanations across every modality (see :func:`medfuse.explain.explain`).

        Each row: ``prediction``, ``probability``, ``modalities`` (share per modality),
        ``regions`` (circles in original image pixels), ``words``, ``features``.
        """
        # The explanation layer sits above the estimators (it takes any fitted estimator
        # through a protocol), so this convenience finds it by name at call time, as
        # pandas' ``DataFrame.plot`` finds its plotting backend: no import points upwards.
        backend = importlib.import_module(EXPLAIN_BACKEND)
        return list(backend.explain(self, df, rows=rows, out_dir=out_dir, **kw))

    def decision_state(self) -> dict[str, Any]:
        return {"temperature": self.temperature_, "threshold": self.threshold_,
                "threshold_method": self.threshold_method_}

    def set_decision_state(self, state: dict[str, Any]) -> None:
        self.temperature_ = float(state.get("temperature", 1.0))
        self.threshold_ = float(state.get("threshold", 0.5))
        self.threshold_method_ = str(state.get("threshold_method", "fixed"))


def prediction_spec(spec: DataSpec, missing: bool = False) -> DataSpec:
    """The spec for prediction tables: rows are never dropped (``drop`` becomes ``error``).

    ``missing=True`` (models that predict without a modality) keeps rows lacking their
    image, text or tabular values (see :func:`keep_missing`).
    """
    values = {k: ("error" if v == "drop" else v) for k, v in spec.policy.model_dump().items()}
    out = spec.model_copy(update={"policy": DataPolicy(**values)})
    return keep_missing(out) if missing else out


def keep_missing(spec: DataSpec) -> DataSpec:
    """``spec`` keeping rows without an image, with an empty text or missing numbers.

    >>> keep_missing(DataSpec(image="path", target="y")).policy.missing_image
    'keep'
    """
    policy = spec.policy.model_copy(
        update={"missing_image": "keep", "empty_text": "keep", "missing_number": "keep"})
    return spec.model_copy(update={"policy": policy})
