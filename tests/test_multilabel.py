"""Multi-label targets: several findings per row (``data.targets`` / ``data.label_sep``).

Spec and table errors, grouped stratified folds, the fused and hybrid fits, per-label
evaluation and label audit, and the CLI (cv, train, explain, serve) end to end.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from medfuse.config import DataSpec
from medfuse.data.labels import multi_hot
from medfuse.data.splits import group_labels, kfold_splits
from medfuse.data.validation import validate_table
from medfuse.errors import ConfigError, DataError, DataValidationError
from medfuse.estimators import FusionClassifier
from medfuse.estimators.hybrid import HybridClassifier
from medfuse.evaluation.evaluate import evaluate
from medfuse.evaluation.label_audit import label_audit
from medfuse.scoring.metrics import multilabel_metrics

FINDINGS = ["fever", "rash", "fracture"]
TABULAR = {"temp": "continuous", "xray": "continuous", "site": "categorical"}


def make_table(n: int = 160, seed: int = 0) -> pd.DataFrame:
    """Three learnable findings: fever (temp), rash (a word of the note), fracture (xray
    and site); two rows per patient."""
    rng = np.random.default_rng(seed)
    temp = rng.normal(37.5, 1.0, n)
    xray = rng.normal(0.0, 1.0, n)
    site = rng.choice(["arm", "leg", "chest"], n)
    rash = rng.random(n) < 0.4
    words = np.array(["itchy", "pain", "swelling", "mild", "since", "monday", "left"])
    notes = [" ".join(rng.choice(words, 4)) + (" red rash" if r else " no skin change")
             for r in rash]
    return pd.DataFrame({
        "patient": [f"p{i // 2}" for i in range(n)], "temp": temp, "xray": xray,
        "site": site, "note": notes,
        "fever": (temp > 37.8).astype(int), "rash": rash.astype(int),
        "fracture": ((xray > 0.6) | ((site == "arm") & (xray > 0.0))).astype(int),
    })


def spec(**extra: Any) -> DataSpec:
    return DataSpec.model_validate({"tabular": TABULAR, "text": "note", "targets": FINDINGS,
                                    "group": "patient", **extra})


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    return make_table()


# ------------------------------------------------------------------ the spec and the table


@pytest.mark.parametrize(("data", "says"), [
    ({"targets": []}, "data.targets"),
    ({"targets": ["a", "b"], "label_sep": ";"}, "label_sep"),
    ({"targets": ["a", "a"]}, "'a'"),
    ({"targets": ["a|b", "c"]}, "|"),
    ({"targets": ["a", "b"], "positive": "a"}, "positive"),
    ({"target": "labels", "label_sep": ""}, "label_sep"),
])
def test_bad_multilabel_specs_name_the_parameter(data: dict[str, Any], says: str,
                                                 tmp_path: Path) -> None:
    from medfuse.config import load_config

    path = tmp_path / "bad.yaml"
    path.write_text(json.dumps({"data": {"table": "t.csv", "tabular": {"x": "continuous"},
                                         **data}}))  # JSON is YAML
    with pytest.raises(ConfigError, match="data") as err:
        load_config(path)
    assert says in str(err.value)


def test_targets_join_into_one_label_column(table: pd.DataFrame) -> None:
    s = spec()
    assert s.multilabel and s.target == "labels" and s.columns()["target:fever"] == "fever"
    clean, _ = validate_table(table, s, check_images="none")
    first = table.iloc[0]
    expected = "|".join(f for f in FINDINGS if first[f] == 1)
    assert clean[s.target].iloc[0] == expected
    # validating a validated table again is a no-op, not a column conflict
    again, _ = validate_table(clean, s, check_images="none")
    assert again[s.target].tolist() == clean[s.target].tolist()


def test_a_cell_that_is_not_0_or_1_is_an_error_naming_row_and_column(
        table: pd.DataFrame) -> None:
    bad = table.copy()
    bad["rash"] = bad["rash"].astype(object)
    bad.loc[7, "rash"] = "maybe"
    with pytest.raises(DataValidationError) as err:
        validate_table(bad, spec(), check_images="none")
    text = str(err.value)
    assert "bad_label" in text and "row 7" in text and "'rash'" in text and "maybe" in text


def test_a_label_never_present_is_an_error_naming_it(table: pd.DataFrame) -> None:
    none = table.assign(rash=0)
    with pytest.raises(DataValidationError, match="rash"):
        validate_table(none, spec(), check_images="none")


def test_label_sep_column_and_a_separator_that_never_occurs(table: pd.DataFrame) -> None:
    joined = table.assign(findings=[";".join(f for f in FINDINGS if r[f]) for _, r in
                                    table.iterrows()]).drop(columns=FINDINGS)
    s = DataSpec.model_validate({"tabular": TABULAR, "text": "note", "target": "findings",
                                 "label_sep": ";", "group": "patient"})
    clean, _ = validate_table(joined, s, check_images="none")
    hot = multi_hot(clean["findings"].fillna(""), FINDINGS, ";", "findings")
    np.testing.assert_array_equal(hot, table[FINDINGS].to_numpy())
    wrong = s.model_copy(update={"label_sep": ","})
    with pytest.raises(DataValidationError, match="never occurs"):
        validate_table(joined, wrong, check_images="none")


# ------------------------------------------------------------------ folds


def test_folds_are_grouped_and_stratified_on_every_label(table: pd.DataFrame) -> None:
    s = spec()
    clean, _ = validate_table(table, s, check_images="none")
    folds, _ = kfold_splits(clean, s, 4, seed=0)
    again, _ = kfold_splits(clean, s, 4, seed=0)
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(folds, again, strict=True))
    assert sorted(np.concatenate([te for _, te in folds]).tolist()) == list(range(len(clean)))
    groups, _ = group_labels(clean, s)
    prevalence = clean[FINDINGS].mean().to_numpy()
    for train, test in folds:
        assert not set(groups[train]) & set(groups[test])
        share = clean.iloc[test][FINDINGS].mean().to_numpy()
        assert np.all(np.abs(share - prevalence) < 0.12), (share, prevalence)


def test_a_label_of_one_patient_cannot_be_cross_validated(table: pd.DataFrame,
                                                          tmp_path: Path) -> None:
    from medfuse.config import RunConfig
    from medfuse.runs import cv_run

    rare = table.assign(rash=0)
    rare.loc[[0, 1], "rash"] = 1  # patient p0 holds every rash
    rare.to_csv(tmp_path / "rare.csv", index=False)
    cfg = RunConfig.model_validate({"data": {**spec().model_dump(exclude_none=True),
                                             "table": str(tmp_path / "rare.csv")},
                                    "model": {"kind": "hybrid", "text_features": "tfidf"}})
    with pytest.raises(DataError, match=r"never have label 'rash'.*1 group") as err:
        cv_run(cfg, 3, tmp_path / "cv")
    assert "fewer folds" in str(err.value)
    assert not (tmp_path / "cv" / "fold0").exists()  # refused before any fold trained


# ------------------------------------------------------------------ models


def test_metrics_macro_and_micro_match_sklearn() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, size=(80, 3))
    p = np.clip(y * 0.6 + rng.random((80, 3)) * 0.5, 0, 1)
    m = multilabel_metrics(y, p, [0.5, 0.4, 0.6], ["a", "b", "c"])
    per = [roc_auc_score(y[:, j], p[:, j]) for j in range(3)]
    assert m["roc_auc"] == pytest.approx(np.mean(per))
    assert m["roc_auc_micro"] == pytest.approx(roc_auc_score(y.ravel(), p.ravel()))
    assert m["per_label"]["b"]["threshold"] == pytest.approx(0.4)
    assert m["subset_accuracy"] == pytest.approx(
        float(((p >= [0.5, 0.4, 0.6]).astype(int) == y).all(axis=1).mean()))


def test_fused_fit_evaluate_save_and_load(table: pd.DataFrame, tmp_path: Path) -> None:
    s = spec()
    train, valid, test = table.iloc[:100], table.iloc[100:130], table.iloc[130:]
    clf = FusionClassifier(s, max_epochs=2, progress=False, min_token_freq=1, embed_dim=16,
                           hidden_dims=(16,), seed=0).fit(train, valid)
    clf.calibrate(valid, conformal_alpha=0.1)  # no sets for multi-label: skipped, said so
    assert clf.conformal_ is None and len(clf.thresholds) == 3
    proba = clf.predict_proba(test)
    assert proba.shape == (len(test), 3) and np.all((proba >= 0) & (proba <= 1))
    assert not np.allclose(proba.sum(axis=1), 1.0)  # one sigmoid per label, not a softmax
    metrics, preds = evaluate(clf, test, bootstrap=50, subgroups={"site": "categorical"})
    assert set(metrics["per_label"]) == set(FINDINGS)
    aucs = [metrics["per_label"][f]["roc_auc"] for f in FINDINGS]
    assert metrics["roc_auc"] == pytest.approx(np.mean(aucs))
    assert {"prob_fever", "pred_rash", "prediction"} <= set(preds.columns)
    assert {r["label"] for r in metrics["subgroups"]} == set(FINDINGS)
    clf.save(tmp_path / "m")
    back = FusionClassifier.load(tmp_path / "m")
    np.testing.assert_allclose(back.predict_proba(test), proba, atol=1e-6)
    np.testing.assert_array_equal(back.decide(proba), clf.decide(proba))


@pytest.mark.parametrize(("head", "resample"), [("lr", "smote"), ("xgboost", "none")])
def test_hybrid_heads_one_per_label(table: pd.DataFrame, tmp_path: Path, head: str,
                                    resample: str) -> None:
    s = spec()
    clf = HybridClassifier(s, head=head, resample=resample, text_features="tfidf", seed=0)
    clf.fit(table.iloc[:120])
    proba = clf.predict_proba(table.iloc[120:])
    assert proba.shape == (40, 3)
    metrics, _ = evaluate(clf, table.iloc[120:])
    assert metrics["per_label"]["rash"]["roc_auc"] > 0.9  # the word is in the note
    clf.save(tmp_path / head)
    back = HybridClassifier.load(tmp_path / head)
    np.testing.assert_allclose(back.predict_proba(table.iloc[120:]), proba)


def test_xgboost_cannot_resample_a_multilabel_target(table: pd.DataFrame) -> None:
    clf = HybridClassifier(spec(), head="xgboost", resample="smote", text_features="tfidf")
    with pytest.raises(ConfigError, match="resample='none'"):
        clf.fit(table.iloc[:120])


def test_label_audit_flags_a_flipped_label_and_says_which() -> None:
    rng = np.random.default_rng(0)
    hot = (rng.random((120, 2)) < 0.4).astype(int)
    proba = np.clip(0.25 + 0.5 * hot + rng.normal(0, 0.12, hot.shape), 0.01, 0.99)
    hot[5, 1], proba[5, 1] = 1, 0.02  # labelled b, and the model is sure it is not
    given = ["|".join(n for n, h in zip(["a", "b"], row, strict=True) if h) for row in hot]
    oof = pd.DataFrame({"y": given, "row": range(120), "split_group": range(120),
                        "prob_a": proba[:, 0], "prob_b": proba[:, 1],
                        "pred_a": (proba[:, 0] >= 0.5).astype(int),
                        "pred_b": (proba[:, 1] >= 0.5).astype(int)})
    table, _, summary = label_audit(oof, "y")
    top = table.iloc[0]
    assert int(top["row"]) == 5 and bool(top["is_issue"]) and top["suspect_labels"] == "b"
    assert summary["multilabel"] and summary["by_label"]["b"]["issues"] >= 1


# ------------------------------------------------------------------ CLI, end to end


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "medfuse.cli", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("multilabel")
    make_table().to_csv(root / "data.csv", index=False)
    (root / "hybrid.yaml").write_text(f"""
name: findings
data:
  table: data.csv
  tabular: {json.dumps(TABULAR)}
  text: note
  targets: {json.dumps(FINDINGS)}
  group: patient
model: {{kind: hybrid, head: lr, text_features: tfidf}}
""")
    (root / "fused.yaml").write_text(f"""
name: findings_fused
data:
  table: data.csv
  tabular: {json.dumps(TABULAR)}
  text: note
  targets: {json.dumps(FINDINGS)}
  group: patient
model: {{min_token_freq: 1, embed_dim: 16, hidden_dims: [16]}}
train: {{max_epochs: 2, batch_size: 16}}
""")
    return root


def test_cv_pools_every_label_with_cis(project: Path) -> None:
    res = run("cv", "hybrid.yaml", "--folds", "3", "--out", "cv", cwd=project)
    assert res.returncode == 0, res.stderr
    assert "per label, pooled out of fold" in res.stdout
    summary = json.loads((project / "cv" / "cv_metrics.json").read_text())
    pooled = summary["pooled"]
    assert set(pooled["per_label"]) == set(FINDINGS) and pooled["n"] == 160
    lo, hi = pooled["per_label"]["rash"]["ci95"]["roc_auc"]
    assert lo <= pooled["per_label"]["rash"]["roc_auc"] <= hi
    assert pooled["roc_auc"] == pytest.approx(
        np.mean([pooled["per_label"][f]["roc_auc"] for f in FINDINGS]))
    assert "conformal" not in summary
    issues = pd.read_csv(project / "cv" / "label_issues.csv")
    assert "suspect_labels" in issues.columns and len(issues) == 160
    assert summary["label_issues"]["multilabel"]
    html = (project / "cv" / "report.html").read_text()
    assert "Per label" in html and "roc_pr_per_label" not in html  # inlined as data: URI
    assert (project / "cv" / "plots" / "roc_pr_per_label.png").is_file()


@pytest.fixture(scope="module")
def fused_run(project: Path) -> Path:
    res = run("train", "fused.yaml", "--out", "run", cwd=project)
    assert res.returncode == 0, res.stderr
    assert "test rows, per label" in res.stdout
    return project / "run"


def test_train_and_explain_one_finding(fused_run: Path, project: Path) -> None:
    metrics = json.loads((fused_run / "metrics.json").read_text())
    assert set(metrics["thresholds"]) == set(FINDINGS) and "threshold" not in metrics
    res = run("explain", str(fused_run), "--data", "data.csv", "--out", "ex", "--rows", "2",
              "--label", "rash", cwd=project)
    assert res.returncode == 0, res.stderr
    doc = json.loads((project / "ex" / "explanations.json").read_text())
    assert all(r["label"] == "rash" and "predicted_labels" in r for r in doc["rows"])
    assert any(w["token"] == "rash" for r in doc["rows"] for w in r["words"])
    bad = run("explain", str(fused_run), "--data", "data.csv", "--out", "ex2", "--label",
              "nausea", cwd=project)
    assert bad.returncode != 0 and "not one of the model's labels" in bad.stderr


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server(fused_run: Path) -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "medfuse.cli", "serve", str(fused_run),
                             "--port", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env={**os.environ, "OMP_NUM_THREADS": "1"})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=15)


def test_served_findings_api_and_page(server: str, chromium_page: Any) -> None:
    info = httpx.get(f"{server}/api/model", timeout=30).json()
    assert info["multilabel"] and set(info["thresholds"]) == set(FINDINGS)
    answer = httpx.post(f"{server}/api/predict", timeout=120, data={
        "temp": "39.5", "xray": "1.5", "site": "arm", "text": "itchy red rash"}).json()
    assert [f["label"] for f in answer["findings"]] == FINDINGS
    present = [f["label"] for f in answer["findings"] if f["present"]]
    assert answer["predicted_labels"] == present and answer["prediction_set"] is None
    page = chromium_page
    page.goto(server + "/")
    page.fill("#f_temp", "39.5")
    page.fill("#f_xray", "1.5")
    page.select_option("#f_site", "arm")
    page.fill("#text", "itchy red rash")
    page.click("#submit")
    page.wait_for_selector("#findings", timeout=60_000)
    rows = page.inner_text("#findings")
    assert all(f in rows for f in FINDINGS) and ("present" in rows or "absent" in rows)
    assert page.inner_text("#explained") == answer["positive_class"] or page.inner_text(
        "#explained") in FINDINGS
    assert "%" in page.inner_text("#probability")
