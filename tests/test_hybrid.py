"""Deep hybrid learning: features + classical heads, cache, leakage, save / load."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from medfuse.config import DataSpec, ModelSpec, RunConfig, TrainSpec
from medfuse.data import load_table
from medfuse.errors import ConfigError, NotFittedError
from medfuse.hybrid import FeatureCache, HybridClassifier, extract_image_features, make_head
from medfuse.io import RunDirError

FAST: dict[str, Any] = dict(image_backbone="small_cnn", pretrained="none", image_size=32,
                            min_token_freq=1, progress=False, batch_size=8)
ALL = {"image": "image", "tabular": {"age": "continuous", "sex": "categorical"},
       "text": "note"}


def _data(tiny_dir: Path, modalities: dict[str, Any] = ALL) -> tuple[pd.DataFrame, DataSpec]:
    spec = DataSpec.model_validate(
        {"target": "label", "group": "patient", "positive": "malignant", **modalities}
    )
    df, _ = load_table(tiny_dir / "data.csv", spec)
    return df, spec


@pytest.mark.parametrize("head", ["lr", "rf", "adaboost", "xgboost", "svm"])
def test_every_head_fits_all_modalities(tiny_dir: Path, tmp_path: Path, head: str) -> None:
    df, spec = _data(tiny_dir)
    clf = HybridClassifier(spec, head=head, cache_dir=str(tmp_path), **FAST).fit(df)
    proba = clf.predict_proba(df)
    assert proba.shape == (len(df), 2)
    np.testing.assert_allclose(proba.sum(1), 1.0, atol=1e-6)
    assert clf.classes_ == ["benign", "malignant"]
    # the text ("grown" vs "stable") separates the classes: every head must find it
    assert (clf.predict(df) == df["label"].to_numpy()).mean() >= 0.9


@pytest.mark.parametrize(
    ("text_features", "components"), [("tfidf", 0), ("tfidf", 4), ("word2vec", 0), ("minilm", 0)]
)
def test_text_feature_kinds(tiny_dir: Path, text_features: str, components: int) -> None:
    df, spec = _data(tiny_dir, {"tabular": {"age": "continuous"}, "text": "note"})
    clf = HybridClassifier(spec, text_features=text_features, text_components=components,
                           embed_dim=8, **FAST).fit(df)
    X = clf.transform(df)
    width = {("tfidf", 4): 1 + 4, ("word2vec", 0): 1 + 8, ("minilm", 0): 1 + 384}
    if (text_features, components) in width:
        assert X.shape == (len(df), width[(text_features, components)])
    assert (clf.predict(df) == df["label"].to_numpy()).mean() >= 0.9


@pytest.mark.parametrize("head", ["lr", "xgboost"])
def test_save_load_identical_predictions_without_pickle(
    tiny_dir: Path, tmp_path: Path, head: str
) -> None:
    df, spec = _data(tiny_dir)
    clf = HybridClassifier(spec, head=head, resample="oversample", cache_dir=str(tmp_path / "c"),
                           **FAST).fit(df)
    run = clf.save(tmp_path / "run")
    names = {p.name for p in run.iterdir()}
    assert {"estimator.json", "preprocess.json", "manifest.json", "text.skops"} <= names
    assert ("head.xgb.json" in names) == (head == "xgboost")
    assert not [n for n in names if n.endswith((".pkl", ".pickle", ".joblib"))]
    loaded = HybridClassifier.load(run)
    np.testing.assert_array_equal(loaded.predict_proba(df), clf.predict_proba(df))
    assert "resample" not in dict(loaded.head_.steps)  # resampling is a fit-time step only
    # an altered file is refused before anything is read
    (run / "preprocess.json").write_text((run / "preprocess.json").read_text() + " ")
    with pytest.raises(RunDirError, match=r"preprocess\.json"):
        HybridClassifier.load(run)


class Foreign:  # a type skops must not be allowed to build
    pass


def test_frozen_gem_mirror_features_round_trip(tiny_dir: Path, tmp_path: Path) -> None:
    df, spec = _data(tiny_dir, {"image": "image", "tabular": {"age": "continuous"}})
    kw = {**FAST, "image_backbone": "resnet18", "cache_dir": str(tmp_path / "c")}
    clf = HybridClassifier(spec, image_pool="gem", image_views="hflip", **kw).fit(df)
    plain = HybridClassifier(spec, **kw).fit(df)
    assert clf.image_encoder_.pool == "gem" and clf.image_encoder_.views == "hflip"
    # the cache keys differ: the plain model did not reuse the gem / mirror features
    assert not np.allclose(clf.transform(df)[:, :512], plain.transform(df)[:, :512])
    loaded = HybridClassifier.load(clf.save(tmp_path / "run"))
    assert (loaded.image_pool, loaded.image_views) == ("gem", "hflip")
    np.testing.assert_array_equal(loaded.predict_proba(df), clf.predict_proba(df))


def test_frozen_dihedral_features_ignore_flips_and_quarter_turns(
    tiny_dir: Path, tmp_path: Path, image_mover: Any
) -> None:
    from PIL import Image

    df, spec = _data(tiny_dir, {"image": "image", "tabular": {"age": "continuous"}})
    df = df[df["image"].str.endswith(".png")].reset_index(drop=True)  # lossless copies
    moves = [Image.Transpose.ROTATE_90, Image.Transpose.TRANSPOSE, Image.Transpose.FLIP_TOP_BOTTOM]
    turned = image_mover(df, tmp_path / "turned", moves)["image"].tolist()
    kw = {**FAST, "image_backbone": "resnet18", "cache_dir": str(tmp_path / "c")}
    clf = HybridClassifier(spec, image_views="dihedral", **kw).fit(df)  # onnxruntime, fp32
    np.testing.assert_allclose(clf.transform(df.assign(image=turned)), clf.transform(df),
                               atol=1e-4)
    mirror = HybridClassifier(spec, image_views="hflip", **kw).fit(df)
    assert not np.allclose(mirror.transform(df.assign(image=turned)), mirror.transform(df),
                           atol=1e-4)


def test_skops_files_with_foreign_types_are_refused(tiny_dir: Path, tmp_path: Path) -> None:
    import skops.io as sio

    from medfuse.io import write_manifest

    df, spec = _data(tiny_dir, {"tabular": {"age": "continuous"}, "text": "note"})
    run = HybridClassifier(spec, **FAST).fit(df).save(tmp_path / "run")
    sio.dump({"x": Foreign()}, run / "text.skops")
    write_manifest(run, [p.name for p in run.iterdir() if p.name != "manifest.json"])
    with pytest.raises(RunDirError, match=r"refusing to load types.*Foreign"):
        HybridClassifier.load(run)


def test_trained_extractor_round_trip(tiny_dir: Path, tmp_path: Path) -> None:
    df, spec = _data(tiny_dir, {"image": "image"})
    clf = HybridClassifier(spec, extractor="trained", image_size=32, max_epochs=1,
                           progress=False, batch_size=8)
    clf.fit(df.iloc[:18], df.iloc[18:], run_dir=tmp_path / "fit")
    assert clf.backbone_ == "small_cnn" and clf.weights_ == "none"  # the trained-mode default
    assert (tmp_path / "fit" / "extractor" / "logs" / "metrics.csv").is_file()
    run = clf.save(tmp_path / "run")
    assert (run / "extractor" / "model.safetensors").is_file()
    loaded = HybridClassifier.load(run)
    np.testing.assert_allclose(loaded.predict_proba(df), clf.predict_proba(df), atol=1e-6)


def test_extractor_trained_on_tabular_too(tiny_dir: Path, tmp_path: Path) -> None:
    df, spec = _data(tiny_dir, {"tabular": {"age": "continuous", "sex": "categorical"},
                                "text": "note"})
    kw: dict[str, Any] = dict(extractor="trained", text_features="none", max_epochs=1,
                              min_token_freq=1, progress=False, batch_size=8)
    deep = HybridClassifier(spec, **kw).fit(df.iloc[:18], df.iloc[18:])
    both = HybridClassifier(spec, extractor_tabular=True, **kw).fit(df.iloc[:18], df.iloc[18:])
    assert set(deep.extractor_model_.model_.encoders) == {"text"}
    assert set(both.extractor_model_.model_.encoders) == {"text", "tabular"}
    tab_width = both.extractor_model_.model_.encoders["tabular"].output_dim
    assert both.transform(df).shape[1] == deep.transform(df).shape[1] + tab_width
    loaded = HybridClassifier.load(both.save(tmp_path / "run"))
    assert loaded.extractor_tabular
    np.testing.assert_allclose(loaded.predict_proba(df), both.predict_proba(df), atol=1e-6)


def test_feature_cache_extracts_each_image_once(tiny_dir: Path, tmp_path: Path) -> None:
    from medfuse.encoders.image import ImageEncoder

    df, _ = _data(tiny_dir, {"image": "image"})
    paths = df["image"].tolist()
    enc = ImageEncoder("small_cnn", pretrained="none", image_size=32, freeze=True)
    calls: list[int] = []
    enc.register_forward_hook(lambda m, i, o: calls.append(len(i[0])))
    cache = FeatureCache(tmp_path, {"backbone": "small_cnn", "weights": "w1"})
    first = extract_image_features(enc, enc.transform, paths, cache, progress=False)
    assert sum(calls) == len(set(paths))
    second = extract_image_features(enc, enc.transform, paths, cache, progress=False)
    assert sum(calls) == len(set(paths))  # nothing recomputed
    np.testing.assert_array_equal(first, second)
    # another key (e.g. other weights) is another cache
    other = FeatureCache(tmp_path, {"backbone": "small_cnn", "weights": "w2"})
    assert other.dir != cache.dir and other.get("0" * 40) is None


def test_estimator_reuses_cache_across_heads(tiny_dir: Path, tmp_path: Path) -> None:
    df, spec = _data(tiny_dir, {"image": "image"})
    HybridClassifier(spec, cache_dir=str(tmp_path), **FAST).fit(df)
    cached = list(tmp_path.rglob("*.npy"))
    assert len(cached) == len(df)
    mtimes = {p: p.stat().st_mtime_ns for p in cached}
    HybridClassifier(spec, head="rf", cache_dir=str(tmp_path), **FAST).fit(df)
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.npy")} == mtimes


def test_extractor_fine_tunes_minilm_beside_the_word_cnn(tiny_dir: Path, tmp_path: Path) -> None:
    from medfuse.encoders.text import MiniLMEncoder

    df, spec = _data(tiny_dir, {"tabular": {"age": "continuous"}, "text": "note"})
    kw: dict[str, Any] = dict(extractor="trained", text_features="none", max_epochs=1,
                              min_token_freq=1, progress=False, batch_size=8, embed_dim=8)
    clf = HybridClassifier(spec, text_encoder="wordcnn+minilm", finetune_text=True,
                           encoder_lr=1e-4, **kw).fit(df.iloc[:18], df.iloc[18:])
    text = clf.extractor_model_.model_.encoders["text"]
    minilm = next(m for m in text.modules() if isinstance(m, MiniLMEncoder))
    # trained in-fold: MiniLM's layers moved away from the shipped weights
    before = MiniLMEncoder().model.encoder.layer[0].attention.self.query.weight
    assert not torch.equal(minilm.model.encoder.layer[0].attention.self.query.weight, before)
    assert clf.transform(df).shape[1] == 1 + text.output_dim  # age + both text encoders
    assert text.output_dim > 384
    loaded = HybridClassifier.load(clf.save(tmp_path / "run"))
    assert (loaded.text_encoder, loaded.finetune_text) == ("wordcnn+minilm", True)
    np.testing.assert_allclose(loaded.predict_proba(df), clf.predict_proba(df), atol=1e-5)
    from medfuse.explain import explain

    (entry,) = explain(loaded, df, rows=[0])
    assert entry["words"] and set(entry["modalities"]) == {"tabular", "text"}
    with pytest.raises(ConfigError, match=r"extractor='frozen' trains none"):
        HybridClassifier(spec, text_encoder="minilm", **FAST).fit(df)
    with pytest.raises(ConfigError, match=r"finetune_text=True fine-tunes MiniLM"):
        HybridClassifier(spec, finetune_text=True, **kw).fit(df)
    with pytest.raises(ConfigError, match=r"'text_encoder'.*Did you mean 'minilm'"):
        HybridClassifier(spec, text_encoder="minilmm", **kw).fit(df)


def test_bad_params_name_the_parameter(tiny_dir: Path) -> None:
    df, spec = _data(tiny_dir, {"tabular": {"age": "continuous"}})
    with pytest.raises(ConfigError, match=r"'head'.*Did you mean 'xgboost'"):
        HybridClassifier(spec, head="xgbost", **FAST).fit(df)
    with pytest.raises(ConfigError, match=r"'resample'.*'smote'"):
        HybridClassifier(spec, resample="smoot", **FAST).fit(df)
    with pytest.raises(ConfigError, match="bad head_params for head 'lr'"):
        make_head("lr", {"n_trees": 3})
    with pytest.raises(ConfigError, match=r"'extractor_tabular'.*True or False"):
        HybridClassifier(spec, extractor="trained", extractor_tabular="yes", **FAST).fit(df)
    with pytest.raises(ConfigError, match=r"extractor='frozen' trains no network"):
        HybridClassifier(spec, extractor_tabular=True, **FAST).fit(df)
    with pytest.raises(NotFittedError):
        HybridClassifier(spec).predict(df)


def _cfg(tiny_dir: Path, **model: Any) -> RunConfig:
    data = DataSpec(table=str(tiny_dir / "data.csv"), target="label", group="patient",
                    positive="malignant", **ALL)  # type: ignore[arg-type]
    return RunConfig(
        data=data,
        model=ModelSpec(kind="hybrid", image_backbone="small_cnn", pretrained="none",
                        image_size=32, min_token_freq=1, **model),
        train=TrainSpec(max_epochs=1, batch_size=8),
    )


def test_smote_and_trained_extractor_never_see_test_rows(
    tiny_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from imblearn.over_sampling import SMOTE

    from medfuse.data import kfold_splits, load_data
    from medfuse.data.splits import group_labels
    from medfuse.estimators import FusionClassifier
    from medfuse.runs import cv_run

    cfg = _cfg(tiny_dir, extractor="trained", resample="smote",
               head_params={}, text_components=0)
    seen_by_smote: list[np.ndarray] = []
    seen_by_cnn: list[set[str]] = []
    real_resample, real_fit = SMOTE.fit_resample, FusionClassifier.fit

    def spy_resample(self: Any, X: Any, y: Any, **kw: Any) -> Any:
        seen_by_smote.append(np.asarray(X.todense() if hasattr(X, "todense") else X))
        return real_resample(self, X, y, **kw)

    def spy_fit(self: Any, train: pd.DataFrame, valid: Any = None, **kw: Any) -> Any:
        seen_by_cnn.append(set(train[self.spec.image]) | set(
            valid[self.spec.image] if valid is not None else []))
        return real_fit(self, train, valid, **kw)

    monkeypatch.setattr(SMOTE, "fit_resample", spy_resample)
    monkeypatch.setattr(FusionClassifier, "fit", spy_fit)
    monkeypatch.setattr(HybridClassifier, "transform", _recording_transform(seen_test := []))
    cv_run(cfg, folds=3, out=tmp_path / "cv", heads=["lr", "rf"])

    df, _ = load_data(cfg.data)
    groups, _ = group_labels(df, cfg.data)
    splits, _ = kfold_splits(df, cfg.data, 3, seed=0, groups=groups)
    assert len(seen_by_cnn) == 3 and len(seen_by_smote) == 6  # one CNN per fold, SMOTE per head
    for i, (_, test_idx) in enumerate(splits):
        test_images = set(df[cfg.data.image].iloc[test_idx])
        assert not seen_by_cnn[i] & test_images, "the in-fold CNN saw test images"
        X_test = seen_test[i]
        for X_seen in seen_by_smote[2 * i: 2 * i + 2]:
            # no test row's feature vector is among SMOTE's inputs
            hits = (np.abs(X_seen[:, None, :] - X_test[None, :, :]).max(-1) < 1e-9).any()
            assert not hits, "SMOTE saw a test-fold row"
            # the head (and SMOTE) trains on the rows the CNN trained on: the fold minus
            # the validation rows carved for the CNN's early stopping
            assert len(df) // 2 <= len(X_seen) < len(df) - len(test_idx)


def _recording_transform(store: list[np.ndarray]) -> Any:
    real = HybridClassifier.transform

    def transform(self: HybridClassifier, df: pd.DataFrame) -> Any:
        X = real(self, df)
        store.append(np.asarray(X.todense() if hasattr(X, "todense") else X))
        return X

    return transform


def test_cli_cv_heads_then_train_and_predict(tiny_dir: Path, tmp_path: Path) -> None:
    cfg = _cfg(tiny_dir)
    path = tmp_path / "hybrid.yaml"
    path.write_text(cfg.to_yaml())
    env_cmd = [sys.executable, "-m", "medfuse.cli"]
    out = subprocess.run(
        [*env_cmd, "cv", str(path), "--folds", "3", "--heads", "lr,xgboost", "--out",
         str(tmp_path / "cv")], capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert "heads on the same 3 folds" in out.stdout
    summary = json.loads((tmp_path / "cv" / "cv_metrics.json").read_text())
    assert set(summary["heads"]) == {"lr", "xgboost"}
    assert len(summary["heads"]["xgboost"]["folds"]) == 3
    table = pd.read_csv(tmp_path / "cv" / "heads.csv")
    assert table["head"].tolist() == ["lr", "xgboost"]
    assert (table["fit_seconds"] > 0).all() and table["accuracy"].between(0, 1).all()

    run = tmp_path / "run"
    out = subprocess.run([*env_cmd, "train", str(path), "--out", str(run)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["train_seconds"] > 0 and 0 <= metrics["accuracy"] <= 1
    out = subprocess.run([*env_cmd, "predict", str(run), "--data", str(tiny_dir / "data.csv"),
                          "--out", str(tmp_path / "p.csv")], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert len(pd.read_csv(tmp_path / "p.csv")) == 25


def test_cli_heads_need_a_hybrid_config(tiny_dir: Path, tmp_path: Path) -> None:
    from medfuse.runs import cv_run

    cfg = _cfg(tiny_dir).model_copy(update={"model": ModelSpec(kind="fusion")})
    with pytest.raises(ConfigError, match=r"model\.kind='fusion'"):
        cv_run(cfg, 3, tmp_path, heads=["lr"])


def test_bf16_features_match_fp32(tiny_dir: Path) -> None:
    from medfuse.encoders.image import ImageEncoder
    from medfuse.hybrid import bf16_supported

    if not bf16_supported():
        pytest.skip("no native bf16 on this CPU")
    df, _ = _data(tiny_dir, {"image": "image"})
    torch.manual_seed(0)
    enc = ImageEncoder("small_cnn", pretrained="none", image_size=32, freeze=True)
    a = extract_image_features(enc, enc.transform, df["image"].tolist(), progress=False)
    b = extract_image_features(enc, enc.transform, df["image"].tolist(), bf16=True,
                               progress=False)
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12)
    assert cos.min() > 0.99


def test_cv_resume_reads_every_head_of_a_finished_fold_back(tiny_dir: Path,
                                                             tmp_path: Path) -> None:
    from medfuse.runs import FOLD_FILE, cv_run

    cfg = _cfg(tiny_dir)
    first = cv_run(cfg, 3, tmp_path, heads=["lr", "xgboost"])
    oof = pd.read_csv(tmp_path / "predictions.csv")
    (tmp_path / "fold1" / FOLD_FILE).unlink()  # fold 1 never finished: it runs again
    kept = json.loads((tmp_path / "fold0" / FOLD_FILE).read_text())
    kept["results"]["xgboost"]["fit_seconds"] = 1234.5  # marks what is read back
    (tmp_path / "fold0" / FOLD_FILE).write_text(json.dumps(kept))
    again = cv_run(cfg, 3, tmp_path, heads=["lr", "xgboost"], resume=True)
    assert again["heads"]["xgboost"]["folds"][0]["fit_seconds"] == 1234.5
    assert again["heads"]["xgboost"]["folds"][1]["fit_seconds"] < 1000
    for head in ("lr", "xgboost"):
        a, b = first["heads"][head]["folds"], again["heads"][head]["folds"]
        assert a[2] == b[2]
        assert a[1]["roc_auc"] == b[1]["roc_auc"] and a[1]["accuracy"] == b[1]["accuracy"]
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "predictions.csv"), oof)
    with pytest.raises(ConfigError, match="another config, fold count, head list"):
        cv_run(cfg, 3, tmp_path, heads=["lr"], resume=True)
