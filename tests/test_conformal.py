"""Conformal prediction sets and the calibration that never silently hurts (issue 26)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medfuse.config import DataSpec
from medfuse.data import load_table
from medfuse.errors import ConfigError, DataError
from medfuse.estimators import FusionClassifier
from medfuse.estimators.base import NO_CONFORMAL, CalibrationWarning
from medfuse.evaluation.evaluate import evaluate, predictions_frame
from medfuse.scoring.calibration import choose_temperature
from medfuse.scoring.conformal import (
    ConformalSets,
    check_calibration_classes,
    conformal_metrics,
    format_sets,
    parse_sets,
)

FAST = dict(image_backbone="small_cnn", pretrained="none", image_size=32, max_epochs=1,
            batch_size=8, min_token_freq=1, embed_dim=16, hidden_dims=(16,), progress=False)
ALL = {"image": "image", "tabular": {"age": "continuous", "sex": "categorical"},
       "text": "note"}


def _scores(rng: np.random.Generator, y: np.ndarray, k: int, noise: np.ndarray | float
            ) -> np.ndarray:
    """Softmax probabilities that favour the true class, blurred by ``noise`` per row."""
    logits = rng.normal(0, 1, (len(y), k)) * np.reshape(noise, (-1, 1))
    logits[np.arange(len(y)), y] += 1.5
    e = np.exp(logits - logits.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def test_class_conditional_sets_cover_every_class_even_a_rare_hard_one() -> None:
    rng = np.random.default_rng(0)
    n = 8000
    y = (rng.random(n) < 0.15).astype(int) * 2 + (rng.random(n) < 0.4)  # 4 classes, unequal
    y = np.clip(y, 0, 2)
    noise = np.where(y == 2, 3.0, 1.0)  # the rare class is much harder
    proba = _scores(rng, y, 3, noise)
    cal, test = slice(0, n // 2), slice(n // 2, n)
    sets = ConformalSets(0.1).fit(proba[cal], y[cal]).predict(proba[test])
    m = conformal_metrics(y[test], sets, ["a", "b", "c"], 0.1)
    for cls, cov in m["class_coverage"].items():
        assert 0.87 <= cov <= 0.94, (cls, cov)
    # one marginal threshold for every class (plain split conformal) under-covers the hard one
    marginal_q = np.quantile(1 - proba[cal][np.arange(n // 2), y[cal]], 0.9)
    marginal = (1 - proba[test]) <= marginal_q
    hard = y[test] == 2
    assert marginal[np.arange(n // 2), y[test]][hard].mean() < 0.85 < m["class_coverage"]["c"]
    assert 0 <= m["abstain_rate"] <= 1 and sum(m["set_sizes"].values()) == n // 2


def test_each_modality_subset_is_calibrated_on_its_own() -> None:
    rng = np.random.default_rng(1)
    n = 6000
    y = rng.integers(0, 2, n)
    subsets = np.where(rng.random(n) < 0.5, "image+text", "text")
    noise = np.where(subsets == "text", 2.5, 0.6)  # text alone is much less certain
    proba = _scores(rng, y, 2, noise)
    half = n // 2
    sets = ConformalSets(0.1).fit(proba[:half], y[:half], subsets[:half]).predict(
        proba[half:], subsets[half:])
    m = conformal_metrics(y[half:], sets, ["0", "1"], 0.1, subsets[half:])
    assert set(m["by_modalities"]) == {"image+text", "text"}
    for name, sub in m["by_modalities"].items():
        assert abs(sub["coverage"] - 0.9) <= 0.03, (name, sub["coverage"])
    assert m["by_modalities"]["text"]["mean_set_size"] > m["by_modalities"]["image+text"][
        "mean_set_size"]
    # a subset never calibrated gets every class (abstains) instead of a made-up guarantee
    unseen = ConformalSets(0.1).fit(proba[:half], y[:half], subsets[:half]).predict(
        proba[:3], np.array(["image"] * 3))
    assert unseen.all()


def test_state_round_trips_through_json_with_identical_sets() -> None:
    rng = np.random.default_rng(2)
    y = rng.integers(0, 3, 300)
    proba = _scores(rng, y, 3, 1.0)
    fitted = ConformalSets(0.2).fit(proba[:150], y[:150])
    again = ConformalSets.from_dict(json.loads(json.dumps(fitted.to_dict())))
    np.testing.assert_array_equal(fitted.predict(proba[150:]), again.predict(proba[150:]))
    assert again.alpha == 0.2 and again.counts_ == fitted.counts_
    with pytest.raises(DataError, match="retrain"):
        ConformalSets.from_dict({"alpha": 0.1})


def test_set_strings_round_trip_even_when_read_back_as_numbers() -> None:
    sets = np.array([[True, False], [True, True], [False, False], [False, True]])
    text = format_sets(sets, ["0", "1"])
    assert text == ["0", "0|1", "", "1"]
    np.testing.assert_array_equal(parse_sets(text, ["0", "1"]), sets)
    # a CSV column of single-class sets comes back from pandas as floats with NaN
    np.testing.assert_array_equal(parse_sets([0.0, 1.0, float("nan")], ["0", "1"]),
                                  [[True, False], [False, True], [False, False]])
    with pytest.raises(DataError, match="'2' is not one of the model's classes"):
        parse_sets(["2"], ["0", "1"])


@pytest.mark.parametrize("alpha", [0, 1, 1.5, -0.1, "a lot", None])
def test_alpha_outside_zero_one_is_a_clean_error(alpha: object) -> None:
    with pytest.raises(ConfigError, match=r"strictly between 0 and 1"):
        ConformalSets(alpha)  # type: ignore[arg-type]


def test_a_class_absent_from_the_validation_rows_is_named() -> None:
    with pytest.raises(DataError, match=r"no row of class \['malignant'\].*valid_size"):
        check_calibration_classes(["benign"] * 5, ["benign", "malignant"])
    with pytest.raises(DataError, match=r"no row of class \['b'\].*conformal_alpha: null"):
        ConformalSets(0.1).fit(np.array([[0.9, 0.1]] * 4), [0, 0, 0, 0], class_names=["a", "b"])


def test_too_few_validation_rows_warn_with_the_count() -> None:
    sets = ConformalSets(0.1).fit(np.array([[0.8, 0.2]] * 3 + [[0.3, 0.7]] * 20),
                                  [0] * 3 + [1] * 20, class_names=["neg", "pos"])
    assert len(sets.warnings_) == 1 and "'neg': 3 validation rows" in sets.warnings_[0]
    assert "fewer than the 9" in sets.warnings_[0]
    assert sets.predict(np.array([[0.01, 0.99]]))[0, 0]  # so "neg" is in every set
    choice = choose_temperature(np.array([[0.8, 0.2], [0.3, 0.7]] * 10), [0, 1] * 10)
    assert "only 20 validation rows" in choice["warning"]


def test_a_temperature_that_does_not_help_out_of_sample_is_declined() -> None:
    # exactly calibrated: in each group of 50 rows with P(1) = p, 50 p rows are positive
    p1 = np.repeat([0.1, 0.3, 0.7, 0.9], 50)
    y = np.concatenate([np.r_[np.ones(int(50 * p)), np.zeros(50 - int(50 * p))]
                        for p in (0.1, 0.3, 0.7, 0.9)]).astype(int)
    choice = choose_temperature(np.c_[1 - p1, p1], y)
    assert choice["cv_ece_raw"] == pytest.approx(0.0, abs=1e-9)
    assert choice["kept"] is False and choice["temperature"] == 1.0
    assert choice["reason"].startswith("declined") and "200 validation rows" in choice["reason"]
    assert choice["cv_ece_scaled"] >= choice["cv_ece_raw"]


@pytest.fixture(scope="module")
def fitted(tiny_dir: Path) -> tuple[FusionClassifier, pd.DataFrame]:
    spec = DataSpec.model_validate({"target": "label", "group": "patient",
                                    "positive": "malignant", **ALL})
    df, _ = load_table(tiny_dir / "data.csv", spec)
    clf = FusionClassifier(spec, seed=0, **FAST).fit(df.iloc[:14], df.iloc[14:20])
    return clf, df


def test_a_fitted_model_gives_sets_in_predictions_and_metrics(
    fitted: tuple[FusionClassifier, pd.DataFrame], tmp_path: Path,
) -> None:
    clf, df = fitted
    with pytest.warns(CalibrationWarning, match=r"fewer than the 9 that alpha=0\.1 needs"):
        clf.calibrate(df.iloc[14:20], conformal_alpha=0.1)
    metrics, preds = evaluate(clf, df.iloc[20:])
    assert {"prediction_set", "abstain"} <= set(preds.columns)
    sizes = preds["prediction_set"].fillna("").map(lambda s: len(s.split("|")) if s else 0)
    assert (preds["abstain"] == (sizes != 1)).all()
    c = metrics["conformal"]
    assert c["alpha"] == 0.1 and c["n"] == len(preds)
    assert set(c["class_coverage"]) == {"benign", "malignant"}
    assert c["calibration_warnings"] and "validation rows" in c["calibration_warnings"][0]
    assert metrics["calibration"]["reason"].startswith(("kept", "declined"))
    # the sets and the decision survive save / load
    clf.save(tmp_path / "m")
    back = FusionClassifier.load(tmp_path / "m")
    np.testing.assert_array_equal(back.prediction_sets(df), clf.prediction_sets(df))


def test_a_model_saved_before_sets_existed_loads_and_says_so(
    fitted: tuple[FusionClassifier, pd.DataFrame], tmp_path: Path,
) -> None:
    clf, df = fitted
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CalibrationWarning)
        clf.calibrate(df.iloc[14:20], conformal_alpha=0.1)
    clf.save(tmp_path / "old")
    meta_path = tmp_path / "old" / "estimator.json"
    meta = json.loads(meta_path.read_text())
    for key in ("conformal", "calibration"):  # what a model of the previous release holds
        meta["decision"].pop(key)
    meta_path.write_text(json.dumps(meta))
    from medfuse.io import write_manifest

    write_manifest(tmp_path / "old", [p.name for p in (tmp_path / "old").iterdir()
                                      if p.is_file() and p.name != "manifest.json"])
    old = FusionClassifier.load(tmp_path / "old")
    assert old.conformal_ is None and old.prediction_sets(df) is None
    metrics, preds = evaluate(old, df)
    assert "conformal" not in metrics and "prediction_set" not in preds.columns
    assert "no conformal calibration" in NO_CONFORMAL and "retrain" in NO_CONFORMAL


def test_sets_of_a_model_without_a_modality_are_calibrated_per_subset(tiny_dir: Path) -> None:
    spec = DataSpec.model_validate({"target": "label", "group": "patient",
                                    "positive": "malignant", **ALL,
                                    "policy": {"missing_image": "keep"}})
    df, _ = load_table(tiny_dir / "data.csv", spec)
    clf = FusionClassifier(spec, seed=0, modality_dropout=0.3, **FAST).fit(df.iloc[:14],
                                                                          df.iloc[14:20])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CalibrationWarning)
        clf.fit_conformal(df.iloc[14:20], 0.2)
    calibrated = set(clf.conformal_["subsets"])  # type: ignore[index]
    assert calibrated == {"image+tabular+text", "image+tabular", "image+text",
                          "tabular+text", "image", "tabular", "text"}
    test = df.iloc[20:].copy()
    test.loc[test.index[:2], "note"] = ""
    names = clf.available_modalities(test)
    assert list(names[:2]) == ["image+tabular"] * 2 and names[2] == "image+tabular+text"
    preds = predictions_frame(clf, test, clf.predict_proba(test))
    assert list(preds["modalities"]) == list(names)
    metrics, _ = evaluate(clf, test)
    assert set(metrics["conformal"]["by_modalities"]) == set(names)


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "medfuse.cli", *args], capture_output=True,
                          text=True, timeout=900, env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_train_and_predict_write_sets_and_say_what_they_cover(
    tiny_config: Path, tiny_dir: Path, tmp_path: Path,
) -> None:
    res = run_cli("train", str(tiny_config), "--out", str(tmp_path / "r"))
    assert res.returncode == 0, res.stderr
    out = " ".join(res.stdout.split())
    assert "conformal sets (alpha 0.1): coverage" in out and "temperature " in out
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert {"coverage", "class_coverage", "mean_set_size", "abstain_rate"} <= set(
        metrics["conformal"])
    report = (tmp_path / "r" / "report.html").read_text()
    assert 'id="uncertainty"' in report and "prediction sets at alpha 0.1" in report
    assert 'id="temperature-decision"' in report
    # predict: the sets of a saved model, and how many rows to refer
    res = run_cli("predict", str(tmp_path / "r"), "--data", str(tiny_dir / "data.csv"),
                  "--out", str(tmp_path / "p.csv"))
    assert res.returncode == 0, res.stderr
    assert "abstain" in pd.read_csv(tmp_path / "p.csv").columns
    assert "rows abstain" in res.stdout
    res = run_cli("evaluate", str(tmp_path / "r"), "--data", str(tiny_dir / "data.csv"),
                  "--out", str(tmp_path / "ev"))
    assert res.returncode == 0, res.stderr
    assert "conformal sets (alpha 0.1)" in " ".join(res.stdout.split())
    assert json.loads((tmp_path / "ev" / "metrics.json").read_text())["conformal"]["n"] == 25
    # an alpha out of range is refused before anything trains, naming the key
    res = run_cli("train", str(tiny_config), "--out", str(tmp_path / "bad"),
                  "--set", "evaluation.conformal_alpha=1.5")
    assert res.returncode == 2 and "evaluation.conformal_alpha" in res.stderr
    assert "Traceback" not in res.stderr


def test_cv_pools_out_of_fold_sets_and_warns_for_a_fold_without_a_class(
    tiny_config: Path, tmp_path: Path,
) -> None:
    # 25 rows, 3 folds, valid_size 0.1: some folds' validation rows are one patient of one
    # class, so those folds warn and make no sets; the others' sets are pooled
    res = run_cli("cv", str(tiny_config), "--folds", "3", "--out", str(tmp_path / "cv"),
                  "--set", "evaluation.conformal_alpha=0.2")
    assert res.returncode == 0, res.stderr
    summary = json.loads((tmp_path / "cv" / "cv_metrics.json").read_text())
    conformal = summary["conformal"]
    skipped = conformal["folds_without_sets"]
    assert skipped and len(skipped) < 3
    assert [f["fold"] for f in summary["folds"] if "conformal" not in f] == skipped
    err = " ".join(res.stderr.split())
    assert f"fold {skipped[0]}'s validation rows hold no row of class" in err
    assert "Raise data.split.valid_size" in err and "makes no prediction sets" in err
    oof = pd.read_csv(tmp_path / "cv" / "predictions.csv", dtype={"prediction_set": str})
    with_sets = oof[~oof["fold"].isin(skipped)]
    assert len(with_sets) == conformal["n"] > 0
    sets = parse_sets(with_sets["prediction_set"].tolist(), ["benign", "malignant"])
    y = (with_sets["label"] == "malignant").astype(int).to_numpy()
    assert conformal["coverage"] == pytest.approx(sets[np.arange(len(y)), y].mean())
    assert conformal["alpha"] == 0.2
    assert "out of fold, conformal sets (alpha 0.2)" in " ".join(res.stdout.split())
    assert 'id="uncertainty"' in (tmp_path / "cv" / "report.html").read_text()


def test_hybrid_cv_calibrates_its_frozen_head_by_cross_validation(tiny_config: Path,
                                                                  tmp_path: Path) -> None:
    res = run_cli("cv", str(tiny_config), "--folds", "2", "--out", str(tmp_path / "h"),
                  "--set", "model.kind=hybrid", "--set", "model.head=lr",
                  "--set", "evaluation.conformal_alpha=0.3")
    assert res.returncode == 0, res.stderr
    summary = json.loads((tmp_path / "h" / "cv_metrics.json").read_text())
    assert summary["conformal"]["n"] == 25
    assert "prediction_set" in pd.read_csv(tmp_path / "h" / "predictions.csv").columns


@pytest.mark.parametrize("kind", ["fused", "hybrid"])
def test_multi_class_sets_for_fused_and_hybrid_models(tiny_dir: Path, tmp_path: Path,
                                                      kind: str) -> None:
    from medfuse.estimators.hybrid import HybridClassifier

    raw = pd.read_csv(tiny_dir / "data.csv")
    raw["grade"] = [("low", "mid", "high")[i % 3] for i in range(len(raw))]
    raw["image"] = [str(tiny_dir / p) for p in raw["image"]]
    raw.to_csv(tmp_path / "graded.csv", index=False)
    spec = DataSpec.model_validate({"target": "grade", "group": "patient", **ALL,
                                    "allow_outside_paths": True})
    df, _ = load_table(tmp_path / "graded.csv", spec)
    if kind == "fused":
        clf: object = FusionClassifier(spec, seed=0, **FAST).fit(df.iloc[:16], df.iloc[16:])
    else:
        clf = HybridClassifier(spec, head="lr", cache_dir=str(tmp_path / "c"),
                               image_backbone="small_cnn", pretrained="none", image_size=32,
                               min_token_freq=1).fit(df.iloc[:16])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CalibrationWarning)
        clf.calibrate(df.iloc[16:], conformal_alpha=0.3)  # type: ignore[attr-defined]
    metrics, preds = evaluate(clf, df)  # type: ignore[arg-type]
    assert set(metrics["conformal"]["class_coverage"]) == {"high", "low", "mid"}
    parsed = parse_sets(preds["prediction_set"].tolist(), clf.classes_)  # type: ignore[attr-defined]
    assert parsed.shape == (len(df), 3)
    assert (preds["abstain"] == (parsed.sum(1) != 1)).all()
