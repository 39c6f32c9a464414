"""The multi-label ``synth-derm-findings`` variant: three findings, one modality each."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.compose import ColumnTransformer
from sklearn.feature_extraction.text import CountVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedGroupKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from medfuse.config import load_config
from medfuse.data import load_dataset, prepare_dataset, validate_table
from medfuse.data.builtin import data_home
from medfuse.data.synth import (
    SYNTH_DERM_FINDINGS,
    SYNTH_DERM_FINDINGS_GROUND_TRUTH,
    make_synth_derm,
)

BASE = ["image_path", "age", "sex", "site", "note", "label", "patient_id",
        "lesion_x", "lesion_y", "lesion_r"]
OWN = {"halo": "image", "sun_damage": "tabular", "family_history": "text"}


def _pixels(path: Path) -> bytes:
    return np.asarray(Image.open(path).convert("RGB")).tobytes()


def test_default_output_is_unchanged(tmp_path: Path) -> None:
    """Pinned: the synth-derm table and pixels as before the findings existed."""
    df = make_synth_derm(tmp_path, n_rows=60, image_size=32, seed=0)
    assert list(df.columns) == BASE
    csv = hashlib.sha256(df.to_csv(index=False).encode()).hexdigest()
    assert csv == "41e4cbdc9080a6a8116c87282d13aa24c38dd666fa1536230909a0720eb4e38f"
    pixels = hashlib.sha256(b"".join(_pixels(tmp_path / p) for p in df["image_path"]))
    assert pixels.hexdigest() == (
        "a7fde14999c94b6a5ce0863090663b6605e3feb89bb0b496587ef82f2a6c2d73")
    off = make_synth_derm(tmp_path / "off", n_rows=60, image_size=32, seed=0, findings=False)
    pd.testing.assert_frame_equal(df, off)


def test_findings_add_columns_and_keep_the_rest(tmp_path: Path) -> None:
    base = make_synth_derm(tmp_path / "base", n_rows=120, image_size=32, seed=4)
    df = make_synth_derm(tmp_path / "f", n_rows=120, image_size=32, seed=4, findings=True)
    assert list(df.columns) == BASE + list(SYNTH_DERM_FINDINGS)
    assert SYNTH_DERM_FINDINGS_GROUND_TRUTH
    for col in SYNTH_DERM_FINDINGS:
        assert df[col].dtype == np.int64 and set(df[col]) == {0, 1}, col
    same = [c for c in BASE if c != "note"]
    pd.testing.assert_frame_equal(df[same], base[same])
    assert all(n.startswith(b) for n, b in zip(df["note"], base["note"], strict=True))
    assert all("\n" not in n for n in df["note"])
    # only halo images change (the flipped labels aside): the rest are pixel for pixel equal
    unchanged = np.array([_pixels(tmp_path / "f" / p) == _pixels(tmp_path / "base" / p)
                          for p in df["image_path"]])
    halo = df["halo"].to_numpy() == 1
    assert unchanged[~halo].mean() > 0.9 and unchanged[halo].mean() < 0.2


def test_findings_deterministic_per_seed(tmp_path: Path) -> None:
    a = make_synth_derm(tmp_path / "a", n_rows=30, image_size=16, seed=7, findings=True)
    b = make_synth_derm(tmp_path / "b", n_rows=30, image_size=16, seed=7, findings=True)
    c = make_synth_derm(tmp_path / "c", n_rows=30, image_size=16, seed=8, findings=True)
    pd.testing.assert_frame_equal(a, b)
    assert all((tmp_path / "a" / p).read_bytes() == (tmp_path / "b" / p).read_bytes()
               for p in a["image_path"])
    assert not a[list(SYNTH_DERM_FINDINGS)].equals(c[list(SYNTH_DERM_FINDINGS)])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_findings_prevalence_and_independence(tmp_path: Path, seed: int) -> None:
    df = make_synth_derm(tmp_path, n_rows=400, image_size=16, seed=seed, findings=True)
    prevalence = df[list(SYNTH_DERM_FINDINGS)].mean()
    assert prevalence.between(0.15, 0.40).all(), prevalence.to_dict()
    corr = df[list(SYNTH_DERM_FINDINGS)].corr().to_numpy()
    assert np.abs(corr[np.triu_indices(3, 1)]).max() < 0.15, corr


def test_findings_flag_must_be_bool(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="'findings'"):
        make_synth_derm(tmp_path, n_rows=20, findings=1)  # type: ignore[arg-type]


# --- each finding is seen by its own modality only ----------------------------------------


def _image_features(path: Path) -> np.ndarray:
    """Pixel statistics: how much of the image is brighter than its skin, colour mean / sd."""
    rgb = np.asarray(Image.open(path), dtype=float)
    gray = rgb.mean(axis=2)
    skin = np.median(gray)
    flat = rgb.reshape(-1, 3)
    return np.r_[(gray > skin + 15).mean(), (gray > skin + 30).mean(),
                 np.percentile(gray, 99) - skin, flat.mean(0), flat.std(0)]


def _modality_aucs(out: Path, df: pd.DataFrame) -> dict[str, dict[str, float]]:
    img = np.array([_image_features(out / p) for p in df["image_path"]])
    img_cols = [f"img{j}" for j in range(img.shape[1])]
    x = pd.concat([df, pd.DataFrame(img, columns=img_cols, index=df.index)], axis=1)
    features = {
        "image": [("image", StandardScaler(), img_cols)],
        "tabular": [("cat", OneHotEncoder(handle_unknown="ignore"), ["sex", "site"]),
                    ("age", StandardScaler(), ["age"])],
        "text": [("text", CountVectorizer(ngram_range=(1, 2)), "note")],
    }
    cv = StratifiedGroupKFold(n_splits=5, shuffle=True, random_state=0)
    auc: dict[str, dict[str, float]] = {}
    for finding in SYNTH_DERM_FINDINGS:
        auc[finding] = {}
        for modality, parts in features.items():
            model = make_pipeline(ColumnTransformer(parts), LogisticRegression(max_iter=2000))
            proba = cross_val_predict(model, x, df[finding], cv=cv, groups=df["patient_id"],
                                      method="predict_proba")[:, 1]
            auc[finding][modality] = float(roc_auc_score(df[finding], proba))
    return auc


def test_each_finding_needs_its_own_modality(tmp_path: Path) -> None:
    df = make_synth_derm(tmp_path, n_rows=400, image_size=32, seed=0, findings=True)
    auc = _modality_aucs(tmp_path, df)
    for finding, own in OWN.items():
        assert 0.8 < auc[finding][own] < 0.99, auc  # predictable, yet noisy
        others = [a for m, a in auc[finding].items() if m != own]
        assert all(a < 0.65 for a in others), auc


# --- the built-in dataset and its config ---------------------------------------------------


def test_builtin_dataset_is_cached_apart(tmp_path: Path) -> None:
    df, spec = load_dataset("synth-derm-findings", n_rows=40, image_size=16, seed=1)
    base, base_spec = load_dataset("synth-derm", n_rows=40, image_size=16, seed=1)
    again, _ = load_dataset("synth-derm-findings", n_rows=40, image_size=16, seed=1)  # cached
    pd.testing.assert_frame_equal(df, again)
    assert sorted(p.name for p in data_home().iterdir() if p.name.startswith("synth-derm")) == [
        "synth-derm-findings-n40-px16-seed1", "synth-derm-n40-px16-seed1"]
    assert not set(SYNTH_DERM_FINDINGS) & set(base.columns)
    assert base_spec.target == "label" and not base_spec.multilabel
    assert spec.targets == list(SYNTH_DERM_FINDINGS) and spec.positive is None
    clean, _ = validate_table(df, spec)
    assert len(clean) == 40
    joined = {label for labels in clean[spec.target] for label in labels.split("|") if label}
    assert joined == set(SYNTH_DERM_FINDINGS)
    with pytest.raises(ValueError, match="Did you mean 'seed'"):
        load_dataset("synth-derm-findings", sed=1)
    csv = prepare_dataset("synth-derm-findings", tmp_path / "out", n_rows=40, image_size=16,
                          seed=1)
    raw = pd.read_csv(csv)
    pd.testing.assert_frame_equal(raw[list(SYNTH_DERM_FINDINGS)], df[list(SYNTH_DERM_FINDINGS)])
    assert all((tmp_path / "out" / p).is_file() for p in raw["image_path"])


def test_config_loads_and_matches_the_dataset() -> None:
    cfg = load_config("synth_derm_findings")
    data = cfg.data
    assert cfg.name == "synth_derm_findings" and data.dataset == "synth-derm-findings"
    assert data.targets == list(SYNTH_DERM_FINDINGS) and data.multilabel
    assert data.target == "labels" and data.positive is None
    assert data.modalities == ["image", "tabular", "text"]
    _, spec = load_dataset("synth-derm-findings", n_rows=20, image_size=16, seed=0)
    assert data.columns() == spec.columns()
    assert load_config("synth_derm").model == cfg.model
