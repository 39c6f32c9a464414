"""Losses (cross-entropy, focal) and the class-balanced sampler."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from medfuse.errors import ConfigError
from medfuse.losses import FocalLoss, make_loss
from medfuse.training import EpochSampler, FusionModule, balanced_weights


def test_focal_loss_is_weighted_ce_at_gamma_zero_and_down_weights_easy_rows() -> None:
    torch.manual_seed(0)
    logits, target = torch.randn(16, 3), torch.randint(0, 3, (16,))
    w = torch.tensor([1.0, 2.0, 0.5])
    ce = nn.CrossEntropyLoss(weight=w)(logits, target)
    torch.testing.assert_close(FocalLoss(0.0, w)(logits, target), ce)
    # an easy row (p_t ~ 0.98) loses far more of its loss than a hard one (p_t ~ 0.12)
    easy, hard = torch.tensor([[4.0, 0.0]]), torch.tensor([[0.0, 2.0]])
    t0 = torch.tensor([0])
    ratio_easy = FocalLoss(2.0)(easy, t0) / FocalLoss(0.0)(easy, t0)
    ratio_hard = FocalLoss(2.0)(hard, t0) / FocalLoss(0.0)(hard, t0)
    assert ratio_easy < 0.01 < 0.5 < ratio_hard
    logits.requires_grad_(True)
    FocalLoss(2.0, w)(logits, target).backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()


def test_make_loss_and_module_use_it() -> None:
    assert isinstance(make_loss("ce", torch.ones(2)), nn.CrossEntropyLoss)
    with pytest.raises(ConfigError, match=r"'loss'.*Did you mean 'focal'"):
        make_loss("focl")
    module = FusionModule(nn.Linear(2, 2), torch.tensor([1.0, 3.0]), loss="focal",
                          focal_gamma=1.5)
    assert isinstance(module.loss, FocalLoss) and module.loss.gamma == 1.5
    assert module.loss.weight is not None and module.loss.weight.tolist() == [1.0, 3.0]


def test_balanced_sampler_draws_classes_equally_and_follows_seed_and_epoch() -> None:
    targets = np.array([0] * 90 + [1] * 10)
    sampler = EpochSampler(len(targets), seed=3, weights=balanced_weights(targets))
    assert len(sampler) == 100
    epochs = []
    for epoch in range(20):
        sampler.set_epoch(epoch)
        epochs.append(list(sampler))
    rows = np.array([i for e in epochs for i, _ in e])
    share = (targets[rows] == 1).mean()
    assert 0.45 < share < 0.55  # 10% of the rows, half of the draws
    # (seed, epoch) alone decides: a fresh sampler moved to epoch 7 repeats epoch 7
    again = EpochSampler(len(targets), seed=3, weights=balanced_weights(targets))
    again.set_epoch(7)
    assert list(again) == epochs[7] != epochs[8]
    other = EpochSampler(len(targets), seed=4, weights=balanced_weights(targets))
    other.set_epoch(7)
    assert list(other) != epochs[7]


@pytest.mark.parametrize("steps", [1, 2, 3, 7])
def test_one_cycle_schedule_survives_very_short_runs(steps: int) -> None:
    module = FusionModule(nn.Linear(2, 2), torch.ones(2), scheduler="onecycle", warmup=0.05)
    module.trainer = type("T", (), {"estimated_stepping_batches": steps})()  # type: ignore[assignment]
    conf = module.configure_optimizers()
    for _ in range(steps):
        conf["optimizer"].step()
        conf["lr_scheduler"]["scheduler"].step()
