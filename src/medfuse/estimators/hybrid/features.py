"""Feature blocks of a hybrid model: frozen image features (cached on disk by content),
one-hot tabular codes, mean word vectors, and how the blocks are stacked.

Frozen image features are cached (:class:`FeatureCache`), keyed by the backbone, a hash of
its weights, the image transform, the precision and each image's content hash, so trying
five heads extracts features once.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, TypeAlias

import numpy as np
import torch
from scipy import sparse

from medfuse.data.builtin import data_home
from medfuse.data.decoded import DecodedImages
from medfuse.data.digests import file_digests
from medfuse.data.preprocess import ImageTransform
from medfuse.estimators.extraction import encode_images
from medfuse.perf import native_bf16

Features: TypeAlias = "np.ndarray | sparse.csr_matrix"  # dense, or sparse with raw TF-IDF


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
    """``$MEDFUSE_HOME/features``."""
    return data_home() / "features"




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
    (see :func:`medfuse.estimators.extraction.encode_images`).
    """
    digests = file_digests(list(paths))  # one batched lookup, files read only when changed
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
    return native_bf16()




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
