"""Tabular encoder: categorical embeddings (sized from cardinality) + continuous -> MLP.

>>> import torch
>>> enc = TabularEncoder(cardinalities=[3, 6], n_continuous=2, hidden_dims=(16,))
>>> enc((torch.tensor([[1, 5], [0, 2]]), torch.randn(2, 2))).shape
torch.Size([2, 16])
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def embedding_dim(cardinality: int) -> int:
    """fastai's rule of thumb: ``min(600, round(1.6 * n ** 0.56))``, at least 2."""
    return max(2, min(600, round(1.6 * cardinality**0.56)))


class TabularEncoder(nn.Module):
    """Embeddings for categorical codes, batch-normalised continuous values, then an MLP.

    Parameters
    ----------
    cardinalities:
        Number of codes per categorical column (code 0 = unknown).
    n_continuous:
        Number of continuous features (incl. missing indicators).
    hidden_dims:
        Widths of the MLP layers; ``output_dim`` is the last one.
    dropout:
        Dropout after each hidden layer.
    """

    def __init__(
        self,
        cardinalities: Sequence[int],
        n_continuous: int,
        hidden_dims: Sequence[int] = (64, 32),
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        dims = [embedding_dim(c) for c in cardinalities]
        self.embeddings = nn.ModuleList(
            nn.Embedding(c, d) for c, d in zip(cardinalities, dims, strict=True)
        )
        self.n_continuous = n_continuous
        self.cont_norm = nn.BatchNorm1d(n_continuous) if n_continuous else None
        width = sum(dims) + n_continuous
        layers: list[nn.Module] = []
        for h in hidden_dims:
            layers += [nn.Linear(width, h), nn.BatchNorm1d(h), nn.ReLU(), nn.Dropout(dropout)]
            width = h
        self.mlp = nn.Sequential(*layers)
        self.output_dim = width

    def forward(self, x: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        codes, cont = x
        parts = [emb(codes[:, i]) for i, emb in enumerate(self.embeddings)]
        if self.cont_norm is not None:
            parts.append(self.cont_norm(cont))
        return self.mlp(torch.cat(parts, dim=1))
