from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from medfuse.config import DataSpec, SplitSpec
from medfuse.data import group_labels, holdout_split, kfold_splits, load_table
from medfuse.data.splits import DIHEDRAL, near_duplicate_pairs
from medfuse.errors import DataError


def _patients(n: int = 120, seed: int = 0) -> tuple[pd.DataFrame, DataSpec]:
    rng = np.random.default_rng(seed)
    pid = rng.integers(0, n // 3, size=n)
    df = pd.DataFrame({"x": rng.normal(size=n), "pid": pid.astype(str),
                       "y": (rng.random(n) < 0.3).astype(int).astype(str)})
    return df, DataSpec(tabular={"x": "continuous"}, target="y", group="pid")


def test_holdout_grouped_stratified_and_complete() -> None:
    df, spec = _patients()
    split = holdout_split(df, spec, seed=0)
    tr, va, te = split.indices
    assert sorted(np.concatenate([tr, va, te]).tolist()) == list(range(len(df)))
    sets = [set(df["pid"].iloc[i]) for i in (tr, va, te)]
    assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])
    assert 0.12 < len(te) / len(df) < 0.3
    rate = (df["y"] == "1").mean()
    assert abs((df["y"].iloc[te] == "1").mean() - rate) < 0.12
    assert split.report.sizes == {"train": len(tr), "valid": len(va), "test": len(te)}


def test_holdout_is_seeded() -> None:
    df, spec = _patients()
    a, b = holdout_split(df, spec, seed=3), holdout_split(df, spec, seed=3)
    np.testing.assert_array_equal(a.test, b.test)


def test_kfold_each_row_tested_once_and_groups_never_straddle() -> None:
    df, spec = _patients()
    folds, report = kfold_splits(df, spec, k=5, seed=0)
    tested = np.concatenate([te for _, te in folds])
    assert sorted(tested.tolist()) == list(range(len(df)))
    for tr, te in folds:
        assert not set(df["pid"].iloc[tr]) & set(df["pid"].iloc[te])
    assert report.n_groups == df["pid"].nunique()


def test_too_many_folds() -> None:
    df, spec = _patients(n=12)
    with pytest.raises(DataError, match="cannot make 50 folds"):
        kfold_splits(df, spec, k=50)


def test_near_duplicate_images_are_grouped(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    rows = []
    for i in range(12):
        base = (rng.random((8, 8)) * 255).astype(np.uint8)
        img = np.asarray(Image.fromarray(base).resize((96, 96), Image.Resampling.BILINEAR))
        Image.fromarray(img).save(tmp_path / f"{i}.png")
        rows.append({"image": f"{i}.png", "y": str(i % 2)})
        if i < 3:  # a near copy: re-encoded as JPEG with noise, slightly brighter
            noisy = np.clip(img.astype(int) + rng.integers(-6, 7, img.shape) + 5, 0, 255)
            Image.fromarray(noisy.astype(np.uint8)).save(tmp_path / f"{i}_copy.jpg", quality=80)
            rows.append({"image": f"{i}_copy.jpg", "y": str(i % 2)})
    pd.DataFrame(rows).to_csv(tmp_path / "d.csv", index=False)
    spec = DataSpec(image="image", target="y", split=SplitSpec(hash_distance=6))
    df, _ = load_table(tmp_path / "d.csv", spec)
    labels, report = group_labels(df, spec)
    assert report.duplicate_groups == 3 and report.duplicate_images == 6
    assert report.n_groups == 12
    names = df["image"].map(lambda p: Path(p).stem)
    for i in range(3):
        assert labels[names.tolist().index(str(i))] == labels[names.tolist().index(f"{i}_copy")]
    off = spec.model_copy(update={"split": SplitSpec(dedupe_images=False)})
    assert group_labels(df, off)[1].n_groups == len(df)


def test_near_duplicate_pairs_blocks() -> None:
    hashes = np.array([0, 1, 3, 0xFFFF, 0xFFFF], dtype=np.uint64)
    pairs = near_duplicate_pairs(hashes, max_distance=1, block=2)
    assert {tuple(p) for p in pairs.tolist()} == {(0, 1), (1, 2), (3, 4)}


def test_flipped_and_rotated_copies_are_grouped(tmp_path: Path) -> None:
    """A copy flipped or turned by 90 degrees (and re-encoded) is a near-duplicate too."""
    rng = np.random.default_rng(1)
    rows = []
    for i in range(14):
        base = (rng.random((8, 8)) * 255).astype(np.uint8)
        img = Image.fromarray(base).resize((96, 96), Image.Resampling.BILINEAR)
        img.save(tmp_path / f"{i}.png")
        rows.append({"image": f"{i}.png", "y": str(i % 2)})
        if i < 7:  # one copy per non-identity symmetry, noisy JPEG
            op = DIHEDRAL[i + 1]
            assert op is not None
            moved = np.asarray(img.transpose(op)).astype(int) + rng.integers(-6, 7, (96, 96))
            Image.fromarray(np.clip(moved, 0, 255).astype(np.uint8)).save(
                tmp_path / f"{i}_moved.jpg", quality=80)
            rows.append({"image": f"{i}_moved.jpg", "y": str(i % 2)})
    pd.DataFrame(rows).to_csv(tmp_path / "d.csv", index=False)
    spec = DataSpec(image="image", target="y")
    assert spec.split.dedupe_flips  # on by default
    df, _ = load_table(tmp_path / "d.csv", spec)
    labels, report = group_labels(df, spec)
    assert (report.n_groups, report.duplicate_groups, report.duplicate_images) == (14, 7, 14)
    names = df["image"].map(lambda p: Path(p).stem).tolist()
    for i in range(7):
        assert labels[names.index(str(i))] == labels[names.index(f"{i}_moved")]
    plain = spec.model_copy(update={"split": SplitSpec(dedupe_flips=False)})
    assert group_labels(df, plain)[1].n_groups == 21  # as-is hashes miss every moved copy
    folds, _ = kfold_splits(df, spec, k=3, seed=0)
    for tr, te in folds:
        assert not {n.split("_")[0] for n in np.array(names)[tr]} & {
            n.split("_")[0] for n in np.array(names)[te]}


def test_near_duplicate_pairs_under_symmetries() -> None:
    # row 1 is row 0 seen through its second symmetry; row 2 matches nothing
    hashes = np.array([[0, 0xF0F0, 7], [0xF0F1, 1, 2], [0xFFFF_0000, 5, 6]], dtype=np.uint64)
    assert near_duplicate_pairs(hashes, 1).tolist() == [[0, 1]]
    assert near_duplicate_pairs(hashes[:, :1], 1).tolist() == []
    assert near_duplicate_pairs(hashes[:, 0], 1).tolist() == []
