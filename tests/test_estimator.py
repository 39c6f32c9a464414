"""Real 1-epoch fits on the tiny fixture, for every modality combination."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medfuse.config import DataSpec
from medfuse.data import load_table
from medfuse.errors import ConfigError, DataValidationError, NotFittedError
from medfuse.estimators import FusionClassifier
from medfuse.io import RunDirError

FAST = dict(
    image_backbone="small_cnn", pretrained="none", image_size=32, max_epochs=1, batch_size=8,
    min_token_freq=1, embed_dim=16, hidden_dims=(16,), progress=False,
)

COMBOS = {
    "image": {"image": "image"},
    "tabular": {"tabular": {"age": "continuous", "sex": "categorical"}},
    "text": {"text": "note"},
    "image+tabular": {"image": "image", "tabular": {"age": "continuous", "sex": "categorical"}},
    "tabular+text": {"tabular": {"age": "continuous"}, "text": "note"},
    "all": {"image": "image", "tabular": {"age": "continuous", "sex": "categorical"},
            "text": "note"},
}


def _data(tiny_dir: Path, modalities: dict[str, object]) -> tuple[pd.DataFrame, DataSpec]:
    spec = DataSpec.model_validate(
        {"target": "label", "group": "patient", "positive": "malignant", **modalities}
    )
    df, _ = load_table(tiny_dir / "data.csv", spec)
    return df, spec


@pytest.mark.parametrize("combo", list(COMBOS))
def test_one_epoch_fit_every_combination(tiny_dir: Path, tmp_path: Path, combo: str) -> None:
    df, spec = _data(tiny_dir, COMBOS[combo])
    clf = FusionClassifier(spec, **FAST).fit(df.iloc[:18], df.iloc[18:], run_dir=tmp_path)
    proba = clf.predict_proba(df)
    assert proba.shape == (len(df), 2)
    np.testing.assert_allclose(proba.sum(1), 1.0, atol=1e-5)
    assert set(clf.predict(df)) <= {"benign", "malignant"}
    assert clf.classes_ == ["benign", "malignant"]
    assert list(clf.model_.encoders) == spec.modalities
    assert (tmp_path / "logs" / "metrics.csv").is_file()
    assert (tmp_path / "checkpoints" / "best.ckpt").is_file()


@pytest.mark.parametrize("fusion", ["gated", "late"])
def test_other_fusions_fit(tiny_dir: Path, fusion: str) -> None:
    df, spec = _data(tiny_dir, COMBOS["all"])
    clf = FusionClassifier(spec, fusion=fusion, **FAST).fit(df)
    assert clf.predict_proba(df).shape == (len(df), 2)


@pytest.mark.parametrize("text_encoder", ["minilm", "wordcnn+minilm"])
def test_minilm_text_encoders_fit(tiny_dir: Path, tmp_path: Path, text_encoder: str) -> None:
    df, spec = _data(tiny_dir, COMBOS["tabular+text"])
    clf = FusionClassifier(spec, text_encoder=text_encoder, max_tokens=16, **FAST).fit(df)
    proba = clf.predict_proba(df.head(4))
    assert proba.shape == (4, 2)
    back = FusionClassifier.load(clf.save(tmp_path / "run"))
    np.testing.assert_allclose(back.predict_proba(df.head(4)), proba, atol=1e-6)


def test_save_load_identical_predictions(tiny_dir: Path, tmp_path: Path) -> None:
    df, spec = _data(tiny_dir, COMBOS["all"])
    clf = FusionClassifier(spec, **FAST).fit(df)
    clf.save(tmp_path / "run")
    names = {p.name for p in (tmp_path / "run").iterdir()}
    assert {"model.safetensors", "preprocess.json", "estimator.json", "manifest.json"} <= names
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert "torch" in manifest["versions"] and "model.safetensors" in manifest["files"]
    back = FusionClassifier.load(tmp_path / "run")
    np.testing.assert_array_equal(clf.predict_proba(df), back.predict_proba(df))
    assert back.get_params() == {**clf.get_params(), "hidden_dims": tuple(clf.hidden_dims)}


def test_saving_over_a_run_with_a_report_keeps_it_loadable(tiny_dir: Path,
                                                           tmp_path: Path) -> None:
    """`train --resume` saves into a run that already has report.html, then rebuilds the
    report: the manifest must not pin the old one (found with the test order shuffled)."""
    df, spec = _data(tiny_dir, COMBOS["tabular"])
    run = FusionClassifier(spec, **FAST).fit(df).save(tmp_path / "run")
    (run / "report.html").write_text("<p>first report</p>")
    FusionClassifier(spec, **FAST).fit(df).save(run)
    (run / "report.html").write_text("<p>rebuilt report</p>")
    assert "report.html" not in json.loads((run / "manifest.json").read_text())["files"]
    assert FusionClassifier.load(run).predict_proba(df).shape == (len(df), 2)


def test_load_rejects_missing_or_altered_files(tiny_dir: Path, tmp_path: Path) -> None:
    df, spec = _data(tiny_dir, COMBOS["tabular"])
    run = FusionClassifier(spec, **FAST).fit(df).save(tmp_path / "run")
    blob = bytearray((run / "model.safetensors").read_bytes())
    blob[-1] ^= 0xFF
    (run / "model.safetensors").write_bytes(bytes(blob))
    with pytest.raises(RunDirError, match=r"\['model.safetensors'\].*do not match their sha256"):
        FusionClassifier.load(run)
    (run / "preprocess.json").unlink()
    with pytest.raises(RunDirError, match=r"lacks.*preprocess\.json"):
        FusionClassifier.load(run)
    with pytest.raises(RunDirError, match="does not exist"):
        FusionClassifier.load(tmp_path / "nope")


def test_predict_needs_the_model_columns(tiny_dir: Path) -> None:
    df, spec = _data(tiny_dir, COMBOS["tabular+text"])
    clf = FusionClassifier(spec, **FAST).fit(df)
    with pytest.raises(DataValidationError, match="column 'note'"):
        clf.predict_proba(df.drop(columns=["note"]))
    # labels are optional at prediction time
    assert clf.predict_proba(df.drop(columns=["label"])).shape == (len(df), 2)


def test_bad_params_name_parameter_and_options(tiny_dir: Path) -> None:
    df, spec = _data(tiny_dir, COMBOS["all"])
    with pytest.raises(ConfigError, match=r"'fusion' parameter of FusionClassifier.*'concat'"):
        FusionClassifier(spec, **{**FAST, "fusion": "concatt"}).fit(df)
    with pytest.raises(ConfigError, match="Did you mean 'minilm'"):
        FusionClassifier(spec, **{**FAST, "text_encoder": "minilmm"}).fit(df)
    with pytest.raises(ConfigError, match="resnet18"):
        FusionClassifier(spec, **{**FAST, "image_backbone": "resnet19"}).fit(df)
    with pytest.raises(NotFittedError):
        FusionClassifier(spec).predict_proba(df)


def test_same_config_and_seed_give_identical_metrics(tiny_dir: Path, tmp_path: Path) -> None:
    """Two fits with one seed on CPU agree exactly (dropout, augmentation, shuffling)."""
    from medfuse.runs import evaluate

    df, spec = _data(tiny_dir, COMBOS["all"])
    params = {**FAST, "max_epochs": 2, "accelerator": "cpu", "dropout": 0.5}
    results = []
    for i, seed in enumerate((7, 7, 8)):
        clf = FusionClassifier(spec, **{**params, "seed": seed})
        clf.fit(df.iloc[:18], df.iloc[18:], run_dir=tmp_path / str(i))
        metrics, preds = evaluate(clf, df)
        results.append((metrics, preds, clf.predict_proba(df)))
    (m1, p1, a1), (m2, p2, a2), (_, _, other) = results
    assert m1 == m2
    pd.testing.assert_frame_equal(p1, p2)
    np.testing.assert_array_equal(a1, a2)
    assert not np.array_equal(a1, other)  # the seed does matter


def test_from_config_passes_every_train_setting(tiny_config: Path) -> None:
    from medfuse.config import load_config

    cfg = load_config(tiny_config, ["train.monitor=val_acc", "train.patience=7",
                                    "train.precision=bf16-mixed", "train.sampler=balanced"])
    params = FusionClassifier.from_config(cfg).get_params()
    passed = {k: v for k, v in cfg.train.model_dump().items() if k in params and k != "augment"}
    assert {"monitor", "patience", "precision", "sampler", "max_epochs"} <= set(passed)
    assert {k: params[k] for k in passed} == passed
