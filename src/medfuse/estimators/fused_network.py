"""A fused model's network, built from its parameters and its fitted preprocessor.

The same functions build the network to train (``fit``) and the empty one the saved
weights are loaded into (``load``), so both have the same modules in the same order.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from torch import nn

from medfuse.data.preprocess import Preprocessor
from medfuse.estimators.fused_params import FusionParams
from medfuse.fusion import FusionModel

if TYPE_CHECKING:
    from medfuse.encoders.image import ImageEncoder

__all__ = ["TOKENIZERS", "build_network", "image_encoder", "pretrained_modules", "tokenizer"]

TOKENIZERS = {"wordcnn": "vocab", "minilm": "minilm"}
"""The :class:`~medfuse.data.preprocess.Preprocessor` tokenizer each text encoder reads."""


def tokenizer(text_encoder: str) -> str:
    """The preprocessor's tokenizer for ``text_encoder`` (``"+"`` joins the views')."""
    return "+".join(TOKENIZERS[v] for v in text_encoder.split("+"))


def image_encoder(params: FusionParams, pretrained: str) -> ImageEncoder:
    """The image encoder of ``params`` starting from ``pretrained`` weights."""
    from medfuse.encoders.image import ImageEncoder

    return ImageEncoder(
        params.image_backbone, pretrained=pretrained, image_size=params.image_size,
        freeze=params.freeze_image, pool=params.image_pool, views=params.image_views,
    )


def build_network(
    params: FusionParams, pre: Preprocessor, image: nn.Module | None, embeddings: Any = None
) -> FusionModel:
    """The encoders of the spec's modalities joined by the fusion head.

    ``image`` is the image encoder (``None`` without an image column); ``embeddings``
    initialise the word-CNN's embedding table (word2vec vectors at ``fit``, none at
    ``load``).
    """
    spec = params.spec
    encoders: dict[str, nn.Module] = {}
    if image is not None:
        encoders["image"] = image
    if pre.tabular_ is not None:
        from medfuse.encoders.tabular import TabularEncoder

        encoders["tabular"] = TabularEncoder(
            pre.tabular_.cardinalities, len(pre.tabular_.continuous_names),
            dropout=params.dropout,
        )
    if spec.text:
        from medfuse.encoders import text as text_encoders

        views: list[nn.Module] = []
        for name in params.text_encoder.split("+"):
            if name == "minilm":
                views.append(text_encoders.MiniLMEncoder(finetune=params.finetune_text))
            elif pre.vocab_ is not None:
                views.append(text_encoders.WordCNNEncoder(
                    len(pre.vocab_), embed_dim=params.embed_dim, embeddings=embeddings,
                    dropout=params.dropout,
                ))
        encoders["text"] = (
            views[0] if len(views) == 1 else text_encoders.MultiViewTextEncoder(views)
        )
    return FusionModel(
        encoders, len(pre.classes_), tuple(params.hidden_dims), params.dropout, params.fusion,
        missing=params.handles_missing, modality_dropout=float(params.modality_dropout),
        aux_loss=float(params.aux_loss), multilabel=pre.multilabel,
    )


def pretrained_modules(model: FusionModel, pretrained: str) -> tuple[nn.Module, ...]:
    """Encoders that start from pretrained weights (trained at ``encoder_lr``)."""
    from medfuse.encoders.text import MiniLMEncoder

    out: list[nn.Module] = []
    for name, encoder in model.encoders.items():
        if name == "image" and pretrained != "none":
            out.append(encoder)
        out += [m for m in encoder.modules() if isinstance(m, MiniLMEncoder)]
    return tuple(out)
