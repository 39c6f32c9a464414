"""Old import path of the hybrid estimator (now :mod:`medfuse.estimators.hybrid`)."""

from medfuse.data.digests import file_digest
from medfuse.estimators.hybrid import (
    EXTRACTORS,
    HEADS,
    RESAMPLERS,
    TEXT_FEATURES,
    FeatureCache,
    HybridClassifier,
    bf16_supported,
    extract_image_features,
    head_pipeline,
    make_head,
    make_resampler,
    module_digest,
)

__all__ = [
    "EXTRACTORS", "HEADS", "RESAMPLERS", "TEXT_FEATURES", "FeatureCache", "HybridClassifier",
    "bf16_supported", "extract_image_features", "file_digest", "head_pipeline", "make_head",
    "make_resampler", "module_digest",
]
