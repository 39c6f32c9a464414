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
    return np.asarray(fitted.pre_.encode_target(df).numpy())


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
    groups = df[clf.spec.group].astype(str).to_numpy() if clf.spec.group else None
    if getattr(clf, "multilabel", False):
        return _evaluate_multilabel(clf, df, y, proba, raw, groups, bootstrap, seed,
                                    subgroups, bins)
    metrics = classification_metrics(y, proba, threshold=clf.threshold_)
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


def _evaluate_multilabel(
    clf: Classifier, df: pd.DataFrame, y: np.ndarray, proba: np.ndarray, raw: np.ndarray,
    groups: np.ndarray | None, bootstrap: int, seed: int,
    subgroups: Mapping[str, str] | None, bins: int,
) -> tuple[dict[str, Any], pd.DataFrame]:
    """:func:`evaluate` for a multi-label model: every label scored as a binary task at its
    own threshold, macro / micro summaries, per-label CIs and subgroups (rows carry
    ``label``). Conformal sets are single-label only, so there are none here."""
    from medfuse.evaluation.multilabel import multilabel_evaluation
    from medfuse.evaluation.stats import subgroup_metrics
    from medfuse.scoring.metrics import label_proba

    metrics = multilabel_evaluation(clf, y, proba, raw, groups, bootstrap, seed)
    if subgroups:
        frame = df.reset_index(drop=True)
        thresholds = list(metrics["thresholds"].values())
        metrics["subgroups"] = [
            {"label": name, **row}
            for j, name in enumerate(clf.classes_)
            for row in subgroup_metrics(frame, y[:, j], label_proba(proba, j), dict(subgroups),
                                        bins=bins, threshold=float(thresholds[j]))]
    return metrics, predictions_frame(clf, df, proba, raw)


def score(clf: Classifier, y: np.ndarray, proba: np.ndarray) -> dict[str, Any]:
    """Metrics at the model's decision threshold(s): binary / multi-class or multi-label."""
    if getattr(clf, "multilabel", False):
        from medfuse.scoring.metrics import multilabel_metrics

        thresholds = list(getattr(clf, "thresholds", [0.5] * len(clf.classes_)))
        return multilabel_metrics(y, proba, thresholds, clf.classes_)
    return classification_metrics(y, proba, threshold=clf.threshold_)


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
            removed["+".join(used)] = score(clf, y, proba)
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
            **score(clf, y[rows], full[rows]),
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
    if getattr(clf, "multilabel", False):  # no sets, no gates: one binary output per label
        from medfuse.evaluation.multilabel import multilabel_predictions

        out = multilabel_predictions(clf, out, proba, raw)
        if clf.handles_missing:
            out["modalities"] = clf.available_modalities(df)
        return out
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
