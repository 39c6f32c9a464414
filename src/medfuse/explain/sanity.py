"""Sanity checks of attribution methods (Adebayo et al., 2018, "Sanity checks for saliency maps").

Model-parameter randomisation: an explanation that depends on what the model learned
must change when the weights are re-initialised. :func:`randomisation_check` returns the
Spearman rank correlation between the integrated-gradients maps of a model and of the
same architecture with every parameter re-initialised; low values pass.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn


def randomise_weights(model: nn.Module, seed: int = 0) -> nn.Module:
    """A deep copy of ``model`` with every module's parameters re-initialised.

    Uses each module's ``reset_parameters`` (also resetting batch-norm running
    statistics) and clears embedding caches (``clear_cache``).
    """
    out = copy.deepcopy(model)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        for m in out.modules():
            reset = getattr(m, "reset_parameters", None)
            if callable(reset):
                reset()
            clear = getattr(m, "clear_cache", None)
            if callable(clear):
                clear()
    return out.eval()


def rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two maps of the same shape (0 when one is constant).

    >>> round(rank_correlation(np.arange(5.0), np.arange(5.0) ** 2), 6)
    1.0
    """
    from scipy.stats import spearmanr

    x, y = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"maps differ in shape: {np.shape(a)} vs {np.shape(b)}")
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return 0.0
    return float(spearmanr(x, y).statistic)


def randomisation_check(
    model: nn.Module,
    batch: dict[str, torch.Tensor],
    target: int | Sequence[int] | torch.Tensor,
    steps: int = 16,
    internal_batch_size: int = 8,
    seed: int = 0,
    reduce: str = "abs",
) -> list[float]:
    """Per row, Spearman correlation of image IG maps: trained vs randomised weights."""
    from medfuse.explain.image import integrated_gradients

    trained = integrated_gradients(model, batch, target, steps, internal_batch_size, reduce)
    rnd = integrated_gradients(randomise_weights(model, seed), batch, target, steps,
                               internal_batch_size, reduce)
    return [rank_correlation(a, b) for a, b in zip(trained, rnd, strict=True)]
