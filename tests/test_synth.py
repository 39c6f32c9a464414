"""Tests of the built-in ``synth-derm`` generator (:mod:`medfuse.data.synth`)."""

from __future__ import annotations

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

from medfuse.data.synth import (
    SITES,
    SYNTH_DERM_GROUND_TRUTH,
    SYNTH_DERM_TABULAR,
    _generate,
    make_synth_derm,
)

COLUMNS = ["image_path", "age", "sex", "site", "note", "label", "patient_id",
           "lesion_x", "lesion_y", "lesion_r"]
MODALITIES = ("image", "tabular", "text")


def _gray(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=float).mean(axis=2)


def test_columns_dtypes_and_patients(tmp_path: Path) -> None:
    df = make_synth_derm(tmp_path, n_rows=60, image_size=32, seed=0)
    assert list(df.columns) == COLUMNS
    assert len(df) == 60
    assert df["image_path"].tolist() == [f"images/{i:05d}.png" for i in range(60)]
    for col in ("age", "lesion_x", "lesion_y", "lesion_r"):
        assert df[col].dtype == np.float64, col
    assert df["label"].dtype == np.int64
    assert set(df["label"]) == {0, 1}
    assert df["age"].between(18, 92).all()
    assert set(df["sex"]) <= {"female", "male"}
    assert set(df["site"]) <= set(SITES)
    assert all(isinstance(n, str) and n and "\n" not in n for n in df["note"])
    assert set(SYNTH_DERM_TABULAR) == {"age", "sex", "site"} and SYNTH_DERM_GROUND_TRUTH
    per_patient = df.groupby("patient_id").size()
    assert per_patient.between(1, 3).all() and (per_patient > 1).sum() >= 5
    # patient-level attributes are consistent across a patient's lesions
    assert (df.groupby("patient_id")[["age", "sex"]].nunique() == 1).all().all()
    assert not (tmp_path / "table.csv").exists()


def test_images_decode_as_rgb(tmp_path: Path) -> None:
    df = make_synth_derm(tmp_path, n_rows=20, image_size=40, seed=3)
    for rel in df["image_path"]:
        with Image.open(tmp_path / rel) as img:
            assert img.format == "PNG" and img.mode == "RGB" and img.size == (40, 40)


def test_deterministic_per_seed(tmp_path: Path) -> None:
    a = make_synth_derm(tmp_path / "a", n_rows=30, image_size=32, seed=7)
    b = make_synth_derm(tmp_path / "b", n_rows=30, image_size=32, seed=7)
    c = make_synth_derm(tmp_path / "c", n_rows=30, image_size=32, seed=8)
    pd.testing.assert_frame_equal(a, b)
    for rel in a["image_path"]:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()
    assert not a.drop(columns="image_path").equals(c.drop(columns="image_path"))
    same = [(tmp_path / "a" / r).read_bytes() == (tmp_path / "c" / r).read_bytes()
            for r in a["image_path"]]
    assert not any(same)


def test_labels_and_notes_do_not_depend_on_image_size(tmp_path: Path) -> None:
    a = make_synth_derm(tmp_path / "a", n_rows=30, image_size=16, seed=2)
    b = make_synth_derm(tmp_path / "b", n_rows=30, image_size=48, seed=2)
    cols = ["age", "sex", "site", "note", "label", "patient_id"]
    pd.testing.assert_frame_equal(a[cols], b[cols])


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_label_balance(tmp_path: Path, seed: int) -> None:
    df = make_synth_derm(tmp_path, n_rows=240, image_size=16, seed=seed)
    assert 0.35 <= df["label"].mean() <= 0.65


@pytest.mark.parametrize("size", [16, 64, 128])
def test_lesion_centre_is_on_the_lesion(tmp_path: Path, size: int) -> None:
    df = make_synth_derm(tmp_path, n_rows=24, image_size=size, seed=5)
    assert ((df["lesion_x"] > df["lesion_r"]) & (df["lesion_x"] < size - df["lesion_r"])).all()
    assert ((df["lesion_y"] > df["lesion_r"]) & (df["lesion_y"] < size - df["lesion_r"])).all()
    assert (df["lesion_r"] >= 0.08 * size).all()
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    for row in df.itertuples():
        gray = _gray(tmp_path / row.image_path)
        background = np.median(np.r_[gray[0], gray[-1], gray[:, 0], gray[:, -1]])
        dist = np.hypot(xx - row.lesion_x, yy - row.lesion_y)
        core = gray[dist <= max(row.lesion_r / 2, 1.0)].mean()
        ring = gray[(dist > 2.2 * row.lesion_r) & (dist < 3.5 * row.lesion_r)].mean()
        assert core < background - 20, row.Index
        assert core < ring - 20, row.Index


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"n_rows": 5}, "n_rows"),
        ({"n_rows": 30.0}, "n_rows"),
        ({"n_rows": True}, "n_rows"),
        ({"image_size": 8}, "image_size"),
        ({"image_size": 2048}, "image_size"),
        ({"image_size": "64"}, "image_size"),
        ({"seed": -1}, "seed"),
    ],
)
def test_bad_arguments(tmp_path: Path, kwargs: dict[str, object], param: str) -> None:
    with pytest.raises(ValueError, match=f"'{param}'") as info:
        make_synth_derm(tmp_path, **kwargs)
    assert repr(next(iter(kwargs.values()))) in str(info.value)
    assert not (tmp_path / "images").exists()


# --- modality complementarity: every modality helps, none suffices -------------------------


@pytest.fixture(scope="module")
def synth600(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame, dict]:
    out = tmp_path_factory.mktemp("synth600")
    df, evidence = _generate(out, 600, 48, 0)
    return out, df, evidence


def _cv_auc(model: object, x: object, df: pd.DataFrame) -> float:
    cv = StratifiedGroupKFold(n_splits=5, shuffle=True, random_state=0)
    proba = cross_val_predict(model, x, df["label"], cv=cv, groups=df["patient_id"],
                              method="predict_proba")[:, 1]
    return float(roc_auc_score(df["label"], proba))


def _image_features(path: Path) -> np.ndarray:
    """Colour stats of the image and of its dark (lesion) pixels, dark area, border roughness."""
    rgb = np.asarray(Image.open(path), dtype=float)
    gray = rgb.mean(axis=2)
    background = np.median(np.r_[gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    mask = gray < background - 25
    if mask.sum() < 3:
        mask = gray <= np.percentile(gray, 5)
    edge = (mask ^ np.roll(mask, 1, 0)) | (mask ^ np.roll(mask, 1, 1))
    flat = rgb.reshape(-1, 3)
    return np.r_[flat.mean(0), flat.std(0), mask.mean(), rgb[mask].mean(0), rgb[mask].std(0),
                 np.percentile(gray, 2), edge.sum() / np.sqrt(mask.sum())]


def test_oracle_evidence_is_complementary(synth600: tuple[Path, pd.DataFrame, dict]) -> None:
    _, df, evidence = synth600
    lr = make_pipeline(StandardScaler(), LogisticRegression())
    single = {m: _cv_auc(lr, evidence[m][:, None], df) for m in MODALITIES}
    fused = _cv_auc(lr, np.column_stack([evidence[m] for m in MODALITIES]), df)
    assert all(0.62 < auc < 0.85 for auc in single.values()), single
    assert fused >= max(single.values()) + 0.05, (fused, single)


def test_real_features_are_complementary(synth600: tuple[Path, pd.DataFrame, dict]) -> None:
    out, df, _ = synth600
    img = np.array([_image_features(out / rel) for rel in df["image_path"]])
    img_cols = [f"img{j}" for j in range(img.shape[1])]
    x = pd.concat([df, pd.DataFrame(img, columns=img_cols, index=df.index)], axis=1)
    parts = {
        "image": ("image", StandardScaler(), img_cols),
        "tabular": ("tabular", OneHotEncoder(handle_unknown="ignore"), ["sex", "site"]),
        "age": ("age", StandardScaler(), ["age"]),
        "text": ("text", CountVectorizer(), "note"),
    }
    groups = {"image": ["image"], "tabular": ["tabular", "age"], "text": ["text"],
              "fused": ["image", "tabular", "age", "text"]}
    auc = {}
    for name, keys in groups.items():
        features = ColumnTransformer([parts[k] for k in keys])
        model = make_pipeline(features, LogisticRegression(max_iter=2000))
        auc[name] = _cv_auc(model, x, df)
    single = {m: auc[m] for m in MODALITIES}
    assert all(a > 0.6 for a in single.values()), auc
    assert auc["fused"] >= max(single.values()) + 0.03, auc
