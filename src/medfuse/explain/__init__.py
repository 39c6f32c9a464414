"""Explanations of every prediction across image, text and tabular inputs.

:func:`explain` gives, per row, the prediction, each modality's share of it, image regions
(circles in original image pixels), word scores and tabular feature scores; with
``out_dir`` it also writes figures, HTML pages and ``explanations.json``.

Methods (details in the submodules):

* image regions: fused models, SmoothGrad integrated gradients of the image (mid-grey
  baseline, 16 noisy copies x 2 steps), ``|attribution|`` summed over channels, then
  :func:`~medfuse.explain.regions.localise`; hybrid models with a linear head, the same
  through the image encoder and the head; other hybrid heads (not differentiable),
  occlusion on an 8 x 8 grid (median-colour fill) with ``predict_proba``.
* words: fused, layer integrated gradients on the embedding layer (padding baseline);
  hybrid, leave-one-word-out with ``predict_proba``.
* features (tabular): fused, layer integrated gradients on the categorical embeddings
  and the continuous inputs; hybrid, coef x scaled value (lr), TreeSHAP (rf, xgboost,
  adaboost), ablation to the training mean (svm).
* modalities: ``sum |attribution|`` per modality (fused) or per block of the head's
  feature matrix (hybrid), normalised to sum to 1.

All explain the predicted class (``clf.predict``, i.e. at the model's threshold).

Modules, bottom to top (each imports only the ones before it; the estimator comes in
through :class:`~medfuse.estimators.base.Classifier`, ``clf.kind`` telling fused from
hybrid): ``_common`` (batches, forward wrappers, JSON values), ``pages`` (the Jinja2
templates), ``hybrid`` (a hybrid model's head and feature layout), ``adapters`` (any
estimator as an image classifier), ``regions`` -> ``figures``, ``perturbation`` ->
``image``, ``text``, ``tabular`` (the modalities), ``modality`` (shares), ``sanity``,
``report`` (the files of ``out_dir``), and this package's :func:`explain`.

>>> from medfuse.explain import explain  # doctest: +SKIP
>>> out = explain(clf, df, rows=[0, 5], out_dir="explanations")  # doctest: +SKIP
>>> out[0]["modalities"]  # doctest: +SKIP
{'image': 0.41, 'tabular': 0.22, 'text': 0.37}
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from medfuse.errors import ConfigError
from medfuse.explain._common import (
    BatchForward,
    check_rows,
    fused_batch,
    split_batch,
    to_jsonable,
)
from medfuse.explain.figures import figure_threshold_comparison, overlay_png
from medfuse.explain.image import grad_cam, ig_attributions, integrated_gradients, reduce_channels
from medfuse.explain.modality import hybrid_shares, modality_shares, normalise
from medfuse.explain.perturbation import lime_image, occlusion
from medfuse.explain.regions import localise, to_original
from medfuse.explain.report import methods, write_index, write_row
from medfuse.explain.sanity import randomisation_check, randomise_weights, rank_correlation
from medfuse.explain.tabular import _features, hybrid_features, tabular_attributions, tabular_ig
from medfuse.explain.text import (
    heatmap_html,
    heatmap_png,
    token_attributions,
    word_importance,
    words_html,
)

if TYPE_CHECKING:
    from medfuse.estimators.base import Classifier

__all__ = [
    "explain",
    "figure_threshold_comparison",
    "grad_cam",
    "heatmap_html",
    "heatmap_png",
    "hybrid_features",
    "hybrid_shares",
    "integrated_gradients",
    "lime_image",
    "localise",
    "modality_shares",
    "occlusion",
    "overlay_png",
    "randomisation_check",
    "randomise_weights",
    "rank_correlation",
    "tabular_attributions",
    "to_original",
    "token_attributions",
    "word_importance",
    "words_html",
]

EXPLANATIONS_FILE = "explanations.json"


def explain(
    clf: Classifier,
    df: pd.DataFrame,
    rows: Sequence[int] | None = None,
    out_dir: str | Path | None = None,
    threshold: float = 0.9,
    steps: int = 32,
    internal_batch_size: int = 8,
    max_regions: int = 3,
    method: str = "dbscan",
    label: str | None = None,
) -> list[dict[str, Any]]:
    """Explain the predictions of a fitted estimator for rows of ``df``.

    Parameters
    ----------
    clf:
        A fitted estimator (:class:`~medfuse.estimators.base.Classifier`: a
        :class:`~medfuse.FusionClassifier` or :class:`~medfuse.HybridClassifier`, any subset
        of modalities); ``clf.kind`` picks the methods.
    df:
        A table like the ones ``clf.predict`` takes (image paths absolute).
    rows:
        Positions (``iloc``) of the rows to explain; default all.
    out_dir:
        If given, write ``explanations.json``, per row ``row{i}_image.png`` (heatmap and
        circles), ``row{i}_threshold.png`` (threshold 0.5 "noisy" vs 0.95 "focused"),
        ``row{i}_text.html``, ``row{i}_text_heatmap.html`` / ``.png`` (fused models: tokens
        x embedding dims) and ``index.html`` linking them.
    threshold:
        Attribution quantile kept by :func:`~medfuse.explain.regions.localise`.
    steps, internal_batch_size:
        Integrated-gradients steps, and how many are forwarded at once (memory).
    max_regions, method:
        Passed to :func:`~medfuse.explain.regions.localise`.
    label:
        The class (or, multi-label, the finding) to explain in every row; default the
        predicted class, or for a multi-label model each row's most probable label.

    Returns
    -------
    list of dict
        Per row: ``row`` (position), ``prediction`` (label), ``probability`` (of the
        predicted class, calibrated; multi-label: of the explained ``label``, with
        ``present`` (its decision), ``predicted_labels`` and ``label_probabilities``),
        ``modalities`` ``{name: share}`` summing to 1,
        ``regions`` ``[{x, y, r, score}]`` in original image pixels, ``words``
        ``[{token, score}]`` (plus ``view`` for several text views) and ``features``
        ``[{name, value, score}]``; scores > 0 support the prediction.
    """
    fitted: Any = clf  # beyond the protocol: the family's own fitted parts (pre_, model_)
    fitted._check_fitted()
    positions = check_rows(rows, len(df))
    sub = df.iloc[positions]
    proba = clf.predict_proba(sub) if len(sub) else np.zeros((0, len(clf.classes_)))
    multilabel = bool(getattr(clf, "multilabel", False))
    if label is not None:
        if label not in [str(c) for c in clf.classes_]:
            raise ConfigError(f"--label {label!r} is not one of the model's "
                              f"{'labels' if multilabel else 'classes'} "
                              f"{[str(c) for c in clf.classes_]}; pick one of them.")
        labels = np.array([label] * len(sub), dtype=object)
    elif multilabel:  # each row's most probable label (decided or not)
        labels = np.asarray(clf.classes_, dtype=object)[proba.argmax(axis=1)] \
            if len(sub) else np.array([], dtype=object)
    else:
        labels = clf.decide(proba) if len(sub) else np.array([], dtype=object)
    decided = clf.decide(proba) if multilabel and len(sub) else None
    state = _HybridState(fitted) if clf.kind == "hybrid" else None
    out_path = Path(out_dir) if out_dir is not None else None
    if out_path is not None:
        out_path.mkdir(parents=True, exist_ok=True)
    results = []
    for k, pos in enumerate(positions):
        frame = sub.iloc[[k]]
        target = [str(c) for c in clf.classes_].index(str(labels[k]))
        entry: dict[str, Any] = {
            "row": pos, "prediction": to_jsonable(labels[k]),
            "probability": float(proba[k, target]), "modalities": {}, "regions": [],
            "words": [], "features": [],
        }
        if decided is not None:  # multi-label: the explained label and every decision
            names = np.asarray(clf.classes_, dtype=object)
            entry.update(label=to_jsonable(labels[k]), present=bool(decided[k, target]),
                         predicted_labels=[str(c) for c in names[decided[k].astype(bool)]],
                         label_probabilities={str(c): float(proba[k, j])
                                              for j, c in enumerate(clf.classes_)})
        if state is not None:
            extra = _explain_hybrid_row(fitted, state, frame, target, entry, threshold,
                                        max_regions, method, steps, internal_batch_size)
        else:
            extra = _explain_fused_row(fitted, frame, target, entry, threshold, max_regions,
                                       method, steps, internal_batch_size)
        if out_path is not None:
            entry["files"] = write_row(out_path, pos, entry, extra)
        results.append(to_jsonable(entry))
    if out_path is not None:
        doc = {"estimator": type(clf).__name__, "classes": list(clf.classes_),
               "threshold": threshold, "methods": methods(clf, state), "rows": results}
        (out_path / EXPLANATIONS_FILE).write_text(json.dumps(to_jsonable(doc), indent=1))
        write_index(out_path, doc)
    return results


class _HybridState:
    """What a hybrid explanation reuses across rows (the head explainer)."""

    def __init__(self, clf: Any) -> None:
        from medfuse.explain.hybrid import HeadExplainer

        self.clf = clf
        self.head = HeadExplainer(clf)
        self._labels: dict[int, Any] = {0: self.head}

    def explainer(self, target: int) -> Any:
        """The head explainer of class / label ``target`` (one per label, multi-label)."""
        if not getattr(self.clf, "multilabel", False):
            return self.head
        from medfuse.explain.hybrid import HeadExplainer

        if target not in self._labels:
            self._labels[target] = HeadExplainer(self.clf, label=target)
        return self._labels[target]


def _regions(clf: Any, path: str, amap: np.ndarray, threshold: float, max_regions: int,
             method: str) -> tuple[list[dict[str, float]], tuple[int, int]]:
    from medfuse.data.images import read_image

    size = read_image(path).size
    regions = localise(amap, threshold=threshold, max_regions=max_regions, method=method)
    return to_original(regions, size, (amap.shape[1], amap.shape[0])), size


def _explain_fused_row(clf: Any, frame: pd.DataFrame, target: int, entry: dict[str, Any],
                       threshold: float, max_regions: int, method: str, steps: int,
                       internal_batch_size: int) -> dict[str, Any]:
    model = clf.model_.eval()
    clean, batch = fused_batch(clf, frame)
    weights: dict[str, float] = {}
    extra: dict[str, Any] = {}
    present = batch.get("present") if getattr(model, "missing", False) else None
    for i, name in enumerate(model.encoders):
        if present is not None and not present[0, i]:  # the row lacks it: nothing to explain
            weights[name] = 0.0
            entry.setdefault("missing", []).append(name)
            continue
        if name == "image":
            keys, (images,), rest = split_batch(batch, ("image",))
            attr = ig_attributions(BatchForward(model, keys), images, target, steps,
                                   internal_batch_size, rest)
            weights[name] = float(attr.abs().sum())
            amap = reduce_channels(attr, "positive")[0]
            path = str(clean[clf.spec.image].iloc[0])
            entry["regions"], _ = _regions(clf, path, amap, threshold, max_regions, method)
            extra.update(image_path=path, attr=amap, method="SmoothGrad integrated gradients")
        elif name == "tabular":
            scores, total = tabular_ig(model, batch, target, clf.pre_, steps,
                                       internal_batch_size)
            weights[name] = float(total[0])
            tab = clf.pre_.tabular_
            entry["features"] = _features([*tab.categorical, *tab.continuous_names],
                                          scores[0], frame.iloc[0])
        elif name == "text":
            texts = frame[clf.spec.text].fillna("").astype(str).tolist()
            views = token_attributions(model, batch, target, clf.pre_, steps,
                                       internal_batch_size, texts)[0]
            weights[name] = sum(float(np.abs(v.matrix).sum()) for v in views)
            words = []
            for v in views:
                words += [{**w, "view": v.view} if len(views) > 1 else w for w in v.words()]
            entry["words"] = words
            extra["text_views"] = views
        else:  # pragma: no cover - FusionModel only knows the three modalities
            raise ConfigError(f"cannot explain modality {name!r}")
    entry["modalities"] = normalise(weights)
    return extra


def _explain_hybrid_row(clf: Any, state: _HybridState, frame: pd.DataFrame, target: int,
                        entry: dict[str, Any], threshold: float, max_regions: int, method: str,
                        steps: int, internal_batch_size: int) -> dict[str, Any]:
    from medfuse.explain.adapters import image_forward
    from medfuse.explain.hybrid import text_occlusion

    X = clf.transform(frame)
    head = state.explainer(target)
    entry["modalities"] = hybrid_shares(clf, X, target, head)
    extra: dict[str, Any] = {}
    if clf.pre_.tabular_ is not None:
        entry["features"] = hybrid_features(clf, X, target, frame.iloc[0], head)
    if clf.spec.text:
        entry["words"] = text_occlusion(clf, frame, target)
    if clf.spec.image:
        adapter = image_forward(clf, frame, predicted=target)
        if adapter.differentiable:
            attr = ig_attributions(adapter.fn, adapter.image, target, steps,
                                   internal_batch_size)
            amap, how = reduce_channels(attr, "positive")[0], "SmoothGrad integrated gradients"
        else:
            amap, how = occlusion(adapter.fn, adapter.image, target)[0], "occlusion"
        entry["regions"], _ = _regions(clf, adapter.path, amap, threshold, max_regions, method)
        extra.update(image_path=adapter.path, attr=amap, method=how)
    return extra
