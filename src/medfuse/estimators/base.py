"""What turns raw class probabilities into a decision: temperature, threshold, sets.

All three are learned on *validation* rows (never test rows) by
:meth:`DecisionMixin.calibrate` and saved with the model, so ``predict_proba``
returns calibrated probabilities, ``predict`` decides at the chosen threshold and
``prediction_sets`` gives conformal prediction sets everywhere: in ``evaluate``,
``predict``, ``cv`` and the app. The temperature is kept only where it lowers the
cross-validated ECE of the validation rows
(:func:`~medfuse.scoring.calibration.choose_temperature`).
"""

from __future__ import annotations

import importlib
import logging
import warnings
from collections.abc import Sequence
from itertools import combinations
from typing import Any, ClassVar, Literal, Protocol, runtime_checkable

import numpy as np
import pandas as pd
from scipy import special

from medfuse.config import DataPolicy, DataSpec
from medfuse.data.dataset import presence
from medfuse.errors import ConfigError
from medfuse.scoring.calibration import TemperatureScaler, choose_temperature, choose_threshold
from medfuse.scoring.conformal import ConformalSets, check_alpha
from medfuse.scoring.metrics import label_proba

log = logging.getLogger(__name__)

MODEL_FILE, PREPROCESS_FILE = "model.safetensors", "preprocess.json"
ESTIMATOR_FILE = "estimator.json"
TEXT_ENCODERS = ("wordcnn", "minilm", "wordcnn+minilm")
EXPLAIN_BACKEND = "medfuse.explain"  # module whose explain(clf, df, ...) backs clf.explain
NO_CONFORMAL = ("this model has no conformal calibration (it was saved before medfuse made "
                "prediction sets, or trained with evaluation.conformal_alpha: null), so it "
                "gives no prediction sets; retrain it to get them")


class CalibrationWarning(UserWarning):
    """Too few validation rows for a reliable temperature, threshold or conformal set."""


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
    conformal_: dict[str, Any] | None

    @property
    def handles_missing(self) -> bool: ...

    def input_spec(self) -> DataSpec: ...

    def predict_proba(self, df: pd.DataFrame, calibrated: bool = True,
                      without: Sequence[str] = ()) -> np.ndarray: ...

    def decide(self, proba: np.ndarray) -> np.ndarray: ...

    def predict(self, df: pd.DataFrame, without: Sequence[str] = ()) -> np.ndarray: ...

    def prediction_sets(self, df: pd.DataFrame, proba: np.ndarray | None = None,
                        without: Sequence[str] = ()) -> np.ndarray | None: ...

    def available_modalities(self, df: pd.DataFrame) -> np.ndarray: ...

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
    calibration_: dict[str, Any] | None = None  # choose_temperature's decision
    # multi-label models: one temperature and one threshold per label (classes_ order)
    label_temperatures_: list[float] | None = None
    label_thresholds_: list[float] | None = None
    conformal_: dict[str, Any] | None = None  # ConformalSets.to_dict(), or None
    _conformal_sets: ConformalSets | None = None
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

    @property
    def multilabel(self) -> bool:
        """Several labels per row: probabilities are one sigmoid per label ``(n, L)``."""
        return bool(self.spec.multilabel)

    @property
    def thresholds(self) -> list[float]:
        """Decision threshold of each label (multi-label), or ``[threshold_]``."""
        if self.multilabel:
            return list(self.label_thresholds_ or [0.5] * len(self.classes_))
        return [self.threshold_]

    def scale(self, raw: np.ndarray) -> np.ndarray:
        """Apply the fitted temperature(s) to raw probabilities."""
        if self.multilabel:
            temps = np.asarray(self.label_temperatures_ or [1.0] * raw.shape[1], dtype=float)
            if np.all(temps == 1.0):
                return raw
            logit = special.logit(np.clip(raw, 1e-7, 1 - 1e-7))
            return np.asarray(special.expit(logit / temps), dtype=float)
        if self.temperature_ == 1.0:
            return raw
        return TemperatureScaler.from_dict({"temperature": self.temperature_}).transform(raw)

    def decide(self, proba: np.ndarray) -> np.ndarray:
        """Class labels from (calibrated) probabilities: the threshold for binary tasks."""
        if self.multilabel:  # (n, L) 0/1, each label at its own threshold
            return (proba >= np.asarray(self.thresholds)).astype(int)
        classes = np.asarray(self.classes_, dtype=object)
        if len(classes) == 2:
            return classes[(proba[:, 1] >= self.threshold_).astype(int)]
        return classes[proba.argmax(axis=1)]

    def predict(self, df: pd.DataFrame, without: Sequence[str] = ()) -> np.ndarray:
        """Predicted class labels (strings, as in ``classes_``) at ``threshold_``."""
        return self.decide(self.predict_proba(df, without=without))

    def calibrate(self, valid: pd.DataFrame, temperature: bool = True,
                  threshold: str = "fixed", value: float | None = None,
                  conformal_alpha: float | None = None, seed: int = 0) -> DecisionMixin:
        """Fit the temperature, choose the threshold and calibrate conformal sets on
        labelled validation rows.

        ``temperature``: fit one and keep it only if it lowers the cross-validated ECE of
        ``valid`` (:func:`~medfuse.scoring.calibration.choose_temperature`; its decision
        is ``calibration_``). ``threshold``: ``fixed`` (``value`` or 0.5), ``youden`` or
        ``sensitivity`` (the highest threshold whose sensitivity is at least ``value``).
        ``conformal_alpha``: calibrate class-conditional conformal prediction sets at that
        miscoverage (:meth:`fit_conformal`); None leaves them off.
        """
        self._check_fitted()
        raw = self._raw_proba(valid)
        y = self.pre_.encode_target(valid).numpy()
        if self.multilabel:
            return self._calibrate_labels(raw, y.astype(int), temperature, threshold, value,
                                          conformal_alpha, seed)
        self.temperature_, self.calibration_ = 1.0, None
        if temperature:
            self.calibration_ = choose_temperature(raw, y, seed=seed)
            self.temperature_ = float(self.calibration_["temperature"])
            log.info("temperature %s", self.calibration_["reason"])
            if self.calibration_.get("warning"):
                warnings.warn(self.calibration_["warning"], CalibrationWarning, stacklevel=2)
        if len(self.classes_) == 2:
            self.threshold_ = float(choose_threshold(y == 1, self.scale(raw)[:, 1], threshold,
                                                     value))
            self.threshold_method_ = threshold
        if conformal_alpha is not None:
            self.fit_conformal(valid, conformal_alpha, raw=raw)
        return self

    def _calibrate_labels(self, raw: np.ndarray, y: np.ndarray, temperature: bool,
                          threshold: str, value: float | None, conformal_alpha: float | None,
                          seed: int) -> DecisionMixin:
        """Multi-label :meth:`calibrate`: each label is a binary task of its own, with its
        own temperature (kept only where it lowers that label's cross-validated ECE) and
        its own threshold, both chosen on the validation rows."""
        temps, thresholds, decisions = [], [], {}
        for j, name in enumerate(self.classes_):
            binary = label_proba(raw, j)
            choice = choose_temperature(binary, y[:, j], seed=seed) if temperature else None
            t = float(choice["temperature"]) if choice else 1.0
            temps.append(t)
            if choice:
                decisions[name] = choice
            scaled = TemperatureScaler.from_dict({"temperature": t}).transform(binary)
            thresholds.append(float(choose_threshold(y[:, j] == 1, scaled[:, 1], threshold,
                                                     value)))
        self.temperature_, self.threshold_method_ = 1.0, threshold
        self.label_temperatures_, self.label_thresholds_ = temps, thresholds
        kept = [n for n, d in decisions.items() if d["kept"]]
        self.calibration_ = None if not temperature else {
            "kept": bool(kept), "per_label": decisions,
            "reason": f"per label: temperature kept for {len(kept)} of {len(self.classes_)} "
                      f"labels{' (' + ', '.join(kept) + ')' if kept else ''}, each where it "
                      "lowered that label's cross-validated ECE on the validation rows"}
        log.info("temperature %s", (self.calibration_ or {}).get("reason", "not fitted"))
        if conformal_alpha is not None:
            log.info("conformal prediction sets are made for single-label targets only; "
                     "this multi-label model has per-label probabilities and thresholds")
        self.conformal_, self._conformal_sets = None, None
        return self

    # ------------------------------------------------------------------ conformal sets
    def available_modalities(self, df: pd.DataFrame) -> np.ndarray:
        """Each row's available modalities, e.g. ``"image+text"`` (object array).

        A model that needs every modality names them all for every row.
        """
        modalities = list(self.spec.modalities)
        if not self.handles_missing:
            return np.full(len(df), "+".join(modalities), dtype=object)
        has = presence(df, self.spec).astype(bool)
        return np.array(["+".join(m for m, h in zip(modalities, row, strict=True) if h)
                         for row in has], dtype=object)

    def fit_conformal(self, valid: pd.DataFrame, alpha: float,
                      raw: np.ndarray | None = None) -> DecisionMixin:
        """Calibrate conformal prediction sets on labelled validation rows.

        Sets are class-conditional (Mondrian): each class is covered at ``1 - alpha``. A
        model that predicts without a modality is calibrated once per subset of
        modalities -- every validation row predicted with the other modalities left out --
        so a row's set is calibrated for the modalities it actually has.
        """
        self._check_fitted()
        alpha = check_alpha(alpha)
        if self.multilabel:  # single-label only (see _calibrate_labels)
            return self
        y = self.pre_.encode_target(valid).numpy()
        if not self.handles_missing:
            proba = self.scale(self._raw_proba(valid) if raw is None else raw)
            return self.fit_conformal_proba(proba, y, alpha, self.available_modalities(valid))
        modalities = list(self.spec.modalities)
        has = self.available_modalities(valid)
        probas, names, labels = [], [], []
        for k in range(len(modalities), 0, -1):
            for used in combinations(modalities, k):
                without = [m for m in modalities if m not in used]
                hidden = self._hide(valid, without)
                left = np.array(["+".join(m for m in modalities if m in used
                                          and m in str(h).split("+")) for h in has],
                                dtype=object)
                rows = left != ""
                if not rows.any():
                    continue
                probas.append(self.scale(self._raw_proba(hidden[rows])))
                names.append(left[rows])
                labels.append(y[rows])
        return self.fit_conformal_proba(np.concatenate(probas), np.concatenate(labels), alpha,
                                        np.concatenate(names))

    def fit_conformal_proba(self, proba: np.ndarray, y: np.ndarray, alpha: float,
                            subsets: np.ndarray | None = None) -> DecisionMixin:
        """Calibrate conformal sets on out-of-sample probabilities ``proba`` of labels ``y``
        (e.g. cross-validated ones, where no validation rows were held out)."""
        if self.multilabel:  # single-label only (see _calibrate_labels)
            return self
        sets = ConformalSets(check_alpha(alpha)).fit(proba, y, subsets,
                                                     class_names=self.classes_)
        for message in sets.warnings_:
            warnings.warn(message, CalibrationWarning, stacklevel=2)
        self.conformal_, self._conformal_sets = sets.to_dict(), sets
        return self

    def prediction_sets(self, df: pd.DataFrame, proba: np.ndarray | None = None,
                        without: Sequence[str] = ()) -> np.ndarray | None:
        """Boolean ``(n, n_classes)`` conformal prediction sets of rows ``df``, or None for
        a model without conformal calibration (:data:`NO_CONFORMAL`).

        ``proba``: the (calibrated) probabilities of ``df`` if already computed.
        """
        if self.conformal_ is None:
            return None
        if self._conformal_sets is None:
            self._conformal_sets = ConformalSets.from_dict(self.conformal_)
        if proba is None:
            proba = self.predict_proba(df, without=without)
        names = self.available_modalities(self._hide(df, without) if without else df)
        return self._conformal_sets.predict(proba, names)

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
                "threshold_method": self.threshold_method_,
                "label_temperatures": self.label_temperatures_,
                "label_thresholds": self.label_thresholds_,
                "calibration": self.calibration_, "conformal": self.conformal_}

    def set_decision_state(self, state: dict[str, Any]) -> None:
        self.temperature_ = float(state.get("temperature", 1.0))
        self.threshold_ = float(state.get("threshold", 0.5))
        self.threshold_method_ = str(state.get("threshold_method", "fixed"))
        self.calibration_ = state.get("calibration")
        self.label_temperatures_ = state.get("label_temperatures")
        self.label_thresholds_ = state.get("label_thresholds")
        self.conformal_ = state.get("conformal")  # absent in models saved before sets existed
        self._conformal_sets = None


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
