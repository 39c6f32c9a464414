"""Evaluating a fitted model on labelled rows: metrics, predictions and modality subsets.

Any fitted medfuse model (a :class:`~medfuse.estimators.base.Classifier`, fused or
hybrid) is scored here; the jobs in :mod:`medfuse.runs` write what these return into run
directories (``metrics.json``, ``predictions.csv``, ``modality_subsets.json``).
"""

from __future__ import annotations

from collections.abc import Mapping
from itertools import combinations
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from medfuse.errors import ConfigError
from medfuse.scoring.metrics import classification_metrics

if TYPE_CHECKING:
    from medfuse.estimators.base import Classifier


def _target_codes(clf: Classifier, df: pd.DataFrame) -> np.ndarray:
    """Class indices of ``df``'s labels (an unseen label is an error naming it)."""
    fitted: Any = clf  # beyond the protocol: the model's fitted preprocessor
    return np.asarray(fitted.pre_.encode_target(df[clf.spec.target]).numpy())


def evaluate(
    clf: Classifier, df: pd.DataFrame, bootstrap: int = 0, seed: int = 0,
    subgroups: Mapping[str, str] | None = None, bins: int = 4,
) -> tuple[dict[str, Any], pd.DataFrame]:
    """Metrics (``metrics.json`` keys) and a predictions table for labelled rows ``df``.

    Metrics use the model's calibrated probabilities and its decision threshold.
    ``bootstrap > 0`` adds ``ci95`` (95% CIs resampling patients, i.e. ``spec.group``,
    when the spec has one); ``subgroups`` adds ``subgroups`` (metrics per level / bin);
    a calibrated model also reports ``calibration`` (the temperature decision and the
    ECE before / after); a model with conformal calibration reports ``conformal``
    (coverage overall, per class and per available-modality subset; set sizes).
    """
    from medfuse.evaluation.stats import bootstrap_ci, subgroup_metrics
    from medfuse.scoring.conformal import conformal_metrics
    from medfuse.scoring.metrics import expected_calibration_error

    fitted: Any = clf  # beyond the protocol: DecisionMixin.scale (the fitted temperature)
    raw = clf.predict_proba(df, calibrated=False)
    proba = fitted.scale(raw)
    y = _target_codes(clf, df)
    metrics = classification_metrics(y, proba, threshold=clf.threshold_)
    groups = df[clf.spec.group].astype(str).to_numpy() if clf.spec.group else None
    if bootstrap:
        metrics["ci95"] = bootstrap_ci(y, proba, groups=groups, n_boot=bootstrap, seed=seed,
                                       threshold=clf.threshold_)
    decision = getattr(clf, "calibration_", None)
    if clf.temperature_ != 1.0 or decision:
        def ece(p: np.ndarray) -> float:
            return expected_calibration_error(p.argmax(1) == y, p.max(1))

        metrics["calibration"] = {**(decision or {}), "temperature": clf.temperature_,
                                  "ece_before": ece(raw), "ece_after": ece(proba)}
    sets = clf.prediction_sets(df, proba)
    if sets is not None:
        alpha = float((clf.conformal_ or {})["alpha"])
        subsets = clf.available_modalities(df) if clf.handles_missing else None
        metrics["conformal"] = conformal_metrics(y, sets, clf.classes_, alpha, subsets)
        metrics["conformal"]["calibration_warnings"] = list(
            (clf.conformal_ or {}).get("warnings", []))
    if subgroups:
        metrics["subgroups"] = subgroup_metrics(
            df.reset_index(drop=True), y, proba, dict(subgroups), bins=bins,
            threshold=clf.threshold_
        )
    return metrics, predictions_frame(clf, df, proba, raw, sets=sets)


def modality_subsets(clf: Classifier, df: pd.DataFrame) -> dict[str, Any]:
    """Metrics of a model that handles missing modalities, per modality subset.

    ``removed``: for each non-empty subset of the model's modalities (key: the modalities
    used, e.g. ``tabular+text``), the metrics of every row of ``df`` predicted with the
    other modalities left out (``predict_proba(without=...)``); ``all`` uses everything.
    ``available``: rows grouped by the modalities they actually have (their empty cells),
    with ``n`` and the metrics of each group.
    """
    from medfuse.data.dataset import presence
    from medfuse.data.validation import validate_table

    if not clf.handles_missing:
        raise ConfigError("per-modality-subset metrics need a model trained for missing "
                          "modalities (model.modality_dropout > 0)")
    modalities = list(clf.spec.modalities)
    y = _target_codes(clf, df)
    removed: dict[str, Any] = {}
    full = clf.predict_proba(df)
    for k in range(len(modalities), 0, -1):
        for used in combinations(modalities, k):
            without = [m for m in modalities if m not in used]
            proba = clf.predict_proba(df, without=without) if without else full
            removed["+".join(used)] = classification_metrics(y, proba, threshold=clf.threshold_)
    # which modalities each row really has (validated as for prediction: empty cells kept)
    clean, _ = validate_table(df, clf.input_spec(), table="evaluate", check_images="exists",
                              require_target=False, training=False)
    has = presence(clean, clf.spec).astype(bool)
    names = np.array(["+".join(m for m, h in zip(modalities, row, strict=True) if h)
                      for row in has])
    available: dict[str, Any] = {}
    for name in sorted(set(names.tolist()), key=lambda n: (-n.count("+"), n)):
        rows = names == name
        available[name or "none"] = {
            "n": int(rows.sum()),
            **classification_metrics(y[rows], full[rows], threshold=clf.threshold_),
        }
    return {"modalities": modalities, "removed": removed, "available": available}


def predictions_frame(clf: Classifier, df: pd.DataFrame, proba: np.ndarray,
                      raw: np.ndarray | None = None, sets: np.ndarray | None = None
                      ) -> pd.DataFrame:
    """One row per input row: ids, target (if present), ``prob_<class>``, ``prediction``.

    With ``raw`` (uncalibrated probabilities that differ from ``proba``), also
    ``raw_prob_<class>``; gated fused models add the gate's weight of each modality
    (``gate_<modality>``). A model with conformal calibration adds ``prediction_set``
    (classes joined by ``|``, e.g. ``"0|1"``; empty for the empty set) and ``abstain``
    (the set is not a single class); ``sets`` are those sets if already computed. A
    model that predicts without a modality adds ``modalities``, each row's available ones.
    """
    from medfuse.scoring.conformal import format_sets

    spec = clf.spec
    keep = [c for c in (spec.group, spec.image, spec.target) if c and c in df.columns]
    out = df[keep].reset_index(drop=True).copy()
    for j, cls in enumerate(clf.classes_):
        out[f"prob_{cls}"] = proba[:, j]
    if raw is not None and not np.array_equal(raw, proba):
        for j, cls in enumerate(clf.classes_):
            out[f"raw_prob_{cls}"] = raw[:, j]
    out["prediction"] = clf.decide(proba)
    if sets is None:
        sets = clf.prediction_sets(df, proba)
    if sets is not None:
        out["prediction_set"] = format_sets(sets, clf.classes_)
        out["abstain"] = sets.sum(axis=1) != 1
    if clf.handles_missing:
        out["modalities"] = clf.available_modalities(df)
    if clf.kind == "fused" and getattr(clf, "fusion", None) == "gated" and len(df):
        fitted: Any = clf  # beyond the protocol: a gated fused model's gate weights
        gates = fitted.modality_weights(df)
        for m in gates.columns:
            out[f"gate_{m}"] = gates[m].to_numpy()
    return out
