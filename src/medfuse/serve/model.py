"""The model ``medfuse serve`` answers with: a loaded run (its estimator, taken through
the :class:`~medfuse.estimators.base.Classifier` protocol, and an ONNX predictor when the
run holds ``model.onnx``), plus what the API reports about it (metrics, a model card).
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medfuse.estimators.base import Classifier
from medfuse.explain import explain
from medfuse.export import OnnxPredictor
from medfuse.io import MANIFEST, RunDirError, sha256
from medfuse.runs import load_model


class ServedModel:
    """A loaded run: the estimator, an optional ONNX predictor and what the API reports."""

    def __init__(self, run: Path) -> None:
        self.run = run
        self.clf: Classifier = load_model(run)
        self.spec = self.clf.spec
        self.onnx: Any = None
        if (run / "model.onnx").is_file():
            listed = json.loads((run / MANIFEST).read_text()).get("files", {})
            if "model.onnx" not in listed:  # load_model checked every listed file
                raise RunDirError(
                    f"'{run / 'model.onnx'}' is not in manifest.json, so it cannot be "
                    "checked: re-create it with `medfuse export RUN` or delete it"
                )

            self.onnx = OnnxPredictor(run, clf=self.clf)
        self.lock = threading.Lock()
        self.sha256 = self._model_sha()
        tab = getattr(getattr(self.clf, "pre_", None), "tabular_", None)
        self.categories: dict[str, list[str]] = (
            {k: list(v) for k, v in tab.categories_.items()} if tab is not None else {}
        )

    def _model_sha(self) -> str:
        path = self.run / MANIFEST
        if path.is_file():
            files = json.loads(path.read_text()).get("files", {})
            if "model.safetensors" in files:
                return str(files["model.safetensors"])
            return sha256(path)
        return "unknown"

    @property
    def backend(self) -> str:
        return "onnxruntime" if self.onnx is not None else "pytorch"

    def predict_proba(self, df: pd.DataFrame) -> np.ndarray:
        if self.onnx is not None:
            return np.asarray(self.onnx.predict_proba(df))
        with self.lock:
            return np.asarray(self.clf.predict_proba(df))

    def prediction_sets(self, df: pd.DataFrame, proba: np.ndarray) -> np.ndarray | None:
        """Conformal prediction sets of ``df`` from its probabilities ``proba`` (those of
        either backend); None for a model without conformal calibration."""
        with self.lock:
            return self.clf.prediction_sets(df, proba)

    def conformal_alpha(self) -> float | None:
        state = self.clf.conformal_
        return None if state is None else float(state["alpha"])

    def explain(self, df: pd.DataFrame) -> dict[str, Any]:
        with self.lock:
            return explain(self.clf, df, rows=[0])[0]

    def gate_weights(self, df: pd.DataFrame) -> dict[str, float] | None:
        """The gated fusion's weight of each modality for the one row of ``df``; ``None``
        for models without gates."""
        if self.clf.kind != "fused" or getattr(self.clf, "fusion", None) != "gated":
            return None
        fused: Any = self.clf  # an end-to-end model with a gated fusion head
        with self.lock:
            gates = fused.modality_weights(df)
        return {m: float(gates[m].iloc[0]) for m in gates.columns}

    def metrics(self) -> dict[str, Any] | None:
        path = self.run / "metrics.json"
        if not path.is_file():
            return None
        try:
            out: dict[str, Any] = json.loads(path.read_text())
        except json.JSONDecodeError:
            return None
        return out

    def card(self, metrics: dict[str, Any] | None) -> dict[str, Any]:
        """A short model card."""
        manifest: dict[str, Any] = {}
        if (self.run / MANIFEST).is_file():
            manifest = json.loads((self.run / MANIFEST).read_text())
        headline = {k: metrics.get(k) for k in ("n", "accuracy", "roc_auc", "pr_auc",
                                                 "sensitivity", "specificity")
                    if k in metrics} if metrics else {}
        return {
            "name": self.run.name,
            "estimator": type(self.clf).__name__,
            "modalities": list(self.spec.modalities),
            "target": self.spec.target,
            "positive": getattr(self.spec, "positive", None),
            "classes": list(self.clf.classes_),
            "epochs": getattr(self.clf, "epochs_", None),
            "created": manifest.get("created"),
            "versions": manifest.get("versions", {}),
            "model_sha256": self.sha256,
            "backend": self.backend,
            "test_metrics": headline,
            "intended_use": "Research and decision support only; not a medical device. "
                            "Predictions must be reviewed by a qualified clinician.",
        }

    def positive_index(self) -> int:
        classes = list(self.clf.classes_)
        positive = getattr(self.spec, "positive", None)
        if positive is not None and str(positive) in classes:
            return classes.index(str(positive))
        return len(classes) - 1
