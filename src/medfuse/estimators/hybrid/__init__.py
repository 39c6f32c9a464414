"""Deep hybrid learning: deep features + a classical head (:class:`HybridClassifier`).

* :mod:`~medfuse.estimators.hybrid.estimator` -- the estimator (fit / predict / save / load);
* :mod:`~medfuse.estimators.hybrid.features` -- image (frozen, cached), tabular and text
  feature blocks;
* :mod:`~medfuse.estimators.hybrid.text` -- TF-IDF, word2vec and MiniLM text views;
* :mod:`~medfuse.estimators.hybrid.heads` -- the classical heads and resamplers;
* :mod:`~medfuse.estimators.hybrid.storage` -- saving without pickle.
"""

from medfuse.data.digests import file_digest, module_digest
from medfuse.estimators.hybrid.estimator import HybridClassifier
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
    HEADS,
    RESAMPLERS,
    head_pipeline,
    make_head,
    make_resampler,
    require_two_classes,
    sample_weights,
)
from medfuse.estimators.hybrid.params import EXTRACTORS, TEXT_FEATURES, check_params
from medfuse.estimators.hybrid.storage import (
    EXTRACTOR_DIR,
    HEAD_SKOPS,
    HEAD_XGB,
    HYBRID_FILE,
    IMAGE_FILE,
    TEXT_SKOPS,
    VECTORS_FILE,
)

__all__ = [
    "EXTRACTORS", "EXTRACTOR_DIR", "HEADS", "HEAD_SKOPS", "HEAD_XGB", "HYBRID_FILE", "IMAGE_FILE",
    "RESAMPLERS", "TEXT_FEATURES", "TEXT_SKOPS", "VECTORS_FILE", "FeatureCache", "Features",
    "HybridClassifier", "bf16_supported", "check_params", "default_cache_dir",
    "extract_image_features", "file_digest", "head_pipeline", "hstack", "make_head",
    "make_resampler", "mean_word_vectors", "module_digest", "one_hot", "require_two_classes",
    "sample_weights",
]
