"""Deep hybrid learning: deep features + a classical head, leakage-safe.

A CNN only *extracts* features here; a scikit-learn / XGBoost head decides.
Everything learned from data is learned from the training rows only:

* the image extractor is either a frozen pretrained backbone (nothing learned)
  or a CNN trained on the training rows and then cut before its head;
* tabular encodings (category maps, imputation, scaling), TF-IDF + SVD and
  word2vec are fitted on the training rows;
* resampling (SMOTE / ADASYN / random oversampling) runs inside an
  imbalanced-learn pipeline, so it only ever sees the rows passed to ``fit``.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import pandas as pd
import torch
from scipy import sparse

from medfuse.config import DataSpec, RunConfig
from medfuse.data.decoded import DecodedImages, training_cache
from medfuse.data.digests import module_digest
from medfuse.data.preprocess import ImageTransform, Preprocessor
from medfuse.data.validation import validate_table
from medfuse.encoders.image import ImageEncoder
from medfuse.errors import ConfigError, NotFittedError, did_you_mean
from medfuse.estimators.base import DecisionMixin
from medfuse.estimators.hybrid.features import (
    FeatureCache,
    Features,
    bf16_supported,
    default_cache_dir,
    extract_image_features,
    hstack,
    mean_word_vectors,
    one_hot,
)
from medfuse.estimators.hybrid.heads import (
    fit_pipeline,
    head_pipeline,
    multilabel_proba,
    require_two_classes,
    strip_resamplers,
)
from medfuse.estimators.hybrid.network import deep_features, train_extractor
from medfuse.estimators.hybrid.params import (
    check_network_options,
    check_params,
    params_from_config,
)
from medfuse.estimators.hybrid.storage import load_hybrid, save_hybrid
from medfuse.estimators.hybrid.text import MiniLMViews, fit_text_views
from medfuse.scoring.checks import check_sample_weight

log = logging.getLogger(__name__)


class HybridClassifier(DecisionMixin):
    """Deep features (image CNN, tabular encodings, text vectors) + a classical head.

    Parameters
    ----------
    spec:
        The data spec; any subset of image / tabular / text.
    image_backbone, pretrained, image_size:
        The image feature extractor, as in :class:`~medfuse.FusionClassifier`. Default
        backbone: ``tf_efficientnet_lite0`` (builtin weights) for ``extractor="frozen"``,
        ``small_cnn`` (random init) for ``extractor="trained"``.
    extractor:
        ``"frozen"``: a pretrained backbone's pooled features, cached on disk.
        ``"trained"``: a network over the image and / or text inputs (image CNN,
        word2vec-initialised word-CNN) trained on the training rows only
        (``max_epochs``, ``lr``) and then cut before its head.
    extractor_tabular:
        With ``extractor="trained"``: train that network on the tabular columns as well
        (image / text encoders learn what the tabular values do not already say) and add
        its tabular embedding to the features. The raw tabular values always go to the
        head.
    text_encoder, finetune_text, encoder_lr:
        With ``extractor="trained"`` and a text column: the network's text encoder,
        ``"wordcnn"`` (word2vec-initialised word-CNN), ``"minilm"`` or
        ``"wordcnn+minilm"`` (both side by side); ``finetune_text`` trains MiniLM's layers
        too (at ``encoder_lr``, default ``lr``), on the training rows only like the rest
        of the network.
    text_features:
        ``"tfidf"`` (word 1-2-grams, then ``text_components`` SVD components; 0 keeps the
        sparse TF-IDF), ``"word2vec"`` (mean of word vectors trained on the training
        texts, ``embed_dim``), ``"minilm"`` (frozen sentence embeddings, cached), or
        several joined by ``+`` (e.g. ``"tfidf+minilm"``), concatenated; ``"none"``
        when a trained extractor's text encoder should be the only text features.
    head, head_params:
        ``lr``, ``rf``, ``adaboost``, ``xgboost`` or ``svm``; ``head_params`` go to its
        constructor (e.g. ``{"C": 0.1}``).
    resample:
        ``none``, ``smote``, ``adasyn`` or ``oversample``, applied inside ``fit`` only.
    class_weight:
        Balanced class weights when not resampling.
    cache_dir:
        Feature cache folder (default ``$MEDFUSE_HOME/features``); ``cache=False`` disables it.
    precision:
        ``"bf16-mixed"`` runs the frozen extractor in PyTorch under bf16 autocast (on
        CPUs with native bf16); otherwise it runs in fp32 with onnxruntime (exported once
        into ``$MEDFUSE_HOME/onnx``; PyTorch when onnxruntime is unavailable).
    image_pool, image_views:
        Frozen extractor: ``"avg"`` or ``"gem"`` pooling of the last feature map,
        and ``"none"``, ``"hflip"`` (features averaged over the image and its mirror
        image) or ``"dihedral"`` (over its eight flips / quarter turns); see
        :class:`~medfuse.encoders.image.ImageEncoder`.
    """

    kind: ClassVar[Literal["fused", "hybrid"]] = "hybrid"

    _PARAMS = (
        "image_backbone", "pretrained", "image_size", "extractor", "text_features",
        "text_components", "embed_dim", "min_token_freq", "max_tokens", "head", "head_params",
        "resample", "class_weight", "cache", "cache_dir", "batch_size", "precision",
        "max_epochs", "lr", "seed", "progress", "image_pool", "image_views",
        "extractor_tabular", "text_encoder", "finetune_text", "encoder_lr",
    )

    def __init__(
        self,
        spec: DataSpec,
        image_backbone: str | None = None,
        pretrained: str | None = None,
        image_size: int | None = None,
        extractor: str = "frozen",
        text_features: str = "tfidf",
        text_components: int = 128,
        embed_dim: int = 100,
        min_token_freq: int = 2,
        max_tokens: int = 256,
        head: str = "lr",
        head_params: dict[str, Any] | None = None,
        resample: str = "none",
        class_weight: bool = True,
        cache: bool = True,
        cache_dir: str | None = None,
        batch_size: int = 64,
        precision: str = "32-true",
        max_epochs: int = 10,
        lr: float = 1e-3,
        seed: int = 0,
        progress: bool = True,
        image_pool: str = "avg",
        image_views: str = "none",
        extractor_tabular: bool = False,
        text_encoder: str = "wordcnn",
        finetune_text: bool = False,
        encoder_lr: float | None = None,
    ) -> None:
        self.spec = spec
        self.image_backbone = image_backbone
        self.pretrained = pretrained
        self.image_size = image_size
        self.extractor = extractor
        self.text_features = text_features
        self.text_components = text_components
        self.embed_dim = embed_dim
        self.min_token_freq = min_token_freq
        self.max_tokens = max_tokens
        self.head = head
        self.head_params = head_params
        self.resample = resample
        self.class_weight = class_weight
        self.cache = cache
        self.cache_dir = cache_dir
        self.batch_size = batch_size
        self.precision = precision
        self.max_epochs = max_epochs
        self.lr = lr
        self.seed = seed
        self.progress = progress
        self.image_pool = image_pool
        self.image_views = image_views
        self.extractor_tabular = extractor_tabular
        self.text_encoder = text_encoder
        self.finetune_text = finetune_text
        self.encoder_lr = encoder_lr

    def get_params(self) -> dict[str, Any]:
        """Constructor arguments (except ``spec``), as scikit-learn's ``get_params``."""
        return {k: getattr(self, k) for k in self._PARAMS}

    def set_params(self, **params: Any) -> HybridClassifier:
        for k, v in params.items():
            if k not in self._PARAMS:
                raise ConfigError(f"HybridClassifier has no parameter {k!r}."
                                  f"{did_you_mean(k, self._PARAMS)}")
            setattr(self, k, v)
        return self

    @classmethod
    def from_config(cls, cfg: RunConfig, **overrides: Any) -> HybridClassifier:
        """Build from a :class:`RunConfig` (``model.kind: hybrid``)."""
        params = params_from_config(cfg)
        params.update(overrides)
        return cls(cfg.data, **params)

    # ------------------------------------------------------------------ helpers
    @property
    def backbone_(self) -> str:
        if self.image_backbone:
            return self.image_backbone
        return "small_cnn" if self.extractor == "trained" else "tf_efficientnet_lite0"

    @property
    def weights_(self) -> str:
        if self.pretrained:
            return self.pretrained
        return "none" if self.backbone_ == "small_cnn" else "builtin"

    def _bf16(self) -> bool:
        return self.precision.startswith("bf16") and bf16_supported()

    def _backend(self) -> str:
        """Frozen extraction runs in onnxruntime (fp32, ~8x eager PyTorch on 2 cores)
        unless bf16 was asked for (PyTorch bf16 autocast, ~5x, a few % error)."""
        return "torch" if self._bf16() else "auto"

    def training_seconds(self) -> float:
        """Seconds spent fitting the head plus extracting the training rows' features."""
        return float(self.fit_seconds_ + getattr(self, "feature_seconds_", 0.0))

    def training_precision(self) -> str | None:
        """None: the head trains in float64 and the extractor's precision is in its key."""
        return None

    def _check_fitted(self) -> None:
        if not hasattr(self, "head_"):
            raise NotFittedError(
                "This HybridClassifier is not fitted yet: call fit(train) or "
                "HybridClassifier.load(run_dir) first."
            )

    # ------------------------------------------------------------------ fit
    def fit(self, train: pd.DataFrame, valid: pd.DataFrame | None = None,
            run_dir: str | Path | None = None, resume: bool = False,
            sample_weight: Any = None) -> HybridClassifier:
        """Fit the feature extractors and the head on ``train`` only.

        ``valid`` is used for early stopping of a ``trained`` extractor (carved from
        ``train`` when None; a frozen extractor ignores it). ``run_dir`` receives a
        trained extractor's logs. ``sample_weight`` (one per row of ``train``) weighs the
        rows in the head's fit (see :meth:`fit_head`).
        """
        if sample_weight is not None:
            sample_weight = check_sample_weight(sample_weight, len(train))
        t0 = time.perf_counter()
        X, y = self.fit_features(train, valid, run_dir)
        self.feature_seconds_ = time.perf_counter() - t0
        return self.fit_head(X, y, sample_weight=sample_weight)

    def fit_features(self, train: pd.DataFrame, valid: pd.DataFrame | None = None,
                     run_dir: str | Path | None = None) -> tuple[Features, np.ndarray]:
        """Fit every feature extractor on ``train``; return its features and encoded labels."""
        check_params(type(self).__name__, self.head, self.resample, self.extractor,
                     self.text_features, self.text_components)
        check_network_options(self)
        spec = self.spec
        if spec.image and spec.policy.missing_image == "keep":
            raise ConfigError(
                "data.policy.missing_image=keep: hybrid models need an image in every row "
                "(their classical head has no 'missing' input). Use a fused model "
                "(model.kind: fusion) with model.modality_dropout > 0, or "
                "data.policy.missing_image=drop."
            )
        torch.manual_seed(self.seed)  # random-init extractors are reproducible (and cacheable)
        train, self.validation_ = validate_table(train, spec, table="train",
                                                 check_images="exists")
        self.image_encoder_: torch.nn.Module | None = None
        self.extractor_model_: Any = None
        self._memo: dict[str, np.ndarray] = {}
        transform = ImageTransform()
        if self.extractor == "trained":
            transform = self._fit_trained_extractor(train, valid, run_dir)
        elif spec.image:
            enc = ImageEncoder(self.backbone_, self.weights_, self.image_size, freeze=True,
                               pool=self.image_pool, views=self.image_views)
            self.image_encoder_, transform = enc, enc.transform
        self.pre_ = Preprocessor(spec, self.max_tokens, self.min_token_freq, image=transform,
                                 tokenizer="vocab").fit(train)
        self.classes_ = list(self.pre_.classes_)
        self.text_model_: Any = None
        self.word_vectors_: np.ndarray | None = None
        if spec.text and self.text_features != "none":
            self._fit_text(train)
        y = self.pre_.encode_target(train).numpy()
        if self.multilabel:  # (n, L) 0/1; every label's two outcomes checked at fit
            y = y.astype(int)
        else:
            require_two_classes(y, len(self.classes_))
        return self._transform(train, fitting=True), y

    def fit_head(self, X: Features, y: np.ndarray, head: str | None = None,
                 head_params: dict[str, Any] | None = None,
                 sample_weight: Any = None) -> HybridClassifier:
        """Fit (or refit, with another ``head``) the classical head on extracted features.

        ``sample_weight`` (one non-negative weight per row of ``X``) goes to the head's
        ``fit``, times the balanced class weights where the head takes those as row
        weights (XGBoost). A resampler cannot carry row weights to the rows it makes up:
        ``resample`` must be ``none`` then.
        """
        if head is not None:
            self.head, self.head_params = head, head_params
        check_params(type(self).__name__, self.head, self.resample, self.extractor,
                     self.text_features, self.text_components)
        pipe = head_pipeline(self.head, self.head_params, self.resample, self.seed,
                             self.class_weight, dense=not sparse.issparse(X),
                             multilabel=self.multilabel)
        t0 = time.perf_counter()
        fit_pipeline(pipe, X, y, self.head, self.resample, self.class_weight, sample_weight)
        self.fit_seconds_ = time.perf_counter() - t0
        # the resampler only acts during fit: keep (and save) the steps after it
        if self.multilabel:
            self.head_ = strip_resamplers(pipe)
        else:
            self.head_ = pipe[1:] if self.resample != "none" else pipe
        return self

    def _fit_trained_extractor(self, train: pd.DataFrame, valid: pd.DataFrame | None,
                               run_dir: str | Path | None) -> ImageTransform:
        """Train the in-fold network (see :func:`train_extractor`); its image transform."""
        self.extractor_model_ = train_extractor(self, train, valid, run_dir)
        return self.extractor_model_.pre_.image

    def _deep_features(self, df: pd.DataFrame) -> np.ndarray:
        return deep_features(self.extractor_model_, df, self.batch_size)

    def _fit_text(self, train: pd.DataFrame) -> None:
        assert self.pre_.vocab_ is not None
        self.text_model_, self.word_vectors_ = fit_text_views(
            train[self.spec.text].astype(str).tolist(), self.text_features.split("+"),
            self.pre_.vocab_, self.min_token_freq, self.text_components, self.embed_dim,
            self.seed)

    # ------------------------------------------------------------------ features
    def transform(self, df: pd.DataFrame) -> Features:
        """The feature matrix of (validated) rows ``df``: image | tabular | text blocks."""
        self._check_features()
        clean, _ = validate_table(df, self.input_spec(), table="predict",
                                  check_images="exists", require_target=False, training=False)
        return self._transform(clean)

    def _check_features(self) -> None:
        if not hasattr(self, "pre_"):
            raise NotFittedError(
                "This HybridClassifier is not fitted yet: call fit(train) or "
                "HybridClassifier.load(run_dir) first."
            )

    def _image_cache(self) -> FeatureCache | None:
        if not self.cache or self.extractor != "frozen" or self.image_encoder_ is None:
            return None
        if not hasattr(self, "_cache_obj"):
            enc = self.image_encoder_
            key = {"backbone": self.backbone_, "weights": module_digest(enc),
                   "transform": self.pre_.image.to_dict(), "bf16": self._bf16(),
                   "backend": self._backend(),
                   "pool": self.image_pool, "views": self.image_views,
                   "torch": torch.__version__.split("+")[0]}
            self._cache_obj = FeatureCache(self.cache_dir or default_cache_dir(), key)
        return self._cache_obj

    def _decoded_images(self) -> DecodedImages | None:
        """The on-disk cache of decoded, resized training images (with ``cache``; see
        :func:`medfuse.data.decoded.training_cache`). Rows sent for prediction only get
        their feature vectors cached."""
        if not self.cache or self.image_encoder_ is None:
            return None
        obj: DecodedImages | None = getattr(self, "_decoded_obj", None)
        if obj is None or obj.transform != self.pre_.image:
            obj = self._decoded_obj = training_cache(self.pre_.image)
        return obj

    def _transform(self, df: pd.DataFrame, fitting: bool = False) -> Features:
        spec, parts = self.spec, []
        if self.extractor_model_ is not None:
            parts.append(self._deep_features(df))
        elif spec.image:
            assert self.image_encoder_ is not None
            parts.append(extract_image_features(
                self.image_encoder_, self.pre_.image, df[spec.image].astype(str).tolist(),
                cache=self._image_cache(), batch_size=self.batch_size,
                bf16=self._bf16(), progress=self.progress, memo=self._memo,
                decoded=self._decoded_images() if fitting else None,
                backend=self._backend(),
            ))
        if self.pre_.tabular_ is not None:
            codes, values = self.pre_.tabular_.transform(df)
            parts.append(one_hot(codes, self.pre_.tabular_.cardinalities))
            parts.append(values.astype(np.float32))
        if spec.text and self.text_features != "none":
            parts.append(self._text_features(df[spec.text]))
        return hstack(parts)

    def _text_features(self, texts: pd.Series) -> Features:
        parts: list[Features] = []
        for view in self.text_features.split("+"):
            if view == "tfidf":
                out = self.text_model_.transform(texts.astype(str).tolist())
                parts.append(out if sparse.issparse(out) else np.asarray(out, np.float32))
            elif view == "word2vec":
                assert self.word_vectors_ is not None
                parts.append(mean_word_vectors(self.pre_.encode_text(texts), self.word_vectors_))
            else:
                if not hasattr(self, "_minilm"):
                    self._minilm = MiniLMViews(self.max_tokens)
                cache = None
                if self.cache:
                    cache = FeatureCache(self.cache_dir or default_cache_dir(), self._minilm.key)
                parts.append(self._minilm(texts.astype(str).tolist(), cache))
        return hstack(parts)

    # ------------------------------------------------------------------ predict
    def _raw_proba(self, df: pd.DataFrame) -> np.ndarray:
        return self.predict_proba_features(self.transform(df))

    def predict_proba_features(self, X: Features) -> np.ndarray:
        """Probabilities from an already extracted feature matrix."""
        self._check_fitted()
        if self.multilabel:
            return multilabel_proba(self.head_, X)
        proba = np.zeros((X.shape[0], len(self.classes_)))
        raw = self.head_.predict_proba(X)
        proba[:, np.asarray(self.head_.classes_, dtype=int)] = raw
        return proba

    # ------------------------------------------------------------------ save / load
    def save(self, path: str | Path) -> Path:
        """Write the head (skops / XGBoost JSON), feature state (JSON + safetensors), manifest."""
        self._check_fitted()
        return save_hybrid(self, Path(path))

    @classmethod
    def load(cls, path: str | Path) -> HybridClassifier:
        """Load a saved model; files are checked against ``manifest.json`` first.

        sklearn objects are read with skops and only sklearn / numpy / scipy types are
        trusted; nothing is unpickled.
        """
        return load_hybrid(cls, Path(path))
