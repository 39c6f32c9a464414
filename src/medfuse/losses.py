"""Classification losses: class-weighted cross-entropy and focal loss.

Both take logits ``(B, C)`` and class indices ``(B,)`` and return the mean loss,
weighted by class as :class:`torch.nn.CrossEntropyLoss` is (the sum of per-row
losses times their class weight, divided by the sum of those weights). An optional
``sample_weight`` ``(B,)`` multiplies each row's weight as well (rows whose label looks
wrong count less: ``train.label_issues: downweight``); without it the result is
exactly torch's.

>>> import torch
>>> logits, target = torch.tensor([[2.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 1])
>>> ce = make_loss("ce", torch.ones(2))(logits, target)
>>> focal0 = make_loss("focal", torch.ones(2), gamma=0.0)(logits, target)
>>> bool(torch.isclose(ce, focal0)), bool(make_loss("focal", torch.ones(2))(logits, target) < ce)
(True, True)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from medfuse.errors import check_option

LOSSES = ("ce", "focal")


class FocalLoss(nn.Module):
    """Focal loss (Lin et al. 2017): cross-entropy scaled by ``(1 - p_t) ** gamma``.

    Well-classified rows (``p_t`` near 1) count little, so training concentrates on
    the hard ones, e.g. the rare malignant lesions among many benign ones.
    ``gamma = 0`` is (class-weighted) cross-entropy.

    Parameters
    ----------
    gamma:
        Focusing exponent, >= 0 (2 in the paper).
    weight:
        Per-class weights ``(C,)`` (the ``alpha`` of the paper), or None.
    """

    def __init__(self, gamma: float = 2.0, weight: torch.Tensor | None = None) -> None:
        super().__init__()
        if gamma < 0:
            raise ValueError(f"focal loss gamma must be >= 0; got {gamma}")
        self.gamma = float(gamma)
        self.weight: torch.Tensor | None
        self.register_buffer("weight", None if weight is None else weight.float())

    def forward(self, logits: torch.Tensor, target: torch.Tensor,
                sample_weight: torch.Tensor | None = None) -> torch.Tensor:
        logp = F.log_softmax(logits.float(), dim=1).gather(1, target[:, None]).squeeze(1)
        loss = -((1.0 - logp.exp()).clamp_min(0.0) ** self.gamma) * logp
        if self.weight is None and sample_weight is None:
            return loss.mean()
        w = (self.weight.to(loss.device)[target] if self.weight is not None
             else torch.ones_like(loss))
        if sample_weight is not None:
            w = w * sample_weight.to(loss.device, loss.dtype)
        return (w * loss).sum() / w.sum().clamp_min(1e-12)


class WeightedCrossEntropy(nn.CrossEntropyLoss):
    """:class:`torch.nn.CrossEntropyLoss` (class-weighted) that also takes per-row weights.

    ``forward(logits, target)`` is torch's, bit for bit; with ``sample_weight`` the loss is
    ``sum(w_class[y_i] * s_i * l_i) / sum(w_class[y_i] * s_i)``.
    """

    def forward(self, input: torch.Tensor, target: torch.Tensor,
                sample_weight: torch.Tensor | None = None) -> torch.Tensor:
        if sample_weight is None:
            return super().forward(input, target)
        rows = F.cross_entropy(input, target, reduction="none")  # unweighted per row
        w = sample_weight.to(rows.device, rows.dtype)
        if self.weight is not None:
            w = w * self.weight.to(rows.device, rows.dtype)[target]
        return (w * rows).sum() / w.sum().clamp_min(1e-12)


class MultiLabelLoss(nn.Module):
    """Per-label binary cross-entropy on sigmoid outputs, or per-label focal loss.

    Takes logits ``(B, L)`` and 0/1 targets ``(B, L)``. ``weight`` ``(2, L)`` weighs each
    label's negatives (row 0) and positives (row 1), e.g. :func:`label_weights`
    ("balanced" per label); the loss is the weighted sum over rows and labels divided by
    the sum of the weights, so each label counts as much as its rows' weights say.
    ``gamma > 0`` scales each term by ``(1 - p_t) ** gamma`` (focal loss, Lin et al.);
    ``sample_weight`` ``(B,)`` multiplies each row's weights.

    >>> logits, target = torch.tensor([[2.0, -1.0]]), torch.tensor([[1.0, 0.0]])
    >>> bce = MultiLabelLoss()(logits, target)
    >>> bool(torch.isclose(bce, F.binary_cross_entropy_with_logits(logits, target)))
    True
    """

    def __init__(self, gamma: float = 0.0, weight: torch.Tensor | None = None) -> None:
        super().__init__()
        if gamma < 0:
            raise ValueError(f"focal loss gamma must be >= 0; got {gamma}")
        self.gamma = float(gamma)
        self.weight: torch.Tensor | None
        self.register_buffer("weight", None if weight is None else weight.float())

    def forward(self, logits: torch.Tensor, target: torch.Tensor,
                sample_weight: torch.Tensor | None = None) -> torch.Tensor:
        logits, target = logits.float(), target.to(logits.device).float()
        loss = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
        if self.gamma:
            p_t = torch.exp(-loss)  # the probability given to the true outcome
            loss = (1.0 - p_t).clamp_min(0.0) ** self.gamma * loss
        if self.weight is None and sample_weight is None:
            return loss.mean()
        w = torch.ones_like(loss)
        if self.weight is not None:
            neg, pos = self.weight.to(loss.device)
            w = torch.where(target > 0.5, pos, neg).expand_as(loss)
        if sample_weight is not None:
            w = w * sample_weight.to(loss.device, loss.dtype)[:, None]
        return (w * loss).sum() / w.sum().clamp_min(1e-12)


def label_weights(targets: torch.Tensor | object) -> torch.Tensor:
    """``(2, L)`` "balanced" weights of each label's negatives and positives,
    ``n / (2 * count)`` (scikit-learn's ``class_weight="balanced"`` label by label).

    >>> label_weights(torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.0, 1.0], [0.0, 0.0]]))
    tensor([[0.6667, 0.6667],
            [2.0000, 2.0000]])
    """
    y = torch.as_tensor(targets, dtype=torch.float32)
    pos = y.sum(0).clamp_min(1.0)
    neg = (len(y) - y.sum(0)).clamp_min(1.0)
    return torch.stack([len(y) / (2.0 * neg), len(y) / (2.0 * pos)])


def make_loss(name: str, weights: torch.Tensor | None = None, gamma: float = 2.0,
              multilabel: bool = False) -> nn.Module:
    """``ce`` (class-weighted cross-entropy) or ``focal`` (class-weighted focal loss);
    with ``multilabel``, their per-label sigmoid forms (:class:`MultiLabelLoss`)."""
    check_option("loss", name, LOSSES)
    if multilabel:
        return MultiLabelLoss(gamma if name == "focal" else 0.0, weights)
    if name == "focal":
        return FocalLoss(gamma, weights)
    return WeightedCrossEntropy(weight=weights)
