"""Leakage-safe splits: stratified by label, grouped by patient and by near-duplicate image.

Near-duplicates are found with 64-bit perceptual hashes (DCT pHash via
``imagehash``): images whose hashes differ in at most ``max_distance`` bits are
linked, and linked images (transitively) form one group. With
``split.dedupe_flips`` (the default) an image is also compared under the eight
flips / 90-degree rotations of the square, because public datasets often ship
augmented copies (Br35H holds hundreds of mirrored slices). Patient groups and
duplicate groups are merged with union-find, so a patient's images and any
near copy of them always land on the same side of every split.

>>> import pandas as pd
>>> from medfuse.config import DataSpec
>>> df = pd.DataFrame({"x": range(40), "y": ["0", "1"] * 20, "pid": [i // 2 for i in range(40)]})
>>> spec = DataSpec(tabular={"x": "continuous"}, target="y", group="pid")
>>> train, valid, test = holdout_split(df, spec, seed=0).indices
>>> len(train) + len(valid) + len(test), set(df.pid[train]) & set(df.pid[test])
(40, set())
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import imagehash
import numpy as np
import pandas as pd
from PIL import Image
from sklearn.model_selection import StratifiedGroupKFold

from medfuse.config import DataSpec
from medfuse.data.images import read_image
from medfuse.data.labels import stratification_target
from medfuse.errors import ConfigError, DataError

log = logging.getLogger(__name__)


@dataclass
class SplitReport:
    """What the grouping found; goes to the log and ``metrics.json``."""

    n_rows: int
    n_groups: int
    duplicate_groups: int = 0
    duplicate_images: int = 0
    sizes: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "n_rows": self.n_rows,
            "n_groups": self.n_groups,
            "duplicate_groups": self.duplicate_groups,
            "duplicate_images": self.duplicate_images,
            "sizes": dict(self.sizes),
        }


#: The eight symmetries of the square (identity first): flips, 90-degree rotations, transposes.
DIHEDRAL: tuple[Image.Transpose | None, ...] = (
    None,
    Image.Transpose.FLIP_LEFT_RIGHT,
    Image.Transpose.FLIP_TOP_BOTTOM,
    Image.Transpose.ROTATE_90,
    Image.Transpose.ROTATE_180,
    Image.Transpose.ROTATE_270,
    Image.Transpose.TRANSPOSE,
    Image.Transpose.TRANSVERSE,
)


def _phash_bits(img: Image.Image) -> int:
    bits = imagehash.phash(img).hash.flatten()
    return int("".join("1" if b else "0" for b in bits), 2)


def image_hashes(paths: list[str], workers: int = 4, flips: bool = False) -> np.ndarray:
    """64-bit perceptual hashes (``uint64``) of the images at ``paths``.

    Shape ``(n,)``; with ``flips``, ``(n, 8)``: column ``t`` hashes the image under
    :data:`DIHEDRAL` ``[t]`` (column 0 is the image as it is).

    Remembered on disk by file content (``$MEDFUSE_HOME/hashes.sqlite``, one row per file,
    see :class:`~medfuse.data.digests.HashStore`), and the content digest by path, size and
    mtime: a second run over the same unchanged images reads none of them.
    """
    from medfuse.data.digests import file_digests, hash_store

    ops = DIHEDRAL if flips else DIHEDRAL[:1]

    def one(path: str) -> list[int]:
        img = read_image(path, draft=128)
        return [_phash_bits(img if op is None else img.transpose(op)) for op in ops]

    store = hash_store()
    digests = file_digests(paths, workers=workers, store=store)
    known = store.phashes(digests, len(ops))
    todo: dict[str, str] = {}
    for path, d in zip(paths, digests, strict=True):
        if d not in known:
            todo.setdefault(d, path)
    if todo:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            fresh = dict(zip(todo, pool.map(one, todo.values()), strict=True))
        known.update(fresh)
        store.put_phashes(fresh.items(), len(ops))
    out = np.asarray([known[d] for d in digests], dtype=np.uint64).reshape(len(paths), len(ops))
    return out if flips else out[:, 0]


def near_duplicate_pairs(hashes: np.ndarray, max_distance: int, block: int = 1024,
                         method: str = "auto") -> np.ndarray:
    """``(k, 2)`` index pairs ``i < j`` whose hashes differ in ``<= max_distance`` bits.

    ``hashes`` of shape ``(n, t)`` (from ``image_hashes(..., flips=True)``) link ``i``
    and ``j`` when any column of ``i`` is that close to column 0 of ``j`` (or the other
    way round): ``j`` is a near copy of a flipped or rotated ``i``. Exact, in about linear
    time for large ``n`` (multi-index hashing, :mod:`medfuse.data.hamming`); ``block`` is
    the row block of the exhaustive search used for small ``n``.
    """
    from medfuse.data.hamming import brute_force_pairs, near_pairs

    if method == "brute-force":
        return brute_force_pairs(hashes, max_distance, block=block)
    return near_pairs(hashes, max_distance, method=method)


def _components(n: int, pairs: list[np.ndarray]) -> np.ndarray:
    """Connected-component label of each of ``n`` nodes linked by ``pairs`` (union-find)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    edges = np.concatenate(pairs) if pairs else np.zeros((0, 2), dtype=np.int64)
    graph = coo_matrix((np.ones(len(edges), dtype=np.int8), (edges[:, 0], edges[:, 1])),
                       shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    return np.asarray(labels)


def _first_of_each(values: pd.Series) -> np.ndarray:
    """``(k, 2)`` pairs linking each row to the first row with the same value."""
    codes, _ = pd.factorize(values)
    first = pd.Series(np.arange(len(codes))).groupby(codes).transform("min").to_numpy()
    keep = first != np.arange(len(codes))
    return np.stack([first[keep], np.arange(len(codes))[keep]], axis=1).astype(np.int64)


def group_labels(
    df: pd.DataFrame, spec: DataSpec, hashes: np.ndarray | None = None
) -> tuple[np.ndarray, SplitReport]:
    """One integer group per row merging patient groups and near-duplicate images.

    Rows naming the same image file are always one group, even with
    ``split.dedupe_images`` off.

    ``hashes`` may be passed to reuse image hashes computed earlier.
    """
    n = len(df)
    links: list[np.ndarray] = []
    if spec.group:
        links.append(_first_of_each(df[spec.group].astype(str).reset_index(drop=True)))
    dup_groups = dup_images = 0
    if spec.image:
        dup_links: list[np.ndarray] = []
        paths = df[spec.image].fillna("").astype(str).tolist()
        with_image = np.asarray([i for i, path in enumerate(paths) if path],  # "": no image
                                dtype=np.int64)
        if len(with_image):  # the same file twice: always one group
            same = _first_of_each(pd.Series([os.path.normpath(paths[i]) for i in with_image]))
            dup_links.append(with_image[same])
        if spec.split.dedupe_images and len(with_image):
            if hashes is None:
                hashes = image_hashes([paths[i] for i in with_image],
                                      flips=spec.split.dedupe_flips)
            elif len(hashes) == n:
                hashes = np.asarray(hashes)[with_image]
            near = near_duplicate_pairs(hashes, spec.split.hash_distance)
            dup_links.append(with_image[near])
        links += dup_links
        _, counts = np.unique(_components(n, dup_links), return_counts=True)
        dup_groups = int((counts > 1).sum())
        dup_images = int(counts[counts > 1].sum())
    _, labels = np.unique(_components(n, links), return_inverse=True)
    report = SplitReport(
        n_rows=n,
        n_groups=int(labels.max() + 1) if n else 0,
        duplicate_groups=dup_groups,
        duplicate_images=dup_images,
    )
    if dup_groups:
        log.info(
            "near-duplicate images: %d groups holding %d images (hash distance <= %d%s)",
            dup_groups,
            dup_images,
            spec.split.hash_distance,
            ", flips and rotations included" if spec.split.dedupe_flips else "",
        )
    return labels, report


def stratified_group_folds(
    y: np.ndarray, groups: np.ndarray, k: int, seed: int
) -> list[tuple[np.ndarray, ...]]:
    """``k`` grouped folds stratified on ``y``: labels (1-D) or an ``(n, L)`` 0/1 matrix."""
    n_groups = len(np.unique(groups))
    if k < 2:
        raise ConfigError(f"The 'folds' parameter must be >= 2. Got {k} instead.")
    if n_groups < k:
        raise DataError(f"cannot make {k} folds from {n_groups} group(s); use fewer folds")
    if y.ndim == 2:
        return _multilabel_folds(y, groups, k, seed)
    cv = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    return [(tr, te) for tr, te in cv.split(np.zeros(len(y)), y, groups)]


def _multilabel_folds(
    y: np.ndarray, groups: np.ndarray, k: int, seed: int
) -> list[tuple[np.ndarray, ...]]:
    """Grouped K-fold for an ``(n, L)`` 0/1 matrix: iterative stratification
    (Sechidis et al. 2011, ``iterstrat.MultilabelStratifiedKFold``) over the groups.

    A group (patient / near-duplicate family) holds a label when any of its rows does; the
    groups are stratified as units, so every fold keeps each label's share of positive
    groups about equal and no group is ever split.
    """
    from iterstrat.ml_stratifiers import MultilabelStratifiedKFold

    codes, inverse = np.unique(groups, return_inverse=True)
    per_group = np.zeros((len(codes), y.shape[1]), dtype=int)
    np.maximum.at(per_group, inverse, y.astype(int))
    cv = MultilabelStratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    folds: list[tuple[np.ndarray, ...]] = []
    for _, held_groups in cv.split(np.zeros(len(codes)), per_group):
        held = np.isin(inverse, held_groups)
        folds.append((np.flatnonzero(~held), np.flatnonzero(held)))
    return folds


def kfold_splits(
    df: pd.DataFrame, spec: DataSpec, k: int, seed: int = 0, groups: np.ndarray | None = None
) -> tuple[list[tuple[np.ndarray, np.ndarray]], SplitReport]:
    """Stratified, grouped K-fold: ``[(train_idx, test_idx), ...]``.

    A multi-label spec is stratified on every label at once (:func:`_multilabel_folds`).
    """
    if groups is None:
        groups, report = group_labels(df, spec)
    else:
        report = SplitReport(n_rows=len(df), n_groups=len(np.unique(groups)))
    y = stratification_target(df, spec)
    folds = [(tr, te) for tr, te in stratified_group_folds(y, groups, k, seed)]
    report.sizes = {f"fold{i}": len(te) for i, (_, te) in enumerate(folds)}
    return folds, report


@dataclass
class HoldoutSplit:
    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray
    report: SplitReport

    @property
    def indices(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.train, self.valid, self.test


def carve(
    y: np.ndarray, groups: np.ndarray, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Split positions into ``(rest, held)`` with ``held`` ~ ``fraction``, stratified + grouped.

    ``y`` is 1-D (labels) or an ``(n, L)`` 0/1 matrix (multi-label).
    """
    n_groups = len(np.unique(groups))
    if n_groups < 2:
        raise DataError(
            "cannot hold out rows: all rows are in one group (patient / near-duplicate images); "
            "check data.group or lower data.split.hash_distance"
        )
    k = min(max(2, round(1.0 / fraction)), n_groups)
    rest, held = stratified_group_folds(y, groups, k, seed)[0]
    return rest, held


def holdout_split(
    df: pd.DataFrame, spec: DataSpec, seed: int = 0, groups: np.ndarray | None = None
) -> HoldoutSplit:
    """Train / validation / test positions with sizes from ``spec.split``."""
    if groups is None:
        groups, report = group_labels(df, spec)
    else:
        report = SplitReport(n_rows=len(df), n_groups=len(np.unique(groups)))
    y = stratification_target(df, spec)
    s = spec.split
    if s.test_size + s.valid_size >= 0.9:
        raise ConfigError(
            f"data.split.test_size + data.split.valid_size must be < 0.9. "
            f"Got {s.test_size} + {s.valid_size}."
        )
    rest, test = carve(y, groups, s.test_size, seed)
    tr, va = carve(y[rest], groups[rest], s.valid_size / (1.0 - s.test_size), seed + 1)
    train, valid = rest[tr], rest[va]
    report.sizes = {"train": len(train), "valid": len(valid), "test": len(test)}
    return HoldoutSplit(np.sort(train), np.sort(valid), np.sort(test), report)
