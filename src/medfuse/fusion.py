"""Fusion of per-modality encoders into one classifier.

``concat``: concatenate the encoders' outputs -> MLP head (fastai ``image_tabular``).
``gated``: project each modality to a common width, weight the projections with
a learned, input-dependent softmax gate, sum -> MLP head.
``late``: one linear head per modality, logits averaged.

The model loops over a ``dict`` of encoders; no per-modality code:

>>> import torch
>>> from medfuse.encoders.tabular import TabularEncoder
>>> model = FusionModel({"tabular": TabularEncoder([3], 2, (8,))}, n_classes=2)
>>> batch = {"tabular_cat": torch.tensor([[1], [2]]), "tabular_cont": torch.randn(2, 2)}
>>> model(batch).shape
torch.Size([2, 2])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

#: batch fields each modality's encoder consumes (one field -> tensor, several -> tuple)
MODALITY_FIELDS: dict[str, tuple[str, ...]] = {
    "image": ("image",),
    "tabular": ("tabular_cat", "tabular_cont"),
    "text": ("text",),
}
FUSIONS = ("concat", "gated", "late")


def modality_input(name: str, batch: dict[str, torch.Tensor]) -> Any:
    """The encoder input for modality ``name`` taken from a batch dict."""
    fields = MODALITY_FIELDS[name]
    return batch[fields[0]] if len(fields) == 1 else tuple(batch[f] for f in fields)


def output_dim(encoder: nn.Module) -> int:
    """The encoder contract's ``output_dim`` (a plain int attribute)."""
    value = encoder.__dict__.get("output_dim")
    if not isinstance(value, int):
        raise TypeError(f"{type(encoder).__name__} has no int 'output_dim'; see medfuse.encoders")
    return value


def mlp(width: int, hidden_dims: Sequence[int], out: int, dropout: float) -> nn.Sequential:
    layers: list[nn.Module] = []
    for h in hidden_dims:
        layers += [nn.Linear(width, h), nn.ReLU(), nn.Dropout(dropout)]
        width = h
    layers.append(nn.Linear(width, out))
    return nn.Sequential(*layers)


class FusionModel(nn.Module):
    """Encoders per modality + a fusion head producing class logits.

    Parameters
    ----------
    encoders:
        Modality name (``image`` / ``tabular`` / ``text``) -> encoder with ``output_dim``.
    n_classes:
        Number of classes.
    hidden_dims, dropout:
        The head's MLP.
    fusion:
        ``concat``, ``gated`` or ``late``.
    """

    def __init__(
        self,
        encoders: dict[str, nn.Module],
        n_classes: int,
        hidden_dims: Sequence[int] = (128,),
        dropout: float = 0.2,
        fusion: str = "concat",
    ) -> None:
        super().__init__()
        self.encoders = nn.ModuleDict(encoders)
        self.fusion = fusion
        dims = {k: output_dim(e) for k, e in encoders.items()}
        if fusion == "concat":
            self.head = mlp(sum(dims.values()), hidden_dims, n_classes, dropout)
        elif fusion == "gated":
            width = hidden_dims[0] if hidden_dims else 128
            self.proj = nn.ModuleDict({k: nn.Linear(d, width) for k, d in dims.items()})
            self.gate = nn.Linear(sum(dims.values()), len(dims))
            self.head = mlp(width, hidden_dims[1:], n_classes, dropout)
        elif fusion == "late":
            self.heads = nn.ModuleDict(
                {k: mlp(d, hidden_dims, n_classes, dropout) for k, d in dims.items()}
            )
        else:
            raise ValueError(f"fusion must be one of {FUSIONS}; got {fusion!r}")

    def encode(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Per-modality features ``{name: (B, output_dim)}``."""
        return {k: enc(modality_input(k, batch)) for k, enc in self.encoders.items()}

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        feats = self.encode(batch)
        if self.fusion == "concat":
            return self.head(torch.cat(list(feats.values()), dim=1))
        if self.fusion == "gated":
            weights = torch.softmax(self.gate(torch.cat(list(feats.values()), dim=1)), dim=1)
            projected = torch.stack([torch.relu(self.proj[k](f)) for k, f in feats.items()], 1)
            return self.head((weights.unsqueeze(-1) * projected).sum(1))
        logits = torch.stack([self.heads[k](f) for k, f in feats.items()], dim=0)
        return logits.mean(0)
