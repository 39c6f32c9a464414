"""The ``model`` section: encoders per modality, fusion and head (fused or hybrid models)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from medfuse.config.base import Spec

TEXT_FEATURE_VIEWS = ("tfidf", "word2vec", "minilm")


class ModelSpec(Spec):
    """The model: encoders per modality, fusion and head."""

    kind: Literal["fusion", "hybrid"] = "fusion"
    image_backbone: str = "tf_efficientnet_lite0"
    pretrained: str = Field(
        "builtin", description="'builtin', 'none', 'hub' or a local .pth/.safetensors path"
    )
    image_size: int | None = Field(None, ge=16, le=1024)
    freeze_image: bool = Field(False, description="train only the head on frozen image features")
    text_encoder: Literal["wordcnn", "minilm", "wordcnn+minilm"] = "wordcnn"
    finetune_text: bool = Field(False, description="fine-tune MiniLM (frozen by default)")
    embed_dim: int = Field(100, ge=8, le=1024, description="word2vec / word-CNN embedding size")
    fusion: Literal["concat", "gated", "late"] = "concat"
    modality_dropout: float = Field(
        0.0, ge=0.0, lt=1.0, description="fused models: probability of hiding each modality "
        "of a training row (never all of them); > 0 also lets the model predict rows that "
        "lack a modality (no image file, empty text, no tabular value)"
    )
    aux_loss: float = Field(
        0.0, ge=0.0, description="fused models: weight of auxiliary per-modality losses (a "
        "linear head per modality; late fusion: its own heads)"
    )
    hidden_dims: list[int] = Field(default_factory=lambda: [128])
    dropout: float = Field(0.2, ge=0.0, lt=1.0)
    max_tokens: int = Field(128, ge=4, le=4096)
    min_token_freq: int = Field(2, ge=1)
    max_vocab: int = Field(20000, ge=10)
    # --- hybrid models (kind: hybrid): deep features + a classical head
    head: Literal["lr", "rf", "adaboost", "xgboost", "svm"] = Field(
        "lr", description="classical head of hybrid models"
    )
    head_params: dict[str, Any] = Field(
        default_factory=dict, description="constructor arguments of the head, e.g. {C: 0.1}"
    )
    extractor: Literal["frozen", "trained"] = Field(
        "frozen", description="frozen pretrained backbone, or a CNN trained on the training "
        "rows only (small_cnn unless image_backbone is set)"
    )
    extractor_tabular: bool = Field(
        False, description="extractor: trained: train the network on the tabular columns "
        "too and add its tabular embedding to the features"
    )
    text_features: str = Field(
        "tfidf", description="tfidf | word2vec | minilm, several joined by '+', or none"
    )
    text_components: int = Field(128, ge=0, description="SVD components of TF-IDF (0: raw)")
    resample: Literal["none", "smote", "adasyn", "oversample"] = Field(
        "none", description="imbalanced-learn resampling inside each training fold"
    )
    class_weight: bool = Field(True, description="balanced class weights (when not resampling)")
    feature_cache: bool = Field(True, description="cache frozen image features on disk")
    image_pool: Literal["avg", "gem"] = Field(
        "avg", description="pooling of the image backbone's last feature map: avg or gem "
        "(generalised mean, p = 3)"
    )
    image_views: Literal["none", "hflip", "dihedral"] = Field(
        "none", description="image features averaged over the image and its mirror image "
        "(hflip: left-right invariant, twice the compute), over its eight flips / quarter "
        "turns (dihedral, 8x the compute) or not"
    )
    tta: Literal["none", "hflip", "dihedral"] = Field(
        "none", description="fused models: test-time augmentation, class probabilities "
        "averaged over the image and its mirror image (hflip) or its eight flips / quarter "
        "turns (dihedral) at prediction; training is unchanged"
    )

    @field_validator("text_features")
    @classmethod
    def _text_views(cls, value: str) -> str:
        if value == "none":
            return value
        views = value.split("+")
        bad = [v for v in views if v not in TEXT_FEATURE_VIEWS]
        if bad or len(set(views)) != len(views):
            raise ValueError(
                f"must be one of {', '.join(TEXT_FEATURE_VIEWS)}, several joined by '+' or none "
                f"(each once), e.g. 'tfidf+minilm'; got {value!r}"
            )
        return value
