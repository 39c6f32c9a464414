"""A hybrid model's parameters: their checks, and how a run config maps onto them."""

from __future__ import annotations

from typing import Any

from medfuse.config import RunConfig
from medfuse.errors import ConfigError, check_option
from medfuse.estimators.base import TEXT_ENCODERS
from medfuse.estimators.hybrid.heads import HEADS, RESAMPLERS

EXTRACTORS = ("frozen", "trained")
TEXT_FEATURES = ("tfidf", "word2vec", "minilm")


def params_from_config(cfg: RunConfig) -> dict[str, Any]:
    """The :class:`HybridClassifier` arguments a :class:`RunConfig` sets
    (``model.kind: hybrid``)."""
    m, t = cfg.model, cfg.train
    set_ = m.model_fields_set
    if m.tta != "none":
        raise ConfigError(
            f"model.tta={m.tta!r} averages a fused model's predictions over views of the "
            f"image; a hybrid model averages its frozen features instead: set "
            f"model.image_views={m.tta!r} and model.tta=none."
        )
    params: dict[str, Any] = dict(
        image_backbone=m.image_backbone if "image_backbone" in set_ else None,
        pretrained=m.pretrained if "pretrained" in set_ else None,
        image_size=m.image_size, extractor=m.extractor, text_features=m.text_features,
        text_components=m.text_components, embed_dim=m.embed_dim,
        min_token_freq=m.min_token_freq, max_tokens=m.max_tokens, head=m.head,
        head_params=dict(m.head_params), resample=m.resample,
        class_weight=m.class_weight, cache=m.feature_cache, batch_size=t.batch_size,
        precision=t.precision, max_epochs=t.max_epochs, lr=t.lr, seed=t.seed,
        image_pool=m.image_pool, image_views=m.image_views,
        extractor_tabular=m.extractor_tabular, text_encoder=m.text_encoder,
        finetune_text=m.finetune_text, encoder_lr=t.encoder_lr,
    )
    return params


def check_params(owner: str, head: str, resample: str, extractor: str, text_features: str,
                 text_components: int) -> None:
    check_option("head", head, HEADS, owner)
    check_option("resample", resample, RESAMPLERS, owner)
    check_option("extractor", extractor, EXTRACTORS, owner)
    views = text_features.split("+")
    if text_features == "none":
        views = []
    for view in views:
        check_option("text_features", view, TEXT_FEATURES, owner)
    if len(set(views)) != len(views):
        raise ConfigError(f"The 'text_features' parameter of {owner} repeats a view: "
                          f"{text_features!r}.")
    if not isinstance(text_components, int) or text_components < 0:
        raise ConfigError(
            f"The 'text_components' parameter of {owner} must be an int >= 0 (0 keeps the raw "
            f"sparse TF-IDF). Got {text_components!r} instead."
        )


def check_network_options(clf: Any) -> None:
    """The options of the in-fold network: well typed, and only with one to train."""
    name = type(clf).__name__
    for flag in ("extractor_tabular", "finetune_text"):
        if not isinstance(getattr(clf, flag), bool):
            raise ConfigError(f"The '{flag}' parameter of {name} must be True or False. "
                              f"Got {getattr(clf, flag)!r} instead.")
    if clf.extractor_tabular and clf.extractor != "trained":
        raise ConfigError(
            "extractor_tabular=True trains the in-fold network on the tabular columns, "
            f"and extractor={clf.extractor!r} trains no network: set "
            "extractor='trained' (model.extractor: trained), or extractor_tabular=False."
        )
    check_option("text_encoder", clf.text_encoder, TEXT_ENCODERS, name)
    custom = clf.text_encoder != "wordcnn" or clf.finetune_text
    if custom and clf.extractor != "trained":
        raise ConfigError(
            f"text_encoder={clf.text_encoder!r} / finetune_text={clf.finetune_text} "
            "choose the text encoder of the network a hybrid model trains in-fold, and "
            f"extractor={clf.extractor!r} trains none: set extractor='trained' "
            "(model.extractor: trained), or choose the frozen text views with "
            "text_features (e.g. 'minilm')."
        )
    if clf.finetune_text and "minilm" not in clf.text_encoder:
        raise ConfigError(
            f"finetune_text=True fine-tunes MiniLM, and text_encoder={clf.text_encoder!r} "
            "has none: set text_encoder='minilm' or 'wordcnn+minilm' "
            "(model.text_encoder), or finetune_text=False."
        )
