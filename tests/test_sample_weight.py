"""Per-row sample weights: the losses, a fused fit and a hybrid head's fit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from medfuse.config import DataSpec
from medfuse.errors import ConfigError
from medfuse.losses import FocalLoss, make_loss

SPEC = DataSpec(tabular={"x1": "continuous", "x2": "continuous"}, target="y", positive="b")


def _table(n: int = 120, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x1, x2 = rng.normal(0, 1, n), rng.normal(0, 1, n)
    y = np.where(x1 + 0.5 * x2 + rng.normal(0, 0.5, n) > 0, "b", "a")
    return pd.DataFrame({"x1": x1, "x2": x2, "y": y})


def test_weighted_losses_match_a_hand_computation() -> None:
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 1.5], [0.3, -0.2]])
    target = torch.tensor([0, 1, 0, 1])
    cw, sw = torch.tensor([1.0, 3.0]), torch.tensor([1.0, 0.5, 0.0, 2.0])
    rows = nn.functional.cross_entropy(logits, target, reduction="none")
    w = cw[target] * sw
    expected = (w * rows).sum() / w.sum()
    ce = make_loss("ce", cw)
    assert torch.allclose(ce(logits, target, sample_weight=sw), expected)
    # no weights: torch's own loss, bit for bit; all-ones weights: the same value
    assert torch.equal(ce(logits, target), nn.CrossEntropyLoss(weight=cw)(logits, target))
    assert torch.allclose(ce(logits, target, sample_weight=torch.ones(4)), ce(logits, target))
    focal = FocalLoss(2.0, cw)
    p_t = torch.softmax(logits, 1)[torch.arange(4), target]
    per_row = -((1 - p_t) ** 2) * torch.log(p_t)
    assert torch.allclose(focal(logits, target, sample_weight=sw),
                          (w * per_row).sum() / w.sum())
    assert torch.allclose(FocalLoss(0.0)(logits, target, sample_weight=torch.ones(4)),
                          nn.functional.cross_entropy(logits, target))
    # a row with weight 0 gets no gradient
    x = logits.clone().requires_grad_(True)
    ce(x, target, sample_weight=sw).backward()
    assert x.grad is not None and torch.all(x.grad[2] == 0) and torch.any(x.grad[3] != 0)


def test_hybrid_rows_with_weight_zero_are_rows_left_out() -> None:
    from medfuse.estimators.hybrid import HybridClassifier

    df = _table()
    w = np.ones(len(df))
    w[::4] = 0.0
    w[(df["y"] == "b").to_numpy() & (np.arange(len(df)) % 2 == 1)] = 0.0  # tilt the classes
    weighted = HybridClassifier(SPEC, head="lr").fit(df, sample_weight=w)
    without = HybridClassifier(SPEC, head="lr").fit(df[w > 0])
    plain = HybridClassifier(SPEC, head="lr").fit(df)
    # the same up to the scaler and class weights, which still see every row
    gap = np.abs(weighted.predict_proba(df) - without.predict_proba(df)).max()
    moved = np.abs(weighted.predict_proba(df) - plain.predict_proba(df)).max()
    assert gap < 0.02 and moved > 5 * gap, (gap, moved)
    ones = HybridClassifier(SPEC, head="xgboost").fit(df, sample_weight=np.ones(len(df)))
    trees = HybridClassifier(SPEC, head="xgboost").fit(df)
    np.testing.assert_allclose(ones.predict_proba(df), trees.predict_proba(df), atol=1e-6)


def test_fused_fit_with_unit_weights_is_the_unweighted_fit(tmp_path: Path) -> None:
    from medfuse.estimators import FusionClassifier

    df = _table(80)
    train, valid = df.iloc[:60], df.iloc[60:]
    kw = dict(hidden_dims=[8], max_epochs=2, batch_size=16, progress=False)
    plain = FusionClassifier(SPEC, **kw).fit(train, valid)  # type: ignore[arg-type]
    ones = FusionClassifier(SPEC, **kw).fit(  # type: ignore[arg-type]
        train, valid, sample_weight=np.ones(len(train)))
    # the same fit up to float rounding (a weighted sum over a sum instead of a mean)
    np.testing.assert_allclose(ones.predict_proba(df), plain.predict_proba(df), atol=1e-3)
    heavy = np.where(train["y"] == "b", 5.0, 0.2)  # weighing one class up moves the model
    tilted = FusionClassifier(SPEC, **kw).fit(train, valid, sample_weight=heavy)  # type: ignore[arg-type]
    assert tilted.predict_proba(df)[:, 1].mean() > plain.predict_proba(df)[:, 1].mean()


@pytest.mark.parametrize(("weights", "message"), [
    (np.ones(3), "holds 3 weights for 120 training rows"),
    (np.r_[-1.0, np.ones(119)], "row 0 has -1.0"),
    (np.r_[np.ones(5), np.nan, np.ones(114)], "row 5 has nan"),
    (np.zeros(120), "0 for every row"),
])
def test_bad_sample_weights_are_clear_errors(weights: np.ndarray, message: str) -> None:
    from medfuse.estimators import FusionClassifier
    from medfuse.estimators.hybrid import HybridClassifier

    df = _table()
    with pytest.raises(ConfigError, match=message):
        HybridClassifier(SPEC).fit(df, sample_weight=weights)
    with pytest.raises(ConfigError, match=message):
        FusionClassifier(SPEC, progress=False).fit(df, sample_weight=weights)


def test_sample_weights_refuse_a_resampler() -> None:
    from medfuse.estimators.hybrid import HybridClassifier

    with pytest.raises(ConfigError, match=r"resample='smote'.*no weight"):
        HybridClassifier(SPEC, resample="smote").fit(_table(), sample_weight=np.ones(120))
