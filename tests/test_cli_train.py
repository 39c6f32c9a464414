"""train / evaluate / predict / cv / demo end to end through a real subprocess."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from medfuse.perf import native_bf16

METRIC_KEYS = {"n", "accuracy", "balanced_accuracy", "precision_macro", "recall_macro",
               "f1_macro", "roc_auc", "pr_auc", "sensitivity", "specificity", "ece",
               "train_seconds", "peak_rss_mb"}


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    res = subprocess.run([sys.executable, "-m", "medfuse.cli", *args], capture_output=True,
                         text=True, env={**os.environ, **(env or {})}, timeout=600)
    return res


@pytest.fixture(scope="module")
def trained(tiny_config: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "tiny"
    res = run("train", str(tiny_config), "--out", str(out), "--set", "train.max_epochs=2")
    assert res.returncode == 0, res.stderr
    assert f"run directory: {out}" in res.stdout
    return out


def test_train_writes_the_run_directory(trained: Path) -> None:
    for name in ("config.yaml", "model.safetensors", "preprocess.json", "manifest.json",
                 "metrics.json", "predictions.csv", "estimator.json"):
        assert (trained / name).is_file(), name
    assert (trained / "logs" / "metrics.csv").is_file()
    assert (trained / "checkpoints" / "last.ckpt").is_file()
    metrics = json.loads((trained / "metrics.json").read_text())
    assert set(metrics) >= METRIC_KEYS
    assert metrics["epochs"] == 2 and metrics["n"] == len(pd.read_csv(trained / "predictions.csv"))
    assert metrics["precision"] == "32-true"  # the default; cv checks "auto" resolved
    assert "max_epochs: 2" in (trained / "config.yaml").read_text()


def test_train_writes_report_ci_and_calibrated_threshold(trained: Path) -> None:
    metrics = json.loads((trained / "metrics.json").read_text())
    assert set(metrics["ci95"]) >= {"accuracy", "roc_auc", "sensitivity", "specificity"}
    for lo_hi in metrics["ci95"].values():
        assert lo_hi is None or lo_hi[0] <= lo_hi[1]
    meta = json.loads((trained / "estimator.json").read_text())
    assert meta["decision"]["threshold"] == metrics["threshold"]
    assert meta["decision"]["temperature"] > 0
    html = (trained / "report.html").read_text()
    for section in ("summary", "data", "training", "performance", "calibration", "model-card"):
        assert f'id="{section}"' in html
    assert (trained / "data_report.json").is_file()
    res = run("report", str(trained))
    assert res.returncode == 0 and "report.html" in res.stdout, res.stderr


def test_explain_writes_json_and_figures(trained: Path, tiny_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "why"
    res = run("explain", str(trained), "--data", str(tiny_dir / "data.csv"), "--rows", "2",
              "--out", str(out))
    assert res.returncode == 0, res.stderr
    rows = json.loads((out / "explanations.json").read_text())
    rows = rows["rows"] if isinstance(rows, dict) else rows
    assert len(rows) == 2
    for r in rows:
        assert set(r) >= {"prediction", "probability", "modalities", "regions", "words",
                          "features"}
        assert sum(r["modalities"].values()) == pytest.approx(1.0, abs=1e-6)
        assert {f["name"] for f in r["features"]} >= {"age"}
    assert (out / "index.html").is_file() and list(out.glob("row*_image.png"))


def test_explain_a_hybrid_run(tiny_config: Path, tiny_dir: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "hybrid"
    res = run("train", str(tiny_config), "--out", str(run_dir), "--set", "model.kind=hybrid",
              "--set", "model.head=lr", "--set", "model.text_features=tfidf")
    assert res.returncode == 0, res.stderr
    out = tmp_path / "why"
    res = run("explain", str(run_dir), "--data", str(tiny_dir / "data.csv"), "--rows", "2",
              "--out", str(out))
    assert res.returncode == 0, res.stderr
    doc = json.loads((out / "explanations.json").read_text())
    assert doc["estimator"] == "HybridClassifier" and len(doc["rows"]) == 2
    for r in doc["rows"]:
        assert sum(r["modalities"].values()) == pytest.approx(1.0, abs=1e-6)
        assert r["words"] and r["features"]
    assert (out / "index.html").is_file() and len(list(out.glob("row*_image.png"))) == 2


def test_evaluate_and_predict(trained: Path, tiny_dir: Path, tmp_path: Path) -> None:
    res = run("evaluate", str(trained), "--data", str(tiny_dir / "data.csv"), "--out",
              str(tmp_path / "ev"))
    assert res.returncode == 0, res.stderr
    assert json.loads((tmp_path / "ev" / "metrics.json").read_text())["n"] == 25
    unlabeled = pd.read_csv(tiny_dir / "data.csv").drop(columns="label")
    unlabeled.to_csv(tiny_dir / "unlabeled.csv", index=False)
    res = run("predict", str(trained), "--data", str(tiny_dir / "unlabeled.csv"), "--out",
              str(tmp_path / "p.csv"))
    assert res.returncode == 0, res.stderr
    preds = pd.read_csv(tmp_path / "p.csv")
    assert len(preds) == 25 and {"prob_benign", "prob_malignant", "prediction"} <= set(preds)


def test_predict_errors_are_clean(trained: Path, tiny_dir: Path, tmp_path: Path) -> None:
    pd.read_csv(tiny_dir / "data.csv").drop(columns="age").to_csv(tmp_path / "t.csv", index=False)
    res = run("predict", str(trained), "--data", str(tmp_path / "t.csv"), "--out",
              str(tmp_path / "p.csv"))
    assert res.returncode == 2 and "column 'age'" in res.stderr and "Traceback" not in res.stderr
    res = run("predict", str(tmp_path / "norun"), "--data", str(tmp_path / "t.csv"), "--out",
              str(tmp_path / "p.csv"))
    assert res.returncode == 2 and "does not exist" in res.stderr


def test_resume_continues_training(trained: Path, tiny_config: Path, tmp_path: Path) -> None:
    run_dir = shutil.copytree(trained, tmp_path / "tiny")  # the shared run stays as trained
    res = run("train", str(tiny_config), "--out", str(run_dir), "--resume",
              "--set", "train.max_epochs=3", "--set", "train.patience=5")
    assert res.returncode == 0, res.stderr
    assert json.loads((run_dir / "metrics.json").read_text())["epochs"] == 3
    from medfuse.runs import load_model

    load_model(run_dir)  # the rebuilt report.html is no part of the manifest


def test_cv(tiny_config: Path, tmp_path: Path) -> None:
    res = run("cv", str(tiny_config), "--folds", "3", "--out", str(tmp_path / "cv"),
              "--set", "train.precision=auto")
    assert res.returncode == 0, res.stderr
    summary = json.loads((tmp_path / "cv" / "cv_metrics.json").read_text())
    assert len(summary["folds"]) == 3 and {"accuracy", "roc_auc"} <= set(summary["mean"])
    # precision "auto" depends on the CPU, so each fold records what it trained in
    resolved = "bf16-mixed" if native_bf16() else "32-true"
    assert [f["precision"] for f in summary["folds"]] == [resolved] * 3
    oof = pd.read_csv(tmp_path / "cv" / "predictions.csv")
    assert sorted(oof["row"]) == list(range(25))
    # one split group per patient, each whole inside one fold
    per_patient = oof.groupby("patient")[["split_group", "fold"]].nunique()
    assert (per_patient == 1).all().all() and oof["split_group"].nunique() == len(per_patient)
    families = pd.read_csv(tmp_path / "cv" / "error_families.csv")
    wrong = oof[oof["label"] != oof["prediction"]]
    assert families["wrong"].sum() == len(wrong) == summary["error_families"]["errors"]
    assert set(families["split_group"]) == set(wrong["split_group"])
    assert f"errors: {len(wrong)} of 25 rows" in " ".join(res.stdout.split())


def test_unknown_backbone_is_a_clean_error(tiny_config: Path, tmp_path: Path) -> None:
    res = run("train", str(tiny_config), "--out", str(tmp_path / "r"),
              "--set", "model.image_backbone=efficientnet_b9")
    assert res.returncode == 2 and "efficientnet_b9" in res.stderr
    assert "Traceback" not in res.stderr


def test_demo(tmp_path: Path) -> None:
    res = run("demo", "--out", str(tmp_path / "demo"), "--set", "train.max_epochs=1",
              env={"MEDFUSE_HOME": str(tmp_path)})
    assert res.returncode == 0, res.stderr
    assert str(tmp_path / "demo") in res.stdout and "roc_auc=" in res.stdout
    assert (tmp_path / "demo" / "metrics.json").is_file()


def test_cv_resume_keeps_finished_folds_and_refuses_another_config(
    tiny_config: Path, tmp_path: Path,
) -> None:
    out = tmp_path / "cv"
    assert run("cv", str(tiny_config), "--folds", "3", "--out", str(out)).returncode == 0
    first = json.loads((out / "cv_metrics.json").read_text())
    oof_first = pd.read_csv(out / "predictions.csv")
    kept = {i: (out / f"fold{i}" / "checkpoints" / "last.ckpt").stat().st_mtime_ns
            for i in (0, 1)}
    # as if killed during fold 2's training: its checkpoint is there, its result is not
    (out / "cv_metrics.json").unlink()
    fold2 = json.loads((out / "fold2" / "cv_fold.json").read_text())
    (out / "fold2" / "cv_fold.json").write_text(json.dumps({"key": fold2["key"],
                                                            "finished": False}))
    res = run("cv", str(tiny_config), "--folds", "3", "--out", str(out), "--resume")
    assert res.returncode == 0, res.stderr
    assert "fold 0: finished by an earlier run" in res.stderr + res.stdout
    for i, mtime in kept.items():  # folds 0 and 1 were read back, not trained again
        assert (out / f"fold{i}" / "checkpoints" / "last.ckpt").stat().st_mtime_ns == mtime
    assert "fold 2: continuing its training from" in res.stderr + res.stdout
    again = json.loads((out / "cv_metrics.json").read_text())
    assert again["folds"][:2] == first["folds"][:2]
    timing = {"train_seconds", "peak_rss_mb"}
    assert ({k: v for k, v in again["folds"][2].items() if k not in timing}
            == {k: v for k, v in first["folds"][2].items() if k not in timing})
    pd.testing.assert_frame_equal(pd.read_csv(out / "predictions.csv"), oof_first)

    res = run("cv", str(tiny_config), "--folds", "3", "--out", str(out), "--resume",
              "--set", "train.lr=0.01")
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "fold0" in res.stderr and "another" in res.stderr and "--resume" in res.stderr


def test_cv_only_runs_some_folds_and_the_rest_completes_the_summary(
    tiny_config: Path, tmp_path: Path,
) -> None:
    out = tmp_path / "cv"
    res = run("cv", str(tiny_config), "--folds", "3", "--out", str(out), "--only", "2,0")
    assert res.returncode == 0, res.stderr
    assert "fold(s) 1 not finished" in res.stdout
    assert not (out / "cv_metrics.json").exists() and not (out / "fold1").exists()
    kept = {i: (out / f"fold{i}" / "checkpoints" / "last.ckpt").stat().st_mtime_ns
            for i in (0, 2)}
    res = run("cv", str(tiny_config), "--folds", "3", "--out", str(out), "--only", "1")
    assert res.returncode == 0, res.stderr
    summary = json.loads((out / "cv_metrics.json").read_text())
    assert [f["fold"] for f in summary["folds"]] == [0, 1, 2]
    for i, mtime in kept.items():  # read back, not trained again
        assert (out / f"fold{i}" / "checkpoints" / "last.ckpt").stat().st_mtime_ns == mtime
    oof = pd.read_csv(out / "predictions.csv")  # every row once, out of fold
    assert sorted(oof["row"]) == list(range(summary["groups"]["n_rows"]))
    for bad, words in (("3", "numbered 0 to 2"), ("1,x", "comma")):
        res = run("cv", str(tiny_config), "--folds", "3", "--out", str(out), "--only", bad)
        assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
        assert "--only" in res.stderr + res.stdout and words in res.stderr + res.stdout
