"""Shared plumbing of the explainers: batches of rows, forward wrappers, JSON-safe values."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from medfuse.errors import ConfigError, DataError

#: ``f(images (n, 3, H, W)) -> class probabilities (n, n_classes)``
ProbaFn = Callable[[torch.Tensor], torch.Tensor]


class BatchForward(nn.Module):
    """``f(*tensors) -> softmax probabilities`` of a :class:`~medfuse.fusion.FusionModel`.

    ``keys`` name the positional tensors (batch fields such as ``image`` or ``text``): the
    first one(s) are what captum attributes to, the rest are passed by captum as
    ``additional_forward_args`` (so it repeats them along with the interpolation steps).
    Tensors with one row are broadcast to the batch size of the first tensor.

    Probabilities rather than logits are explained everywhere in :mod:`medfuse.explain`,
    so the integrated-gradients completeness property reads
    ``sum(attributions) = p(x) - p(baseline)`` for the explained class.
    """

    def __init__(self, model: nn.Module, keys: Sequence[str]) -> None:
        super().__init__()
        self.model = model
        self.keys = tuple(keys)

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        n = tensors[0].shape[0]
        batch = {}
        for key, t in zip(self.keys, tensors, strict=True):
            batch[key] = t.expand(n, *t.shape[1:]) if t.shape[0] == 1 and n > 1 else t
        return torch.softmax(self.model(batch).float(), dim=1)


def split_batch(
    batch: dict[str, torch.Tensor], first: Sequence[str]
) -> tuple[tuple[str, ...], tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]:
    """Order a batch's input fields: ``first`` (attributed), then the others (held fixed)."""
    rest = [k for k in batch if k not in first and k != "target"]
    keys = (*first, *rest)
    return keys, tuple(batch[k] for k in first), tuple(batch[k] for k in rest)


def targets(target: int | Sequence[int] | torch.Tensor, n: int) -> torch.Tensor:
    """Per-row class indices as a ``(n,)`` int64 tensor (an int applies to every row)."""
    t = torch.as_tensor(target, dtype=torch.long).reshape(-1)
    if t.numel() == 1:
        t = t.expand(n).clone()
    if t.numel() != n:
        raise ConfigError(f"'target' has {t.numel()} entries for a batch of {n} rows; "
                          "pass one class index, or one per row.")
    return t


def fused_batch(clf: Any, df: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, torch.Tensor]]:
    """The validated rows of ``df`` and their model inputs (a batch dict) for a fused model."""
    from medfuse.data.dataset import MultimodalDataset
    from medfuse.data.validation import validate_table

    clean, _ = validate_table(df, clf.input_spec(), table="explain",
                              check_images="exists", require_target=False, training=False)
    ds = MultimodalDataset(clean, clf.pre_, with_target=False)
    samples = [ds[i] for i in range(len(ds))]
    batch = {k: torch.stack([s[k] for s in samples]) for k in samples[0]} if samples else {}
    if hasattr(clf, "_device"):  # where the network runs (CUDA where there is one)
        from medfuse.perf import to_device

        batch = to_device(batch, clf._device())
    return clean, batch


def check_rows(rows: Sequence[int] | None, n: int) -> list[int]:
    """Positional row indices (all rows when ``None``); out-of-range ones raise DataError."""
    if rows is None:
        return list(range(n))
    out = [int(r) for r in rows]
    bad = [r for r in out if not -n <= r < n]
    if bad:
        raise DataError(f"rows {bad} are out of range for a table of {n} rows; pass positions "
                        f"0..{n - 1} (like DataFrame.iloc).")
    return [r % n for r in out]


def to_jsonable(value: Any) -> Any:
    """Plain Python values (numpy scalars, NaN -> None) for ``json.dumps``."""
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def raw_value(row: pd.Series, column: str) -> Any:
    """The input row's raw value of a tabular feature (``col__missing``: is it missing)."""
    if column.endswith("__missing") and column not in row.index:
        return bool(pd.isna(row[column[: -len("__missing")]]))
    value = row[column]
    return None if pd.isna(value) else to_jsonable(value)
