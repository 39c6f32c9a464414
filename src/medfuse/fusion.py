"""Fusion of per-modality encoders into one classifier.

``concat``: concatenate the encoders' outputs -> MLP head (fastai ``image_tabular``).
``gated``: project each modality to a common width, scale each projection by a
learned, input-dependent gate in (0, 1) (a sigmoid of a linear map of all the
modalities' features), side by side -> MLP head; the gates, normalised to sum to 1,
are reported per prediction (:meth:`FusionModel.gates`). Independent gates keep the
other modalities' scale when one is missing (a softmax would inflate them).
``late``: one MLP head per modality, logits averaged.

Missing modalities: a model built with ``missing=True`` reads the batch field
``present`` (``(B, M)``, 1 where row ``b`` has modality ``m``, in the encoders'
order). A missing modality's features are replaced by a learned "missing" vector
(``concat``; ``gated``: as the gate's input, and it gets no gate weight) or left out of
the average of the logits (``late``). ``modality_dropout`` hides each modality of each
training row with that probability (never all of a row's modalities), so the model
learns to predict from what is there. ``aux_loss`` adds, with that weight, the
cross-entropy of a linear head per modality (on its own features; for ``late``, of its
own head), which pushes every encoder to be informative on its own.

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

from medfuse.data.augment import symmetric_views

#: batch fields each modality's encoder consumes (one field -> tensor, several -> tuple)
MODALITY_FIELDS: dict[str, tuple[str, ...]] = {
    "image": ("image",),
    "tabular": ("tabular_cat", "tabular_cont"),
    "text": ("text",),
}
FUSIONS = ("concat", "gated", "late")
#: batch field: which modalities each row has, ``(B, M)`` in the encoders' order
PRESENT = "present"


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


def drop_modalities(present: torch.Tensor, p: float) -> torch.Tensor:
    """Hide each present modality of each row with probability ``p``; never a whole row.

    A row that would lose every modality it has keeps them all (so the share of rows
    trained on all their modalities is a little above ``(1 - p) ** M``). Draws from
    torch's global generator, which :class:`~medfuse.training.EpochSeed` seeds per epoch.

    >>> _ = torch.manual_seed(0)
    >>> kept = drop_modalities(torch.ones(1000, 3), 0.3)
    >>> bool((kept.sum(1) >= 1).all()), round(float(kept.mean()), 1)
    (True, 0.7)
    """
    keep = present * (torch.rand_like(present) >= p).to(present.dtype)
    empty = keep.sum(1, keepdim=True) == 0
    return torch.where(empty, present, keep)


def logits_to_proba(model: nn.Module, logits: torch.Tensor) -> torch.Tensor:
    """Probabilities from ``model``'s logits: a softmax over classes, or one sigmoid per
    label for a multi-label model (``model.multilabel``)."""
    if getattr(model, "multilabel", False):
        return torch.sigmoid(logits.float())
    return torch.softmax(logits.float(), dim=1)


def view_averaged_proba(model: nn.Module, batch: dict[str, torch.Tensor],
                        views: str = "none") -> torch.Tensor:
    """Softmax probabilities of ``model`` averaged over views of ``batch["image"]``.

    ``views`` as in :func:`~medfuse.data.augment.symmetric_views` (``"none"``: one pass);
    the other batch fields are the same in every pass. Test-time augmentation for
    images without a canonical orientation.
    """
    if views == "none" or "image" not in batch:
        return logits_to_proba(model, model(batch))
    probs = [logits_to_proba(model, model({**batch, "image": v}))
             for v in symmetric_views(batch["image"], views)]
    return torch.stack(probs).mean(0)


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
    missing:
        Read the batch's ``present`` field and predict from the modalities a row has
        (learned "missing" vectors for ``concat``). Without it ``present`` is ignored.
    modality_dropout:
        Training only (needs ``missing``): probability of hiding each modality of a row.
    aux_loss:
        Weight of the per-modality auxiliary losses (0: none; see :meth:`aux_logits`).
    """

    def __init__(
        self,
        encoders: dict[str, nn.Module],
        n_classes: int,
        hidden_dims: Sequence[int] = (128,),
        dropout: float = 0.2,
        fusion: str = "concat",
        missing: bool = False,
        modality_dropout: float = 0.0,
        aux_loss: float = 0.0,
        multilabel: bool = False,
    ) -> None:
        super().__init__()
        self.multilabel = bool(multilabel)  # n_classes sigmoid outputs, one per label
        if fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {FUSIONS}; got {fusion!r}")
        if modality_dropout and not missing:
            raise ValueError("modality_dropout needs missing=True")
        self.encoders = nn.ModuleDict(encoders)
        self.fusion = fusion
        self.missing = missing
        self.modality_dropout = float(modality_dropout)
        self.aux_loss = float(aux_loss)
        dims = {k: output_dim(e) for k, e in encoders.items()}
        if missing and fusion != "late":
            self.absent = nn.ParameterDict({k: nn.Parameter(torch.zeros(d))
                                            for k, d in dims.items()})
        if fusion == "concat":
            self.head = mlp(sum(dims.values()), hidden_dims, n_classes, dropout)
        elif fusion == "gated":
            width = hidden_dims[0] if hidden_dims else 128
            self.proj = nn.ModuleDict({k: nn.Linear(d, width) for k, d in dims.items()})
            self.gate = nn.Linear(sum(dims.values()), len(dims))
            self.head = mlp(width * len(dims), hidden_dims[1:], n_classes, dropout)
        else:
            self.heads = nn.ModuleDict(
                {k: mlp(d, hidden_dims, n_classes, dropout) for k, d in dims.items()}
            )
        if aux_loss and fusion != "late":  # late fusion's own heads are per modality
            self.aux = nn.ModuleDict({k: nn.Linear(d, n_classes) for k, d in dims.items()})

    @property
    def modalities(self) -> list[str]:
        """The modalities, in the order of the ``present`` field's columns."""
        return list(self.encoders)

    def encode(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Per-modality features ``{name: (B, output_dim)}``."""
        return {k: enc(modality_input(k, batch)) for k, enc in self.encoders.items()}

    def presence(self, batch: dict[str, torch.Tensor]) -> torch.Tensor | None:
        """``(B, M)`` float mask of the modalities used for each row (None: all of them).

        In training, modality dropout hides some of them (drawn anew at every call).
        """
        if not self.missing or PRESENT not in batch:
            return None
        present = batch[PRESENT].float()
        if self.training and self.modality_dropout > 0:
            present = drop_modalities(present, self.modality_dropout)
        return present

    def _fuse(self, feats: dict[str, torch.Tensor], present: torch.Tensor | None
              ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits, and for ``gated`` the gate weights ``(B, M)``."""
        if present is not None and self.fusion != "late":  # the learned "missing" vectors
            feats = {k: torch.where(present[:, i:i + 1] > 0, f, self.absent[k].to(f.dtype))
                     for i, (k, f) in enumerate(feats.items())}
        if self.fusion == "concat":
            return self.head(torch.cat(list(feats.values()), dim=1)), None
        if self.fusion == "gated":
            gates = torch.sigmoid(self.gate(torch.cat(list(feats.values()), dim=1)))
            if present is not None:  # absent modalities get no weight
                gates = gates * present.to(gates.dtype)
            projected = torch.stack([torch.relu(self.proj[k](f)) for k, f in feats.items()], 1)
            # each modality's embedding scaled by its own gate in (0, 1), side by side
            fused = (gates.unsqueeze(-1) * projected).flatten(1)
            weights = gates / gates.sum(1, keepdim=True).clamp_min(1e-12)
            return self.head(fused), weights
        logits = torch.stack([self.heads[k](f) for k, f in feats.items()], dim=1)  # (B, M, C)
        if present is None:
            return logits.mean(1), None
        w = present.to(logits.dtype).unsqueeze(-1)
        return (logits * w).sum(1) / w.sum(1).clamp_min(1.0), None

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self._fuse(self.encode(batch), self.presence(batch))[0]

    def forward_train(self, batch: dict[str, torch.Tensor]
                      ) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor | None]:
        """Logits, per-modality auxiliary logits (empty without ``aux_loss``) and the mask.

        The auxiliary logits of a modality are computed from its own features (``late``:
        its head's logits), which the encoders compute for every row; the mask is the one
        the fusion used (modality dropout applied). The auxiliary losses count on the rows
        that really have the modality (the batch's ``present``; see
        :class:`~medfuse.training.FusionModule`).
        """
        feats = self.encode(batch)
        present = self.presence(batch)
        logits, _ = self._fuse(feats, present)
        aux: dict[str, torch.Tensor] = {}
        if self.aux_loss:
            heads: Any = self.heads if self.fusion == "late" else self.aux
            aux = {k: heads[k](f) for k, f in feats.items()}
        return logits, aux, present

    def gates(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Normalised gates ``(B, M)`` of a ``gated`` model (rows sum to 1; absent: 0)."""
        if self.fusion != "gated":
            raise ValueError(f"gate weights exist for fusion='gated' only; this is {self.fusion!r}")
        return self._fuse(self.encode(batch), self.presence(batch))[1]  # type: ignore[return-value]
