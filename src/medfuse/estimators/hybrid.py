"""Deep hybrid learning: deep features + a classical head, leakage-safe.

A CNN only *extracts* features here; a scikit-learn / XGBoost head decides.
Everything learned from data is learned from the training rows only:

* the image extractor is either a frozen pretrained backbone (nothing learned)
  or a CNN trained on the training rows and then cut before its head;
* tabular encodings (category maps, imputation, scaling), TF-IDF + SVD and
  word2vec are fitted on the training rows;
* resampling (SMOTE / ADASYN / random oversampling) runs inside an
  imbalanced-learn pipeline, so it only ever sees the rows passed to ``fit``.

Frozen image features are cached on disk (:class:`FeatureCache`), keyed by the
backbone, a hash of its weights, the image transform, the precision and each
image's content hash, so trying five heads extracts features once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeAlias

import numpy as np
import pandas as pd
import torch
from scipy import sparse

from medfuse.config import DataSpec, RunConfig
from medfuse.data.decoded import DecodedImages
from medfuse.data.digests import file_digest
from medfuse.data.preprocess import ImageTransform, Preprocessor
from medfuse.errors import ConfigError, DataError, NotFittedError, check_option, did_you_mean
from medfuse.estimators.base import PREPROCESS_FILE, TEXT_ENCODERS, DecisionMixin

log = logging.getLogger(__name__)

HEADS = ("lr", "rf", "adaboost", "xgboost", "svm")
RESAMPLERS = ("none", "smote", "adasyn", "oversample")
EXTRACTORS = ("frozen", "trained")
TEXT_FEATURES = ("tfidf", "word2vec", "minilm")
Features: TypeAlias = "np.ndarray | sparse.csr_matrix"  # dense, or sparse with raw TF-IDF

# ----------------------------------------------------------------------------- heads


def make_head(name: str, params: dict[str, Any] | None = None, seed: int = 0,
              class_weight: bool = True) -> Any:
    """A fresh classical classifier by short name, ``params`` passed to its constructor.

    >>> make_head("lr", {"C": 0.5}).C
    0.5
    >>> make_head("xgbost")
    Traceback (most recent call last):
    ...
    medfuse.errors.ConfigError: The 'head' parameter must be one of {'lr', 'rf', 'adaboost', \
'xgboost', 'svm'}. Got 'xgbost' instead. Did you mean 'xgboost'?
    """
    check_option("head", name, HEADS)
    params = dict(params or {})
    balanced = "balanced" if class_weight else None
    try:
        if name == "lr":
            from sklearn.linear_model import LogisticRegression

            kw = {"C": 1.0, "max_iter": 3000, "class_weight": balanced}
            return LogisticRegression(**{**kw, **params})
        if name == "rf":
            from sklearn.ensemble import RandomForestClassifier

            kw = {"n_estimators": 300, "class_weight": balanced, "random_state": seed,
                  "n_jobs": -1}
            return RandomForestClassifier(**{**kw, **params})
        if name == "adaboost":
            from sklearn.ensemble import AdaBoostClassifier
            from sklearn.tree import DecisionTreeClassifier

            depth = int(params.pop("max_depth", 2))
            stump = DecisionTreeClassifier(max_depth=depth, class_weight=balanced,
                                           random_state=seed)
            kw = {"n_estimators": 200, "learning_rate": 0.5, "random_state": seed}
            return AdaBoostClassifier(stump, **{**kw, **params})
        if name == "xgboost":
            from xgboost import XGBClassifier

            kw = {"n_estimators": 300, "max_depth": 4, "learning_rate": 0.1,
                  "subsample": 0.9, "colsample_bytree": 0.5, "random_state": seed,
                  "n_jobs": os.cpu_count() or 1, "tree_method": "hist"}
            return XGBClassifier(**{**kw, **params})
        from sklearn.calibration import CalibratedClassifierCV
        from sklearn.svm import SVC

        # Platt scaling on out-of-fold decision values (SVC(probability=True) is deprecated)
        kw = {"C": 1.0, "kernel": "rbf", "class_weight": balanced, "random_state": seed}
        return CalibratedClassifierCV(SVC(**{**kw, **params}), ensemble=False, cv=3)
    except TypeError as e:
        raise ConfigError(f"bad head_params for head {name!r}: {e}") from e


def make_resampler(name: str, seed: int = 0) -> Any:
    """An imbalanced-learn sampler (``None`` for ``"none"``)."""
    check_option("resample", name, RESAMPLERS)
    if name == "none":
        return None
    from imblearn.over_sampling import ADASYN, SMOTE, RandomOverSampler

    cls = {"smote": SMOTE, "adasyn": ADASYN, "oversample": RandomOverSampler}[name]
    return cls(random_state=seed)


def head_pipeline(head: str, params: dict[str, Any] | None, resample: str, seed: int,
                  class_weight: bool, dense: bool) -> Any:
    """``[resampler] -> [scaler] -> head``; an imblearn Pipeline (resampling at fit only)."""
    from imblearn.pipeline import Pipeline
    from sklearn.preprocessing import MaxAbsScaler, StandardScaler

    steps: list[tuple[str, Any]] = []
    sampler = make_resampler(resample, seed)
    if sampler is not None:
        steps.append(("resample", sampler))
    if head in ("lr", "svm"):  # distance / penalty based: scale; trees don't care
        steps.append(("scale", StandardScaler() if dense else MaxAbsScaler()))
    # resampled classes are balanced already: weighting them again would over-correct
    steps.append(("head", make_head(head, params, seed, class_weight and sampler is None)))
    return Pipeline(steps)


def sample_weights(y: np.ndarray) -> np.ndarray:
    """Balanced per-row weights ``n / (k * count[y])`` for heads without ``class_weight``."""
    counts = np.bincount(y)
    return (len(y) / (len(counts) * counts[y])).astype(np.float64)


# ----------------------------------------------------------------------------- cache


def module_digest(module: torch.nn.Module) -> str:
    """sha1 over a module's state dict (names, shapes, values): its weights' identity."""
    digest = hashlib.sha1(usedforsecurity=False)
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        t = tensor.detach().cpu().contiguous()
        digest.update(str(tuple(t.shape)).encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


class FeatureCache:
    """Per-image feature vectors on disk: ``root/<key>/<hh>/<content sha1>.npy``.

    ``key`` describes everything that changes the features (backbone, weight
    hash, transform, precision); it is written next to the vectors as
    ``key.json``. Writes go to a temporary file and are renamed into place, so
    a reader never sees half a vector. Nothing is unpickled (``allow_pickle=False``).
    """

    def __init__(self, root: str | Path, key: dict[str, Any]) -> None:
        blob = json.dumps(key, sort_keys=True)
        self.key = key
        self.dir = Path(root) / hashlib.sha1(blob.encode(), usedforsecurity=False).hexdigest()[:20]
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "key.json").write_text(blob)

    def _path(self, digest: str) -> Path:
        return self.dir / digest[:2] / f"{digest}.npy"

    # vectors already read or written by this process, per cache directory
    _loaded: ClassVar[dict[Path, dict[str, np.ndarray]]] = {}

    def _memory(self) -> dict[str, np.ndarray]:
        return FeatureCache._loaded.setdefault(self.dir, {})

    def get(self, digest: str) -> np.ndarray | None:
        memory = self._memory()
        if digest in memory:
            return memory[digest]
        path = self._path(digest)
        if not path.is_file():
            return None
        try:
            vector = np.load(path, allow_pickle=False)
        except (OSError, ValueError):  # a torn or foreign file: recompute it
            return None
        memory[digest] = vector
        return vector

    def put(self, digest: str, vector: np.ndarray) -> None:
        self._memory()[digest] = vector
        path = self._path(digest)
        path.parent.mkdir(exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        with open(tmp, "wb") as fh:
            np.save(fh, vector, allow_pickle=False)
        os.replace(tmp, path)


def default_cache_dir() -> Path:
    from medfuse.data.builtin import data_home

    return data_home() / "features"


# ----------------------------------------------------------------------------- images


def extract_image_features(
    encoder: torch.nn.Module,
    transform: ImageTransform,
    paths: Sequence[str],
    cache: FeatureCache | None = None,
    batch_size: int = 64,
    bf16: bool = False,
    progress: bool = True,
    memo: dict[str, np.ndarray] | None = None,
    decoded: DecodedImages | None = None,
    backend: str = "torch",
) -> np.ndarray:
    """Pooled features ``(n, d)`` of the images at ``paths`` (cached ones are not recomputed).

    ``memo`` is an in-memory cache keyed by content digest (used for extractors that
    must not be cached on disk, e.g. one trained on this fold); ``decoded`` caches the
    decoded, resized pixels and ``backend`` runs the network in PyTorch or onnxruntime
    (see :func:`medfuse.extraction.encode_images`).
    """
    from medfuse.estimators.extraction import encode_images

    digests = [file_digest(p) for p in paths]
    found: dict[str, np.ndarray] = {}
    todo: list[tuple[str, str]] = []  # (path, digest) of images not cached anywhere
    for path, d in zip(paths, digests, strict=True):
        if d in found:
            continue
        v = memo.get(d) if memo is not None else None
        if v is None and cache is not None:
            v = cache.get(d)
        if v is None:
            todo.append((path, d))
        else:
            found[d] = v
    todo = list({d: (p, d) for p, d in todo}.values())  # duplicates within the batch
    if todo:
        feats = encode_images(encoder, transform, [p for p, _ in todo], batch_size=batch_size,
                              bf16=bf16, decoded=decoded, progress=progress,
                              backend=backend)
        for (_, d), v in zip(todo, feats, strict=True):
            found[d] = v
            if memo is not None:
                memo[d] = v
            if cache is not None:
                cache.put(d, v)
    return np.stack([found[d] for d in digests]).astype(np.float32)


def bf16_supported() -> bool:
    """True when this CPU runs bf16 matmuls natively (AVX512-BF16 / AMX)."""
    from medfuse.perf import native_bf16

    return native_bf16()


# ----------------------------------------------------------------------------- tabular / text


def one_hot(codes: np.ndarray, cardinalities: Sequence[int]) -> np.ndarray:
    """One-hot blocks for integer code columns (code 0 = unknown / missing is a column too).

    >>> one_hot(np.array([[1, 0], [2, 1]]), [3, 2]).astype(int).tolist()
    [[0, 1, 0, 1, 0], [0, 0, 1, 0, 1]]
    """
    blocks = [np.eye(k, dtype=np.float32)[codes[:, j]] for j, k in enumerate(cardinalities)]
    return np.concatenate(blocks, axis=1) if blocks else np.zeros((len(codes), 0), np.float32)


def mean_word_vectors(ids: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """Mean of the word vectors of each row's token ids (0 = padding is skipped)."""
    mask = (ids > 0).astype(np.float32)
    summed = np.einsum("nt,ntd->nd", mask, vectors[ids])
    return (summed / np.maximum(mask.sum(1, keepdims=True), 1.0)).astype(np.float32)


def hstack(parts: Sequence[Features]) -> Features:
    """Concatenate feature blocks; sparse if any block is sparse."""
    if any(sparse.issparse(p) for p in parts):
        return sparse.hstack([sparse.csr_matrix(p) for p in parts], format="csr")
    return np.concatenate(parts, axis=1)


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


def require_two_classes(y: np.ndarray, n_classes: int, table: str = "train") -> None:
    present = np.unique(y)
    if len(present) < 2:
        raise DataError(
            f"{table}: only one class present in the training rows ({n_classes} known): a "
            "classifier needs examples of at least two classes; check the target column "
            "or use more rows."
        )


# ----------------------------------------------------------------------------- estimator

HYBRID_FILE, HEAD_SKOPS, HEAD_XGB = "estimator.json", "head.skops", "head.xgb.json"
TEXT_SKOPS, VECTORS_FILE, EXTRACTOR_DIR = "text.skops", "features.safetensors", "extractor"
IMAGE_FILE = "image.safetensors"
_SAFE_PREFIXES = ("sklearn.", "numpy.", "scipy.", "imblearn.")


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
            run_dir: str | Path | None = None, resume: bool = False) -> HybridClassifier:
        """Fit the feature extractors and the head on ``train`` only.

        ``valid`` is used for early stopping of a ``trained`` extractor (carved from
        ``train`` when None; a frozen extractor ignores it). ``run_dir`` receives a
        trained extractor's logs.
        """
        t0 = time.perf_counter()
        X, y = self.fit_features(train, valid, run_dir)
        self.feature_seconds_ = time.perf_counter() - t0
        return self.fit_head(X, y)

    def fit_features(self, train: pd.DataFrame, valid: pd.DataFrame | None = None,
                     run_dir: str | Path | None = None) -> tuple[Features, np.ndarray]:
        """Fit every feature extractor on ``train``; return its features and encoded labels."""
        from medfuse.data.validation import validate_table

        check_params(type(self).__name__, self.head, self.resample, self.extractor,
                     self.text_features, self.text_components)
        self._check_network_options()
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
            from medfuse.encoders.image import ImageEncoder

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
        y = self.pre_.encode_target(train[spec.target]).numpy()
        require_two_classes(y, len(self.classes_))
        return self._transform(train, fitting=True), y

    def _check_network_options(self) -> None:
        """The options of the in-fold network: well typed, and only with one to train."""
        name = type(self).__name__
        for flag in ("extractor_tabular", "finetune_text"):
            if not isinstance(getattr(self, flag), bool):
                raise ConfigError(f"The '{flag}' parameter of {name} must be True or False. "
                                  f"Got {getattr(self, flag)!r} instead.")
        if self.extractor_tabular and self.extractor != "trained":
            raise ConfigError(
                "extractor_tabular=True trains the in-fold network on the tabular columns, "
                f"and extractor={self.extractor!r} trains no network: set "
                "extractor='trained' (model.extractor: trained), or extractor_tabular=False."
            )
        check_option("text_encoder", self.text_encoder, TEXT_ENCODERS, name)
        custom = self.text_encoder != "wordcnn" or self.finetune_text
        if custom and self.extractor != "trained":
            raise ConfigError(
                f"text_encoder={self.text_encoder!r} / finetune_text={self.finetune_text} "
                "choose the text encoder of the network a hybrid model trains in-fold, and "
                f"extractor={self.extractor!r} trains none: set extractor='trained' "
                "(model.extractor: trained), or choose the frozen text views with "
                "text_features (e.g. 'minilm')."
            )
        if self.finetune_text and "minilm" not in self.text_encoder:
            raise ConfigError(
                f"finetune_text=True fine-tunes MiniLM, and text_encoder={self.text_encoder!r} "
                "has none: set text_encoder='minilm' or 'wordcnn+minilm' "
                "(model.text_encoder), or finetune_text=False."
            )

    def fit_head(self, X: Features, y: np.ndarray, head: str | None = None,
                 head_params: dict[str, Any] | None = None) -> HybridClassifier:
        """Fit (or refit, with another ``head``) the classical head on extracted features."""
        if head is not None:
            self.head, self.head_params = head, head_params
        check_params(type(self).__name__, self.head, self.resample, self.extractor,
                     self.text_features, self.text_components)
        pipe = head_pipeline(self.head, self.head_params, self.resample, self.seed,
                             self.class_weight, dense=not sparse.issparse(X))
        fit_kw: dict[str, Any] = {}
        if self.class_weight and self.resample == "none" and self.head == "xgboost":
            fit_kw["head__sample_weight"] = sample_weights(y)
        t0 = time.perf_counter()
        try:
            pipe.fit(X, y, **fit_kw)
        except ValueError as e:
            if self.resample != "none" and "neighbors" in str(e):
                raise DataError(
                    f"resample={self.resample!r} failed: {e}. The minority class has too few "
                    "training rows for its nearest neighbours; use resample='oversample' or "
                    "more data."
                ) from e
            raise
        self.fit_seconds_ = time.perf_counter() - t0
        # the resampler only acts during fit: keep (and save) the steps after it
        self.head_ = pipe[1:] if self.resample != "none" else pipe
        return self

    def _fit_trained_extractor(self, train: pd.DataFrame, valid: pd.DataFrame | None,
                               run_dir: str | Path | None) -> ImageTransform:
        """Train a network on the image / text inputs of the training rows only.

        Its encoders' outputs (the fusion layer's input, i.e. the network cut before
        its head) become features; tabular columns go to the head directly (and, with
        ``extractor_tabular``, also train the network, whose tabular embedding is kept).
        """
        from medfuse.estimators import FusionClassifier

        if not (self.spec.image or self.spec.text):
            raise ConfigError(
                "extractor='trained' trains a network on the image and / or text column, "
                "and this spec has neither; use extractor='frozen' (tabular features only)."
            )
        deep_spec = (self.spec if self.extractor_tabular
                     else self.spec.model_copy(update={"tabular": {}}))
        net = FusionClassifier(
            deep_spec, image_backbone=self.backbone_, pretrained=self.weights_,
            image_size=self.image_size, text_encoder=self.text_encoder,
            finetune_text=self.finetune_text, encoder_lr=self.encoder_lr, embed_dim=self.embed_dim,
            min_token_freq=self.min_token_freq, max_tokens=self.max_tokens,
            max_epochs=self.max_epochs, lr=self.lr, batch_size=min(self.batch_size, 32),
            seed=self.seed, progress=self.progress, precision=self.precision,
        )
        net.fit(train, valid, run_dir=Path(run_dir) / EXTRACTOR_DIR if run_dir else None)
        self.extractor_model_ = net
        return net.pre_.image

    def _deep_features(self, df: pd.DataFrame) -> np.ndarray:
        """Outputs of the trained network's encoders (image / text), concatenated."""
        from medfuse.data.dataset import MultimodalDataset

        net = self.extractor_model_
        ds = MultimodalDataset(df, net.pre_, with_target=False)
        out = []
        net.model_.eval()
        with torch.inference_mode():
            for batch in torch.utils.data.DataLoader(ds, batch_size=self.batch_size):
                out.append(torch.cat(list(net.model_.encode(batch).values()), dim=1).float())
        return torch.cat(out).numpy()

    def _fit_text(self, train: pd.DataFrame) -> None:
        texts = train[self.spec.text].astype(str).tolist()
        views = self.text_features.split("+")
        if "tfidf" in views:
            from sklearn.decomposition import TruncatedSVD
            from sklearn.feature_extraction.text import TfidfVectorizer
            from sklearn.pipeline import Pipeline

            tfidf = TfidfVectorizer(ngram_range=(1, 2), min_df=min(self.min_token_freq, 2),
                                    sublinear_tf=True, max_features=50000)
            steps: list[tuple[str, Any]] = [("tfidf", tfidf)]
            if self.text_components:
                n_terms = len(tfidf.fit(texts).vocabulary_)
                k = max(1, min(self.text_components, n_terms - 1, len(texts) - 1))
                steps.append(("svd", TruncatedSVD(k, random_state=self.seed)))
            self.text_model_ = Pipeline(steps).fit(texts)
        if "word2vec" in views:
            from medfuse.encoders.text import train_word2vec

            assert self.pre_.vocab_ is not None
            self.word_vectors_ = train_word2vec(texts, self.pre_.vocab_, dim=self.embed_dim,
                                                seed=self.seed)

    # ------------------------------------------------------------------ features
    def transform(self, df: pd.DataFrame) -> Features:
        """The feature matrix of (validated) rows ``df``: image | tabular | text blocks."""
        from medfuse.data.validation import validate_table

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
        from medfuse.data.decoded import training_cache

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
                parts.append(self._minilm_features(texts.astype(str).tolist()))
        return hstack(parts)

    def _minilm_features(self, texts: list[str]) -> np.ndarray:
        """Frozen MiniLM sentence embeddings, cached on disk by text content."""
        from medfuse.encoders.text import MiniLMEncoder, MiniLMTokenizer

        cache = None
        if self.cache:
            key = {"text_encoder": "all-MiniLM-L6-v2", "max_tokens": self.max_tokens,
                   "torch": torch.__version__.split("+")[0]}
            cache = FeatureCache(self.cache_dir or default_cache_dir(), key)
        digests = [hashlib.sha1(t.encode(), usedforsecurity=False).hexdigest() for t in texts]
        found = {d: v for d in set(digests) if cache and (v := cache.get(d)) is not None}
        todo = list({d: t for d, t in zip(digests, texts, strict=True) if d not in found}.items())
        if todo:
            if not hasattr(self, "_minilm"):
                self._minilm = (MiniLMTokenizer(self.max_tokens), MiniLMEncoder().eval())
            tok, enc = self._minilm
            with torch.inference_mode():
                for i in range(0, len(todo), 128):
                    chunk = todo[i:i + 128]
                    ids = torch.from_numpy(tok.encode_batch([t for _, t in chunk]))
                    for (d, _), v in zip(chunk, enc(ids).float().numpy(), strict=True):
                        found[d] = v
                        if cache is not None:
                            cache.put(d, v)
        return np.stack([found[d] for d in digests]).astype(np.float32)

    # ------------------------------------------------------------------ predict
    def _raw_proba(self, df: pd.DataFrame) -> np.ndarray:
        return self.predict_proba_features(self.transform(df))

    def predict_proba_features(self, X: Features) -> np.ndarray:
        """Probabilities from an already extracted feature matrix."""
        self._check_fitted()
        proba = np.zeros((X.shape[0], len(self.classes_)))
        raw = self.head_.predict_proba(X)
        proba[:, np.asarray(self.head_.classes_, dtype=int)] = raw
        return proba

    # ------------------------------------------------------------------ save / load
    def save(self, path: str | Path) -> Path:
        """Write the head (skops / XGBoost JSON), feature state (JSON + safetensors), manifest."""
        import skops.io as sio
        from safetensors.numpy import save_file

        from medfuse.io import atomic_path, atomic_write_json, write_manifest

        self._check_fitted()
        run = Path(path)
        run.mkdir(parents=True, exist_ok=True)
        files = [PREPROCESS_FILE, HYBRID_FILE]
        self.pre_.save(run / PREPROCESS_FILE)
        if self.head == "xgboost":
            with atomic_path(run / HEAD_XGB) as tmp:
                self.head_[-1].save_model(str(tmp))
            files.append(HEAD_XGB)
            if len(self.head_) > 1:
                with atomic_path(run / HEAD_SKOPS) as tmp:
                    sio.dump(self.head_[:-1], tmp)
                files.append(HEAD_SKOPS)
        else:
            with atomic_path(run / HEAD_SKOPS) as tmp:
                sio.dump(self.head_, tmp)
            files.append(HEAD_SKOPS)
        if self.text_model_ is not None:
            with atomic_path(run / TEXT_SKOPS) as tmp:
                sio.dump(self.text_model_, tmp)
            files.append(TEXT_SKOPS)
        if self.word_vectors_ is not None:
            with atomic_path(run / VECTORS_FILE) as tmp:
                save_file({"word_vectors": self.word_vectors_}, str(tmp))
            files.append(VECTORS_FILE)
        if self.extractor_model_ is None and self.image_encoder_ is not None:
            # the frozen extractor's weights travel with the model (random-init or builtin)
            from safetensors.torch import save_model

            with atomic_path(run / IMAGE_FILE) as tmp:
                save_model(self.image_encoder_, str(tmp))
            files.append(IMAGE_FILE)
        if self.extractor_model_ is not None:
            sub = self.extractor_model_.save(run / EXTRACTOR_DIR)
            files += [f"{EXTRACTOR_DIR}/{p.name}" for p in sub.iterdir() if p.is_file()]
        meta = {
            "estimator": type(self).__name__,
            "params": self.get_params(),
            "spec": self.spec.model_dump(mode="json"),
            "classes": self.classes_,
            "head_classes": [int(c) for c in self.head_.classes_],
            "fit_seconds": self.fit_seconds_,
            "decision": self.decision_state(),
        }
        atomic_write_json(run / HYBRID_FILE, meta)
        write_manifest(run, files)
        return run

    @classmethod
    def load(cls, path: str | Path) -> HybridClassifier:
        """Load a saved model; files are checked against ``manifest.json`` first.

        sklearn objects are read with skops and only sklearn / numpy / scipy types are
        trusted; nothing is unpickled.
        """
        from safetensors.numpy import load_file

        from medfuse.io import verify_manifest

        run = Path(path)
        verify_manifest(run, required=(PREPROCESS_FILE, HYBRID_FILE))
        meta = json.loads((run / HYBRID_FILE).read_text())
        clf = cls(DataSpec.model_validate(meta["spec"]), **meta["params"])
        clf.pre_ = Preprocessor.load(run / PREPROCESS_FILE)
        clf.classes_ = list(meta["classes"])
        clf.fit_seconds_ = float(meta["fit_seconds"])
        clf.set_decision_state(meta.get("decision", {}))
        clf.image_encoder_, clf.extractor_model_, clf._memo = None, None, {}
        if clf.extractor == "trained":
            from medfuse.estimators import FusionClassifier

            clf.extractor_model_ = FusionClassifier.load(run / EXTRACTOR_DIR)
        elif clf.spec.image:
            from safetensors.torch import load_model

            from medfuse.encoders.image import ImageEncoder

            enc = ImageEncoder(clf.backbone_, "none", clf.image_size, freeze=True,
                               pool=clf.image_pool, views=clf.image_views)
            load_model(enc, str(run / IMAGE_FILE), strict=True)
            clf.image_encoder_ = enc
        clf.text_model_ = _load_skops(run / TEXT_SKOPS) if (run / TEXT_SKOPS).is_file() else None
        clf.word_vectors_ = (load_file(str(run / VECTORS_FILE))["word_vectors"]
                             if (run / VECTORS_FILE).is_file() else None)
        steps = _load_skops(run / HEAD_SKOPS) if (run / HEAD_SKOPS).is_file() else None
        if clf.head == "xgboost":
            from sklearn.pipeline import Pipeline
            from xgboost import XGBClassifier

            booster = XGBClassifier()
            booster.load_model(str(run / HEAD_XGB))
            pre_steps = list(steps.steps) if steps is not None else []
            clf.head_ = Pipeline([*pre_steps, ("head", booster)])
        else:
            clf.head_ = steps
        return clf


def _trusted_type(name: str) -> bool:
    """A class (never a function: it could be called on the inputs) of sklearn / imblearn /
    numpy / scipy.

    >>> _trusted_type("sklearn.tree._tree.Tree"), _trusted_type("builtins.eval")
    (True, False)
    >>> _trusted_type("numpy.load"), _trusted_type("sklearn.no.such.Thing")
    (False, False)
    """
    import importlib

    if not name.startswith(_SAFE_PREFIXES):
        return False
    module, _, attr = name.rpartition(".")
    try:
        obj = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError, ValueError):
        return False
    return isinstance(obj, type)


def _load_skops(path: Path) -> Any:
    """Load a skops file trusting only scikit-learn / imblearn / numpy / scipy classes."""
    import skops.io as sio

    from medfuse.io import RunDirError

    untrusted = sio.get_untrusted_types(file=path)
    foreign = [t for t in untrusted if not _trusted_type(t)]
    if foreign:
        raise RunDirError(
            f"{path}: refusing to load types outside scikit-learn / numpy / scipy classes: "
            f"{', '.join(sorted(foreign))}. Re-create the model with medfuse."
        )
    return sio.load(path, trusted=untrusted)
