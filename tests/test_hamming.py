"""Near-duplicate search at scale (multi-index hashing) and the on-disk digest / hash store."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medfuse.data import digests, hamming
from medfuse.data.hamming import brute_force_pairs, multi_index_pairs, near_pairs, plan
from medfuse.data.splits import image_hashes
from medfuse.errors import ConfigError


def _planted(n: int, copies: int, seed: int, views: int = 8) -> np.ndarray:
    """Random hashes with ``copies`` planted near copies (0..6 bits off, any view)."""
    rng = np.random.default_rng(seed)
    h = rng.integers(0, 2**63, size=(n, views), dtype=np.uint64) * np.uint64(2)
    h |= rng.integers(0, 2, size=(n, views), dtype=np.uint64)
    for _ in range(copies):
        i, j = rng.integers(0, n, 2)
        value = h[j, 0]
        for b in rng.choice(64, int(rng.integers(0, 7)), replace=False):
            value ^= np.uint64(1) << np.uint64(int(b))
        h[i, int(rng.integers(0, views))] = value
    return h


@pytest.mark.parametrize("distance", [0, 1, 2, 5, 6])
def test_multi_index_finds_exactly_the_exhaustive_pairs(distance: int) -> None:
    h = _planted(3000, 300, seed=distance)
    expected = brute_force_pairs(h, distance)
    assert len(expected) > 20  # the planted copies are there to be found
    for m in sorted({2, 3, 4, distance + 1} - {1}):
        if hamming._probes(64 // m + 1, distance // m) > 1000:  # valid, only slow
            continue
        assert np.array_equal(multi_index_pairs(h, distance, m), expected), m
    assert np.array_equal(near_pairs(h, distance, method="multi-index"), expected)


def test_one_view_and_crowded_buckets_give_the_same_pairs(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(3)
    # a third of the hashes share their top 40 bits (dark borders do this to pHash): buckets
    # far above average, split into bounded pieces
    h = _planted(3000, 200, seed=3, views=1)[:, 0]
    h[:1000] = (h[:1000] & np.uint64(0xFFFFFF)) | np.uint64(0xABCDEF1234 << 24)
    h[1000:1010] = h[0] ^ rng.integers(0, 64, 10).astype(np.uint64)
    monkeypatch.setattr(hamming, "CHUNK_CANDIDATES", 5000)
    expected = brute_force_pairs(h, 6)
    assert len(expected) > 1000
    assert np.array_equal(multi_index_pairs(h, 6, 3), expected)
    assert np.array_equal(multi_index_pairs(h[:, None], 6, 4), expected)


def test_plan_is_exhaustive_for_small_sets_and_sub_quadratic_for_large() -> None:
    assert plan(3000, 8, 6) == 0  # today's sizes: the exhaustive search, as before
    assert plan(100_000, 8, 6) >= 2 and plan(1_000_000, 8, 6) >= 2
    assert plan(1_000_000, 8, 40) == 0  # such a radius prunes nothing


def test_bad_method_and_distance_are_named() -> None:
    h = np.zeros((3, 8), dtype=np.uint64)
    with pytest.raises(ConfigError, match=r"'fast'.*'auto'"):
        near_pairs(h, 6, method="fast")
    with pytest.raises(ConfigError, match="hash_distance=70"):
        near_pairs(h, 70)


def _forget_this_process() -> None:
    digests._DIGESTS.clear()
    digests._PENDING.clear()
    for store in digests._STORES.values():
        store.close()
    digests._STORES.clear()


def _images(folder: Path, n: int) -> list[str]:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        path = folder / f"img{i}.png"
        Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    return paths


def test_a_second_run_reads_and_decodes_no_unchanged_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    paths = _images(tmp_path, 6)
    first = image_hashes(paths, flips=True)
    assert (Path(os.environ["MEDFUSE_HOME"]) / "hashes.sqlite").is_file()
    _forget_this_process()  # as a new process would start
    read, decoded = [], []
    real_sha1, real_read = digests._sha1, image_hashes.__globals__["read_image"]
    monkeypatch.setattr(digests, "_sha1", lambda p: read.append(p) or real_sha1(p))
    monkeypatch.setitem(image_hashes.__globals__, "read_image",
                        lambda p, **kw: decoded.append(p) or real_read(p, **kw))
    assert np.array_equal(image_hashes(paths, flips=True), first)
    assert read == [] and decoded == []
    # a file rewritten (new size / mtime) is read again; the others are not
    Image.fromarray(np.zeros((30, 30, 3), np.uint8)).save(paths[2])
    again = image_hashes(paths, flips=True)
    assert [Path(p).name for p in read] == ["img2.png"] and len(decoded) == 1
    assert np.array_equal(np.delete(again, 2, axis=0), np.delete(first, 2, axis=0))
    # hashes of one width never answer for another
    assert image_hashes(paths[:2]).shape == (2,)


def test_an_unusable_store_only_costs_speed(tmp_path: Path,
                                            caplog: pytest.LogCaptureFixture) -> None:
    paths = _images(tmp_path, 3)
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("x")
    store = digests.HashStore(blocked / "hashes.sqlite")
    got = digests.file_digests(paths, store=store)
    assert got == [digests._sha1(p) for p in paths]
    assert "hash store" in caplog.text and "hashed again" in caplog.text
    _forget_this_process()
    assert digests.file_digests(paths, store=store) == got  # still answers, no error


def test_single_file_digests_are_stored_in_batches(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    paths = _images(tmp_path, 5)
    _forget_this_process()
    monkeypatch.setattr(digests, "PENDING_BATCH", 3)
    first = [digests.file_digest(p) for p in paths]
    assert len(digests._PENDING) == 2  # 3 written with the third, 2 waiting
    digests.flush_pending()
    assert digests._PENDING == []
    _forget_this_process()
    read: list[str] = []
    real = digests._sha1
    monkeypatch.setattr(digests, "_sha1", lambda p: read.append(p) or real(p))
    assert [digests.file_digest(p) for p in paths] == first and read == []
