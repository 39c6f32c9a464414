"""Test-time augmentation (``model.tta``): probabilities averaged over flips / quarter turns."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from medfuse.config import DataSpec
from medfuse.data import load_table
from medfuse.errors import ConfigError
from medfuse.estimators import FusionClassifier

SPEC = DataSpec(image="image", tabular={"age": "continuous"}, target="label", group="patient")


@pytest.fixture(scope="module")
def fitted(tiny_dir: Path) -> tuple[FusionClassifier, pd.DataFrame]:
    df, _ = load_table(tiny_dir / "data.csv", SPEC)
    df = df[df["image"].str.endswith(".png")].reset_index(drop=True)  # lossless copies below
    clf = FusionClassifier(SPEC, image_backbone="small_cnn", pretrained="none", image_size=32,
                           hidden_dims=(8,), batch_size=8, max_epochs=1, progress=False)
    return clf.fit(df.iloc[:12], df.iloc[12:]), df


def test_dihedral_tta_is_invariant_to_flips_and_quarter_turns(
    fitted: tuple[FusionClassifier, pd.DataFrame], tmp_path: Path, image_mover: Any
) -> None:
    clf, df = fitted
    turned = image_mover(df, tmp_path / "rot90", [Image.Transpose.ROTATE_90])
    mirrored = image_mover(df, tmp_path / "mirror", [Image.Transpose.FLIP_LEFT_RIGHT])
    clf.tta = "none"
    plain = clf.predict_proba(df)
    assert not np.allclose(plain, clf.predict_proba(turned), atol=1e-4)  # the net is not
    clf.tta = "hflip"
    np.testing.assert_allclose(clf.predict_proba(df), clf.predict_proba(mirrored), atol=1e-5)
    assert not np.allclose(clf.predict_proba(df), clf.predict_proba(turned), atol=1e-4)
    clf.tta = "dihedral"
    eight = clf.predict_proba(df)
    for moved in (turned, mirrored,
                  image_mover(df, tmp_path / "transpose", [Image.Transpose.TRANSPOSE])):
        np.testing.assert_allclose(eight, clf.predict_proba(moved), atol=1e-5)
    assert not np.allclose(eight, plain, atol=1e-4)
    np.testing.assert_allclose(eight.sum(axis=1), 1.0, atol=1e-6)
    clf.tta = "none"


def test_tta_is_saved_and_exported(fitted: tuple[FusionClassifier, pd.DataFrame],
                                   tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    from medfuse.export import OnnxPredictor, export_onnx

    clf, df = fitted
    clf.tta = "dihedral"
    try:
        run = clf.save(tmp_path / "run")
    finally:
        clf.tta = "none"
    loaded = FusionClassifier.load(run)
    assert loaded.tta == "dihedral"
    export_onnx(run)
    np.testing.assert_allclose(OnnxPredictor(run, clf=loaded).predict_proba(df),
                               loaded.predict_proba(df), atol=1e-4)
    loaded.tta = "none"  # the graph holds the views: a single-view model differs
    assert not np.allclose(OnnxPredictor(run, clf=loaded).predict_proba(df),
                           loaded.predict_proba(df), atol=1e-4)


def test_tta_errors(tiny_dir: Path) -> None:
    from medfuse.config import load_config
    from medfuse.runs import estimator_from_config

    with pytest.raises(ConfigError, match=r"'tta'.*Did you mean 'dihedral'"):
        FusionClassifier(SPEC, tta="dihedal")._validate_params()
    tabular = DataSpec(tabular={"age": "continuous"}, target="label")
    with pytest.raises(ConfigError, match="no image column: set tta='none'"):
        FusionClassifier(tabular, tta="hflip")._validate_params()
    cfg = load_config("br35h_hybrid", ["model.tta=dihedral"])
    with pytest.raises(ConfigError, match=r"model.image_views='dihedral' and model.tta=none"):
        estimator_from_config(cfg)
    with pytest.raises(ConfigError, match=r"model.tta"):
        load_config("br35h", ["model.tta=rot"])
