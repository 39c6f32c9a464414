"""Per-column attributions of the tabular inputs.

Fused models: integrated gradients (captum ``LayerIntegratedGradients``) on the outputs
of the categorical embedding layers and of the continuous inputs' batch-norm, jointly,
the other modalities held at their values, explaining the class probability. The
batch-norm is an affine map per feature in eval mode, so attributing to its output
equals integrated gradients on the continuous inputs themselves. Baselines: the
continuous inputs at 0, i.e. the training mean (they are standardised) and "not
missing"; categorical codes at 0, the unknown bucket. A categorical column's score is
the sum over its embedding dimensions.

Hybrid models: the head's per-column contributions (:mod:`medfuse.explain.hybrid`), the
one-hot columns of a categorical column summed.

Each feature is reported as ``{"name", "value", "score"}``: ``name`` is the tabular column
(or ``col__missing``, the missing-value indicator of a continuous column), ``value`` the
raw value of the input row, ``score`` > 0 supports the explained class.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from medfuse.errors import ConfigError
from medfuse.explain._common import BatchForward, raw_value, split_batch, targets

FIELDS = ("tabular_cat", "tabular_cont")


def _features(names: Sequence[str], scores: np.ndarray, row: pd.Series | None
              ) -> list[dict[str, Any]]:
    return [{"name": n, "value": raw_value(row, n) if row is not None else None,
             "score": float(s)} for n, s in zip(names, scores, strict=True)]


def tabular_attributions(
    model: nn.Module,
    batch: dict[str, torch.Tensor],
    target: int | Sequence[int] | torch.Tensor,
    pre: Any,
    frame: pd.DataFrame | None = None,
    steps: int = 32,
    internal_batch_size: int = 8,
) -> list[list[dict[str, Any]]]:
    """Integrated-gradients scores of every tabular feature, per row of a fused model.

    Parameters
    ----------
    model:
        A :class:`~medfuse.fusion.FusionModel` with a ``tabular`` encoder.
    batch:
        Its input batch.
    target:
        Class index explained (one, or one per row).
    pre:
        The fitted preprocessor (``pre.tabular_`` names the features).
    frame:
        The raw rows of ``batch`` (gives each feature's ``value``; None: values are None).
    steps, internal_batch_size:
        Interpolation steps, and how many are forwarded at once.

    Returns
    -------
    list of list of dict
        Per row, ``{"name", "value", "score"}`` for the categorical columns, then the
        continuous features, in the preprocessor's order.
    """
    scores, _ = tabular_ig(model, batch, target, pre, steps, internal_batch_size)
    names = [*pre.tabular_.categorical, *pre.tabular_.continuous_names]
    return [_features(names, scores[r], frame.iloc[r] if frame is not None else None)
            for r in range(scores.shape[0])]


def tabular_ig(
    model: nn.Module,
    batch: dict[str, torch.Tensor],
    target: int | Sequence[int] | torch.Tensor,
    pre: Any,
    steps: int = 32,
    internal_batch_size: int = 8,
) -> tuple[np.ndarray, np.ndarray]:
    """``(scores (B, n_features), sum of |attribution| per row (B,))`` of the tabular input.

    The second value sums ``|attribution|`` over every embedding dimension and continuous
    input (used for modality shares).
    """
    from captum.attr import LayerIntegratedGradients

    encoders = getattr(model, "encoders", {})
    if "tabular" not in encoders or pre.tabular_ is None:
        raise ConfigError("this model has no tabular input: tabular explanations need a "
                          "model trained with tabular columns (spec.tabular).")
    model.eval()
    enc = encoders["tabular"]
    layers: list[nn.Module] = list(enc.embeddings)
    if enc.cont_norm is not None:
        layers.append(enc.cont_norm)
    keys, inputs, rest = split_batch(batch, FIELDS)
    n = inputs[0].shape[0]
    with warnings.catch_warnings():  # "multiple layers": ours are parallel, not chained
        warnings.simplefilter("ignore", UserWarning)
        lig = LayerIntegratedGradients(BatchForward(model, keys), layers)
    attrs = lig.attribute(inputs, baselines=tuple(torch.zeros_like(t) for t in inputs),
                          target=targets(target, n), n_steps=steps,
                          internal_batch_size=internal_batch_size,
                          additional_forward_args=rest or None)
    flat = [a.detach().float().reshape(n, -1) for a in (attrs if isinstance(attrs, list)
                                                         else [attrs])]
    cols = [a.sum(1) for a in flat[: len(enc.embeddings)]]
    if enc.cont_norm is not None:
        cols += [flat[-1][:, j] for j in range(flat[-1].shape[1])]
    scores = torch.stack(cols, dim=1) if cols else torch.zeros(n, 0)
    total = torch.cat(flat, dim=1).abs().sum(1) if flat else torch.zeros(n)
    return (scores.cpu().numpy().astype(np.float64), total.cpu().numpy().astype(np.float64))


def hybrid_features(clf: Any, X_row: Any, target: int, row: pd.Series | None,
                    explainer: Any = None) -> list[dict[str, Any]]:
    """A hybrid model's tabular features for one row (``X_row``: its ``(1, d)`` features)."""
    from medfuse.explain.hybrid import HeadExplainer, feature_layout

    if clf.pre_.tabular_ is None:
        raise ConfigError("this HybridClassifier has no tabular columns (spec.tabular).")
    layout = feature_layout(clf, X_row.shape[1])
    explainer = explainer or HeadExplainer(clf)
    signed, _ = explainer.group_scores(X_row, target, layout.tabular)
    names = list(layout.tabular)
    return _features(names, np.array([signed[k] for k in names]), row)
