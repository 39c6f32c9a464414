"""Old import path of frozen feature extraction (now :mod:`medfuse.estimators.extraction`)."""

from medfuse.estimators.extraction import (
    BACKENDS,
    OnnxEncoder,
    encode_images,
    network,
    static_same_padding,
)

__all__ = ["BACKENDS", "OnnxEncoder", "encode_images", "network", "static_same_padding"]
