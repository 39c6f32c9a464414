"""Explaining :class:`~medfuse.HybridClassifier` heads on their feature matrix.

The feature matrix is ``[image | one-hot categorical + continuous | text]`` (a trained
extractor puts its ``[image | text]`` network features first). :func:`feature_layout`
names every column's modality and tabular column; :class:`HeadExplainer` gives each
column's contribution to the explained class:

* ``lr`` (any linear head): ``coef * z`` with ``z`` the head's scaled input, i.e.
  ``coef * (x - mean) / scale`` for the pipeline's ``StandardScaler`` (the intercept and
  the training mean are the reference). Binary heads: the sign flips for class 0.
* ``rf``, ``xgboost``: exact path-dependent TreeSHAP (``shap.TreeExplainer``): random
  forests in probability space, XGBoost in margin (log-odds) space.
* ``adaboost``: shap does not read AdaBoost models, so the ensemble is handed to
  ``shap.TreeExplainer`` as custom trees whose leaves hold each stump's weighted SAMME
  vote; the SHAP values then add up exactly to ``decision_function``.
* other heads (``svm``): no per-column attribution; groups of columns are scored by
  ablation, i.e. replaced by the training mean (the pipeline scaler's ``mean_``) and
  the drop of the class probability measured (:meth:`HeadExplainer.ablation`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy import sparse

from medfuse.errors import DataError
from medfuse.fusion import output_dim


@dataclass
class FeatureLayout:
    """Which columns of a hybrid feature matrix belong to what.

    Attributes
    ----------
    width:
        Number of columns.
    blocks:
        Modality (``image`` / ``tabular`` / ``text``) -> column indices.
    tabular:
        Tabular feature (categorical column, continuous feature incl. ``col__missing``)
        -> column indices (the one-hot columns of a categorical column).
    image:
        Slice of the image encoder's features (``None`` without an image column).
    """

    width: int
    blocks: dict[str, np.ndarray] = field(default_factory=dict)
    tabular: dict[str, np.ndarray] = field(default_factory=dict)
    image: slice | None = None


def image_extractor(clf: Any) -> tuple[torch.nn.Module | None, Any]:
    """``(image encoder, its ImageTransform)`` of a fitted hybrid model (None: no image)."""
    net = getattr(clf, "extractor_model_", None)
    if net is not None:
        encoders = dict(net.model_.encoders.items())
        return encoders.get("image"), net.pre_.image
    return getattr(clf, "image_encoder_", None), clf.pre_.image


def feature_layout(clf: Any, width: int) -> FeatureLayout:
    """The column layout of ``clf.transform(df)`` (``width`` columns); checked against it."""
    out = FeatureLayout(width)
    cols: dict[str, list[int]] = {"image": [], "tabular": [], "text": []}
    pos = 0
    net = getattr(clf, "extractor_model_", None)
    if net is not None:
        for name, enc in net.model_.encoders.items():
            d = output_dim(enc)
            cols[name] += range(pos, pos + d)
            if name == "image":
                out.image = slice(pos, pos + d)
            pos += d
    elif clf.spec.image and clf.image_encoder_ is not None:
        d = output_dim(clf.image_encoder_)
        cols["image"] += range(pos, pos + d)
        out.image = slice(pos, pos + d)
        pos += d
    tab = clf.pre_.tabular_
    if tab is not None:
        for name, k in zip(tab.categorical, tab.cardinalities, strict=True):
            out.tabular[name] = np.arange(pos, pos + k)
            cols["tabular"] += range(pos, pos + k)
            pos += k
        for name in tab.continuous_names:
            out.tabular[name] = np.array([pos])
            cols["tabular"].append(pos)
            pos += 1
    if pos > width:
        raise DataError(f"the hybrid feature matrix has {width} columns but its image and "
                        f"tabular blocks need {pos}; was the model changed after fitting?")
    cols["text"] += range(pos, width)
    out.blocks = {k: np.asarray(v, dtype=int) for k, v in cols.items() if v}
    return out


def _shap() -> Any:
    """``import shap`` without its import-time deprecation warnings (matplotlib colormaps)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PendingDeprecationWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        import shap
    return shap


def _dense_row(X: Any) -> np.ndarray:
    return np.asarray(X.todense() if sparse.issparse(X) else X, dtype=np.float64)


def _adaboost_trees(est: Any, col: int) -> dict[str, Any]:
    """AdaBoost (SAMME) as shap custom trees whose outputs sum to ``decision_function``.

    Binary: ``d = sum_m 2 w_m v_m / sum(w)`` with ``v_m = +1`` when stump ``m`` votes class 1
    (negated when explaining class 0). Multi-class: class ``col``'s column, ``w_m`` for a
    vote for it and ``-w_m / (K - 1)`` otherwise.
    """
    classes = np.asarray(est.classes_)
    k = len(classes)
    total = float(np.sum(est.estimator_weights_))
    trees = []
    for tree_est, w in zip(est.estimators_, est.estimator_weights_, strict=False):
        t = tree_est.tree_
        votes = np.asarray(tree_est.classes_)[t.value[:, 0, :].argmax(1)]
        if k == 2:
            v = np.where(votes == classes[1], 2.0, -2.0) * (1.0 if col == 1 else -1.0)
        else:
            v = np.where(votes == classes[col], 1.0, -1.0 / (k - 1))
        trees.append({
            "children_left": t.children_left, "children_right": t.children_right,
            "children_default": t.children_left, "features": t.feature,
            "thresholds": t.threshold, "values": (float(w) / total * v)[:, None],
            "node_sample_weight": t.weighted_n_node_samples,
        })
    return {"trees": trees}


class HeadExplainer:
    """Per-column contributions of a hybrid model's head (see the module docstring)."""

    def __init__(self, clf: Any, label: int | None = None) -> None:
        from sklearn.ensemble import AdaBoostClassifier
        from sklearn.linear_model._base import LinearClassifierMixin

        self.clf = clf
        self.steps = clf.head_[:-1] if len(clf.head_) > 1 else None
        self.est = clf.head_[-1]
        # a multi-label head explains one label (``label``, an index of ``classes_``): its
        # own binary head (one per label), or its output of a multi-label XGBoost model
        self.label: int | None = None
        self._binary_of_label = False
        if getattr(clf, "multilabel", False):
            self.label = 0 if label is None else int(label)
            if hasattr(self.est, "estimators_"):
                self.est = self.est.estimators_[self.label]
                self._binary_of_label = True
                self.head_classes = [0, 1]
            else:
                self.head_classes = list(range(len(clf.classes_)))
        else:
            self.head_classes = [int(c) for c in clf.head_.classes_]
        if isinstance(self.est, LinearClassifierMixin) and hasattr(self.est, "coef_"):
            self.kind = "linear"
        elif isinstance(self.est, AdaBoostClassifier):
            self.kind = "adaboost"
        else:
            self.kind = "tree"
            try:
                shap = _shap()
                self._tree = shap.TreeExplainer(self.est)
            except Exception:  # svm and anything shap cannot read: ablation
                self.kind = "ablation"
        self._ada: dict[int, Any] = {}

    @property
    def method(self) -> str:
        return {"linear": "linear coef * (x - mean) / scale", "tree": "TreeSHAP",
                "adaboost": "TreeSHAP (AdaBoost votes as custom trees)",
                "ablation": "ablation to the training mean"}[self.kind]

    def _column(self, target: int) -> int | None:
        if self._binary_of_label:  # the label's positive output
            return 1 if target == self.label else None
        return self.head_classes.index(target) if target in self.head_classes else None

    def _scaled(self, X: Any) -> Any:
        return self.steps.transform(X) if self.steps is not None else X

    def contributions(self, X_row: Any, target: int) -> np.ndarray | None:
        """``(n_features,)`` contributions of one row to class ``target`` (None: ablation)."""
        if self.kind == "ablation":
            return None
        col = self._column(target)
        if col is None:
            return np.zeros(X_row.shape[1])
        X_scaled = self._scaled(X_row)
        if self.kind == "linear":
            coef = np.asarray(self.est.coef_, dtype=np.float64)
            z = _dense_row(X_scaled)[0]
            if coef.shape[0] == 1:
                return coef[0] * z * (1.0 if col == 1 else -1.0)
            return coef[col] * z
        if self.kind == "adaboost":
            if col not in self._ada:
                self._ada[col] = _shap().TreeExplainer(_adaboost_trees(self.est, col))
            values = self._ada[col].shap_values(_dense_row(X_scaled))
            return np.asarray(values, dtype=np.float64).reshape(-1)
        values = self._tree.shap_values(X_scaled)
        if isinstance(values, list):  # older shap: one array per class
            return np.asarray(values[col], dtype=np.float64)[0]
        v = np.asarray(values, dtype=np.float64)
        if v.ndim == 3:  # (rows, features, classes)
            return v[0, :, col]
        return v[0] * (1.0 if col == 1 or len(self.head_classes) != 2 else -1.0)

    def reference(self, width: int) -> np.ndarray:
        """Training means of the features when the pipeline has a StandardScaler, else 0."""
        if self.steps is not None:
            for _, step in self.steps.steps:
                if hasattr(step, "mean_") and step.mean_ is not None:
                    return np.asarray(step.mean_, dtype=np.float64)
        return np.zeros(width)

    def ablation(self, X_row: Any, target: int, groups: dict[str, np.ndarray]) -> dict[str, float]:
        """``p(x) - p(x with the group's columns at the reference)`` per group."""
        x = _dense_row(X_row)
        ref = self.reference(x.shape[1])
        rows = [x[0]]
        for idx in groups.values():
            r = x[0].copy()
            r[idx] = ref[idx]
            rows.append(r)
        X_ablated: Any = np.vstack(rows)
        if sparse.issparse(X_row):
            X_ablated = sparse.csr_matrix(X_ablated)
        p = self.clf.predict_proba_features(X_ablated)[:, target]
        return {name: float(p[0] - p[i + 1]) for i, name in enumerate(groups)}

    def group_scores(self, X_row: Any, target: int,
                     groups: dict[str, np.ndarray]) -> tuple[dict[str, float], dict[str, float]]:
        """``(signed, magnitude)`` scores per group of columns.

        Signed: the sum of the columns' contributions (or the ablation drop); magnitude:
        the sum of their absolute contributions (or ``|ablation drop|``).
        """
        c = self.contributions(X_row, target)
        if c is None:
            signed = self.ablation(X_row, target, groups)
            return signed, {k: abs(v) for k, v in signed.items()}
        return ({k: float(c[idx].sum()) for k, idx in groups.items()},
                {k: float(np.abs(c[idx]).sum()) for k, idx in groups.items()})


def replace_columns(X_row: Any, n: int, cols: slice, values: torch.Tensor) -> torch.Tensor:
    """``n`` copies of a feature row (as a float tensor) with ``cols`` set to ``values``."""
    base = torch.as_tensor(_dense_row(X_row), dtype=torch.float32)
    out = base.expand(n, -1).clone()
    out[:, cols] = values.float()
    return out


def torch_linear_proba(clf: Any, X: torch.Tensor) -> torch.Tensor:
    """A linear head's ``predict_proba`` in torch (differentiable), in ``classes_`` order."""
    est = clf.head_[-1]
    z = X
    if len(clf.head_) > 1:
        for _, step in clf.head_[:-1].steps:
            mean = getattr(step, "mean_", None)
            scale = getattr(step, "scale_", None)
            if mean is not None and getattr(step, "with_mean", True):
                z = z - torch.as_tensor(mean, dtype=z.dtype)
            if scale is not None:
                z = z / torch.as_tensor(scale, dtype=z.dtype)
    coef = torch.as_tensor(np.asarray(est.coef_), dtype=z.dtype)
    bias = torch.as_tensor(np.asarray(est.intercept_), dtype=z.dtype)
    logits = z @ coef.T + bias
    if coef.shape[0] == 1:
        p1 = torch.sigmoid(logits[:, 0])
        head = torch.stack([1 - p1, p1], dim=1)
    else:
        head = torch.softmax(logits, dim=1)
    out = torch.zeros(X.shape[0], len(clf.classes_), dtype=head.dtype)
    idx = torch.as_tensor([int(c) for c in clf.head_.classes_])
    return out.index_copy(1, idx, head)


def numpy_proba(clf: Any, X: Any) -> torch.Tensor:
    """``predict_proba_features`` as a float tensor (no gradients)."""
    return torch.as_tensor(clf.predict_proba_features(X), dtype=torch.float32)


def text_occlusion(clf: Any, row: pd.DataFrame, target: int) -> list[dict[str, Any]]:
    """Leave-one-word-out scores for a hybrid model's text (any head, any text features).

    The note is tokenised (:func:`medfuse.data.text.tokenize`); word ``i``'s score is
    ``p(class | all words) - p(class | all words but i)`` on the raw (uncalibrated)
    probabilities, so positive words support the explained class.
    """
    from medfuse.data.text import tokenize

    col = clf.spec.text
    tokens = tokenize(str(row[col].iloc[0]) if pd.notna(row[col].iloc[0]) else "")
    if not tokens:
        return []
    texts = [" ".join(tokens)] + [" ".join(tokens[:i] + tokens[i + 1:])
                                  for i in range(len(tokens))]
    frame = pd.concat([row] * len(texts), ignore_index=True)
    frame[col] = texts
    p = clf.predict_proba_features(clf.transform(frame))[:, target]
    return [{"token": t, "score": float(p[0] - p[i + 1])} for i, t in enumerate(tokens)]
