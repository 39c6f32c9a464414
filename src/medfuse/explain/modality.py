"""How much each modality contributed to a prediction (shares summing to 1).

Fused models: for each modality, integrated gradients of the explained class's
probability w.r.t. that modality's input, the other modalities held at their values
(the same attributions as :mod:`~medfuse.explain.image`, :mod:`~medfuse.explain.text`
and :mod:`~medfuse.explain.tabular`): image pixels (SmoothGrad-IG, mid-grey baseline),
tabular embeddings + continuous inputs (unknown category / training-mean baseline),
text embeddings (padding baseline). A modality's weight is the sum of ``|attribution|``
over its inputs; shares are the weights normalised to sum to 1. Each modality's signed
total is ``p(x) - p(x with that modality at its baseline)`` (IG completeness; for the
image, averaged over the noisy copies); summing magnitudes instead credits evidence that
cancels within a modality, which favours inputs with many elements (pixels) somewhat.

Hybrid models: the sum of ``|contribution|`` (linear coefficients x scaled features, or
TreeSHAP values) over each block of columns of the head's feature matrix, normalised;
for heads without per-column contributions (``svm``), ``|probability drop|`` when the
block is replaced by its training mean.

When every weight is 0 (e.g. a constant model), all modalities get the same share.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn


def normalise(weights: Mapping[str, float]) -> dict[str, float]:
    """Non-negative weights -> shares summing to 1 (equal shares when all are 0).

    >>> normalise({"image": 3.0, "text": 1.0})
    {'image': 0.75, 'text': 0.25}
    """
    w = {k: max(0.0, float(v)) if np.isfinite(v) else 0.0 for k, v in weights.items()}
    total = sum(w.values())
    if total <= 0:
        return {k: 1.0 / len(w) for k in w} if w else {}
    return {k: v / total for k, v in w.items()}


def fused_weights(
    model: nn.Module,
    batch: dict[str, torch.Tensor],
    target: int | Sequence[int] | torch.Tensor,
    pre: Any,
    steps: int = 32,
    internal_batch_size: int = 8,
) -> list[dict[str, float]]:
    """Per row, the sum of ``|IG attribution|`` of each modality of a fused model."""
    from medfuse.explain.image import ig_attributions
    from medfuse.explain.tabular import tabular_ig
    from medfuse.explain.text import token_attributions

    n = next(iter(batch.values())).shape[0]
    out: list[dict[str, float]] = [{} for _ in range(n)]
    encoders: Any = model.encoders
    for name in encoders:
        if name == "image":
            from medfuse.explain._common import BatchForward, split_batch

            keys, (images,), rest = split_batch(batch, ("image",))
            attr = ig_attributions(BatchForward(model, keys), images, target, steps,
                                   internal_batch_size, rest)
            totals = attr.abs().reshape(n, -1).sum(1).tolist()
        elif name == "tabular":
            totals = tabular_ig(model, batch, target, pre, steps, internal_batch_size)[1].tolist()
        else:
            rows = token_attributions(model, batch, target, pre, steps, internal_batch_size)
            totals = [sum(float(np.abs(v.matrix).sum()) for v in views) for views in rows]
        for r in range(n):
            out[r][name] = float(totals[r])
    return out


def modality_shares(
    model: nn.Module,
    batch: dict[str, torch.Tensor],
    target: int | Sequence[int] | torch.Tensor,
    pre: Any,
    steps: int = 32,
    internal_batch_size: int = 8,
) -> list[dict[str, float]]:
    """Per row, ``{modality: share}`` of a fused model (see the module docstring)."""
    model.eval()
    return [normalise(w) for w in fused_weights(model, batch, target, pre, steps,
                                                 internal_batch_size)]


def hybrid_shares(clf: Any, X_row: Any, target: int, explainer: Any = None) -> dict[str, float]:
    """``{modality: share}`` of one row (``X_row``: its ``(1, d)`` features) of a hybrid model."""
    from medfuse.explain.hybrid import HeadExplainer, feature_layout

    layout = feature_layout(clf, X_row.shape[1])
    explainer = explainer or HeadExplainer(clf)
    _, magnitude = explainer.group_scores(X_row, target, layout.blocks)
    return normalise(magnitude)
