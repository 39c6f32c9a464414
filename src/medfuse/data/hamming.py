"""Near-duplicate search over 64-bit hashes: every pair within a Hamming radius, exactly.

Comparing every hash with every other costs ``n^2 t`` for ``n`` images hashed under ``t``
views (the identity and the seven flips / rotations of :data:`medfuse.data.splits.DIHEDRAL`).
Multi-index hashing (Norouzi, Punjani and Fleet, "Fast Search in Hamming Space with
Multi-Index Hashing", CVPR 2012) finds the same pairs in about ``n t`` work for the short
radii perceptual hashes use: cut the 64 bits into ``m`` blocks; two hashes at most ``d``
bits apart are, by the pigeonhole principle, at most ``d // m`` bits apart in at least one
block. So each view of each hash is indexed by each of its blocks, each image's own hash
(view 0) probes every block value within ``d // m`` bits of its own, and only the hashes
found there are compared in full. Nothing is approximate: :func:`near_pairs` returns
exactly the pairs of :func:`brute_force_pairs` (tested on random and on planted copies).

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> h = rng.integers(0, 2**63, size=(5000, 8), dtype=np.uint64)
>>> h[7, 3] = h[4000, 0] ^ np.uint64(0b101)   # view 3 of row 7: 2 bits from row 4000
>>> near_pairs(h, 6).tolist()
[[7, 4000]]
>>> np.array_equal(near_pairs(h, 6, method="multi-index"), brute_force_pairs(h, 6))
True
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator

import numpy as np

from medfuse.errors import ConfigError

BITS = 64
#: below this many hash comparisons (``n * n * t``) the exhaustive search is the faster one
BRUTE_FORCE_MAX = 4e8
#: candidate comparisons held in memory at once (16 bytes each, a few arrays of them)
CHUNK_CANDIDATES = 1 << 23
#: the largest block whose values get a direct-address table (``2^b + 1`` int64 offsets)
TABLE_BITS = 24


def _as_views(hashes: np.ndarray) -> np.ndarray:
    h = np.asarray(hashes)
    if h.dtype != np.uint64:
        h = h.astype(np.uint64)
    return h[:, None] if h.ndim == 1 else h


def _unique_pairs(parts: list[np.ndarray]) -> np.ndarray:
    pairs = np.concatenate(parts) if parts else np.zeros((0, 2), dtype=np.int64)
    if not len(pairs):
        return np.zeros((0, 2), dtype=np.int64)
    return np.unique(pairs.astype(np.int64), axis=0)


def _ordered(ii: np.ndarray, jj: np.ndarray) -> np.ndarray:
    keep = ii != jj
    ii, jj = ii[keep], jj[keep]
    return np.stack([np.minimum(ii, jj), np.maximum(ii, jj)], axis=1)


def brute_force_pairs(hashes: np.ndarray, max_distance: int, block: int = 1024) -> np.ndarray:
    """``(k, 2)`` pairs ``i < j`` within ``max_distance`` bits, by comparing all of them.

    A pair is linked when any view of ``i`` is that close to view 0 of ``j`` or the other way
    round (``hashes`` of shape ``(n,)`` or ``(n, t)``). Cost ``n^2 t``: the reference that
    :func:`near_pairs` must agree with, and the faster one for a few thousand images.
    """
    h = _as_views(hashes)
    n = len(h)
    base = h[:, 0]
    out = []
    for start in range(0, n, block):
        chunk = h[start : start + block]
        dist = np.bitwise_count(chunk[:, :1] ^ base[None, :])
        for t in range(1, h.shape[1]):
            np.minimum(dist, np.bitwise_count(chunk[:, t : t + 1] ^ base[None, :]), out=dist)
        ii, jj = np.nonzero(dist <= max_distance)
        out.append(_ordered(ii + start, jj))
    return _unique_pairs(out)


def _blocks(m: int) -> list[tuple[int, int]]:
    """``m`` contiguous bit ranges ``(shift, width)`` covering the 64 bits, widths within 1."""
    widths = [BITS // m + (1 if k < BITS % m else 0) for k in range(m)]
    shifts = [sum(widths[:k]) for k in range(m)]
    return list(zip(shifts, widths, strict=True))


def _flip_masks(width: int, radius: int) -> np.ndarray:
    """Every ``width``-bit mask with at most ``radius`` bits set (0 first)."""
    masks = [0]
    for r in range(1, radius + 1):
        masks += [sum(1 << b for b in bits) for bits in itertools.combinations(range(width), r)]
    return np.asarray(masks, dtype=np.uint64)


def _probes(width: int, radius: int) -> int:
    return sum(math.comb(width, r) for r in range(radius + 1))


def plan(n: int, views: int, max_distance: int) -> int:
    """The number of blocks ``m`` that minimises the expected work (``0``: exhaustive search).

    Per probing hash, ``m`` blocks cost ``P`` probes each (block values within ``d // m``
    bits) plus the hashes found there, ``n t / 2^b`` per probe for evenly spread hashes.
    """
    exhaustive = float(n) * n * views
    if exhaustive <= BRUTE_FORCE_MAX or max_distance >= BITS // 2:
        return 0
    best, best_cost = 0, exhaustive
    for m in range(2, min(max_distance + 1, 16) + 1):
        radius = max_distance // m
        width = BITS // m
        probes = _probes(width + 1, radius)
        cost = n * m * probes * (3.0 + n * views / 2.0**width)
        if cost < best_cost:
            best, best_cost = m, cost
    return best


def _index(keys: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """Sorted block values, their order, and (for narrow blocks) a value -> offset table."""
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    table = None
    if width <= TABLE_BITS:
        table = np.searchsorted(sorted_keys, np.arange(2**width + 1, dtype=np.uint64))
    return sorted_keys, table, order


def _ranges(sorted_keys: np.ndarray, table: np.ndarray | None,
            probe: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if table is not None:
        idx = probe.astype(np.int64)
        return table[idx], table[idx + 1]
    return (np.searchsorted(sorted_keys, probe, side="left"),
            np.searchsorted(sorted_keys, probe, side="right"))


def _query_chunks(n: int, per_query: float) -> Iterator[slice]:
    step = max(1, int(CHUNK_CANDIDATES / max(per_query, 1.0)))
    for start in range(0, n, step):
        yield slice(start, min(n, start + step))


def multi_index_pairs(hashes: np.ndarray, max_distance: int, m: int) -> np.ndarray:
    """:func:`brute_force_pairs`' pairs by multi-index hashing over ``m`` blocks."""
    h = _as_views(hashes)
    n, views = h.shape
    flat = h.reshape(-1)                       # entry e: row e // views, view e % views
    base = h[:, 0]
    radius = max_distance // m
    out: list[np.ndarray] = []
    for shift, width in _blocks(m):
        mask = np.uint64((1 << width) - 1)
        keys = (flat >> np.uint64(shift)) & mask
        sorted_keys, table, order = _index(keys, width)
        flips = _flip_masks(width, radius)
        own = (base >> np.uint64(shift)) & mask
        per_query = len(flips) * max(1.0, len(flat) / 2.0**width)
        for rows in _query_chunks(n, per_query):
            probe = (own[rows, None] ^ flips[None, :]).reshape(-1)
            lo, hi = _ranges(sorted_keys, table, probe)
            who = np.arange(rows.start, rows.stop).repeat(len(flips))
            for piece in _pieces(hi - lo):  # hashes crowded in a few buckets: still bounded
                out.append(_verify(flat, base, order, views, max_distance,
                                   who[piece], lo[piece], hi[piece]))
    return _unique_pairs(out)


def _pieces(counts: np.ndarray) -> Iterator[slice]:
    """Consecutive probe ranges holding about :data:`CHUNK_CANDIDATES` candidates each."""
    cum = np.cumsum(counts)
    total = int(cum[-1]) if len(cum) else 0
    start = 0
    while start < len(counts) and total:
        done = int(cum[start - 1]) if start else 0
        stop = int(np.searchsorted(cum, done + CHUNK_CANDIDATES, side="right"))
        stop = max(stop, start + 1)
        yield slice(start, stop)
        start = stop


def _verify(flat: np.ndarray, base: np.ndarray, order: np.ndarray, views: int,
            max_distance: int, who: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """The pairs (probing row, indexed row) among the probed buckets that are truly close."""
    counts = hi - lo
    total = int(counts.sum())
    if not total:
        return np.zeros((0, 2), dtype=np.int64)
    query = np.repeat(who, counts)
    starts = np.repeat(lo - np.cumsum(counts) + counts, counts)
    entry = order[starts + np.arange(total)]
    close = np.bitwise_count(flat[entry] ^ base[query]) <= max_distance
    return _ordered(query[close], entry[close] // views)


def near_pairs(hashes: np.ndarray, max_distance: int, method: str = "auto") -> np.ndarray:
    """``(k, 2)`` index pairs ``i < j`` (sorted, unique) within ``max_distance`` bits.

    ``hashes`` of shape ``(n,)`` or ``(n, t)`` (``t`` views, view 0 the image as it is):
    ``i`` and ``j`` are linked when any view of one is that close to view 0 of the other.
    ``method``: ``"auto"`` (exhaustive for small ``n``, else multi-index hashing over the
    number of blocks :func:`plan` picks), ``"brute-force"`` or ``"multi-index"``.
    """
    if method not in ("auto", "brute-force", "multi-index"):
        raise ConfigError(f"near-duplicate search method '{method}' is not one of "
                          "'auto', 'brute-force', 'multi-index'")
    if not 0 <= max_distance <= BITS:
        raise ConfigError(f"split.hash_distance={max_distance} must be within 0..{BITS}")
    h = _as_views(hashes)
    if method == "brute-force":
        return brute_force_pairs(h, max_distance)
    m = plan(len(h), h.shape[1], max_distance)
    if method == "multi-index":
        m = m or max(2, min(max_distance + 1, 4))
    if m < 2:
        return brute_force_pairs(h, max_distance)
    return multi_index_pairs(h, max_distance, m)
