"""The label audit: cleanlab on out-of-fold probabilities, families, training around issues."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from medfuse.config import DataSpec, ModelSpec, RunConfig, TrainSpec
from medfuse.errors import DataError
from medfuse.evaluation.label_audit import (
    ISSUE_COLUMNS,
    issue_families,
    label_audit,
    pool_predictions,
)
from medfuse.scoring.label_issues import find_issues


def _oof(n: int = 300, k: int = 2, flip: float = 0.05, seed: int = 0
         ) -> tuple[pd.DataFrame, np.ndarray]:
    """Out-of-fold-like predictions of a decent model, with a share of labels flipped."""
    rng = np.random.default_rng(seed)
    true = rng.integers(0, k, n)
    logits = rng.normal(0, 1, (n, k))
    logits[np.arange(n), true] += 3.0
    proba = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    flipped = rng.random(n) < flip
    given = np.where(flipped, (true + rng.integers(1, k, n)) % k, true)
    classes = [f"c{j}" for j in range(k)]
    frame = pd.DataFrame({"y": np.array(classes)[given], "row": np.arange(n),
                          "split_group": np.arange(n) // 3, "fold": np.arange(n) % 5})
    for j, c in enumerate(classes):
        frame[f"prob_{c}"] = proba[:, j]
    frame["prediction"] = np.array(classes)[proba.argmax(1)]
    return frame, np.flatnonzero(flipped)


@pytest.mark.parametrize("k", [2, 4])
def test_flipped_labels_are_found_first(k: int) -> None:
    frame, flipped = _oof(k=k)
    table, families, summary = label_audit(frame, target="y")
    assert list(table.columns[:len(ISSUE_COLUMNS)]) == ISSUE_COLUMNS
    assert sorted(table["row"]) == list(range(len(frame)))  # one row per table row
    flagged = set(table.loc[table["is_issue"], "row"])
    recall = len(flagged & set(flipped)) / len(flipped)
    precision = len(flagged & set(flipped)) / max(1, len(flagged))
    assert recall >= 0.8 and precision >= 0.6, (recall, precision)
    # most suspect first: issues before the rest, each part by rising quality
    issues = table[table["is_issue"]]
    assert table["is_issue"].iloc[:len(issues)].all()
    assert issues["quality"].is_monotonic_increasing
    assert summary["issues"] == len(flagged) and summary["rows"] == len(frame)
    assert sum(v["issues"] for v in summary["by_label"].values()) == len(flagged)
    assert families["issues"].sum() == len(flagged)
    assert families["issues"].is_monotonic_decreasing


def test_a_family_mostly_flagged_is_flagged_whole() -> None:
    frame, _ = _oof(n=300, seed=1)
    family = frame["split_group"] == 10  # rows 30-32: two look like the other class
    frame.loc[family, "y"] = "c0"
    frame.loc[family, ["prob_c0", "prob_c1"]] = [[.01, .99], [.02, .98], [.6, .4]]
    table, _, summary = label_audit(frame, target="y")
    rows = table[table["split_group"] == 10]
    assert rows["is_issue"].sum() == 2 and rows["family_issue"].all()
    alone = table[~table["split_group"].isin(
        table.loc[table["family_issue"], "split_group"])]
    assert not alone["family_issue"].any()
    assert summary["cleanup"]["family_rows"] == int(table["family_issue"].sum())


def test_pooling_two_models_weighs_each_by_its_accuracy() -> None:
    good, _ = _oof(n=200, seed=2)
    weak = good.copy()
    weak[["prob_c0", "prob_c1"]] = 0.5 + 0.2 * np.random.default_rng(3).normal(
        size=(200, 1)).clip(-2, 2) * [1, -1]
    weak = weak.sample(frac=1.0, random_state=0)  # another file: rows in another order
    pooled, members = pool_predictions([("a.csv", good), ("b.csv", weak)], "y")
    acc = [m["accuracy"] for m in members]
    assert acc[0] > acc[1] and [m["source"] for m in members] == ["a.csv", "b.csv"]
    w = np.array(acc) / sum(acc)
    back = weak.set_index("row").loc[good["row"]]
    np.testing.assert_allclose(pooled["prob_c1"], w[0] * good["prob_c1"]
                               + w[1] * back["prob_c1"].to_numpy(), atol=1e-4)
    assert pooled["row"].tolist() == good["row"].tolist()
    # a holdout run's test rows pooled with a cross-validation of the whole table
    part, _ = pool_predictions([("test.csv", good.iloc[50:120]), ("cv.csv", weak)], "y")
    assert part["row"].tolist() == good["row"].iloc[50:120].tolist()
    # a model pooled with itself audits as it does alone
    alone, _, _ = label_audit(good, target="y")
    twice, _, _ = label_audit(pool_predictions([("a", good), ("a", good)], "y")[0], "y")
    pd.testing.assert_frame_equal(alone, twice)


def test_pooling_multilabel_predictions_audits_them() -> None:
    rng = np.random.default_rng(4)
    hot = rng.random((60, 2)) < 0.5
    hot[0] = [True, False]
    labels = ["|".join(n for n, h in zip("ab", r, strict=True) if h) for r in hot]
    frame = pd.DataFrame({"y": labels,
                          "row": range(60), "split_group": range(60)})
    for j, c in enumerate("ab"):
        frame[f"prob_{c}"] = np.where(hot[:, j], 0.9, 0.1)
    frame.loc[0, "prob_a"] = 0.02  # row 0 is labelled "a"; the model disagrees
    other = frame.copy()
    other[["prob_a", "prob_b"]] = other[["prob_a", "prob_b"]] * 0.8 + 0.1
    for f in (frame, other):
        for c in "ab":
            f[f"pred_{c}"] = (f[f"prob_{c}"] >= 0.5).astype(int)
    pooled, members = pool_predictions([("a", frame), ("b", other)], "y")
    assert [m["accuracy"] for m in members] == [round(119 / 120, 4)] * 2
    assert pooled.loc[0, "pred_a"] == 0 and pooled.loc[1:, "pred_a"].eq(hot[1:, 0]).all()
    table, _, summary = label_audit(pooled, "y")
    assert summary["multilabel"] and table.iloc[0]["row"] == 0


@pytest.mark.parametrize("change, message", [
    (lambda f: f.assign(y=f["y"].where(f["row"] != 7, "c9")), "row 7: labelled 'c9'"),
    (lambda f: f[f["row"] != 5], "no prediction for row 5"),
    (lambda f: f.rename(columns={"prob_c1": "prob_c2"}), "probability columns"),
    (lambda f: f.drop(columns="row"), "no 'row' column"),
    (lambda f: pd.concat([f, f.head(1)]), "row 0: predicted twice"),
])
def test_pooling_refuses_predictions_of_another_table(change: Any, message: str) -> None:
    frame, _ = _oof(n=20)
    with pytest.raises(DataError, match=message.replace("(", r"\(")):
        pool_predictions([("a.csv", frame), ("b.csv", change(frame))], "y")


def test_quality_is_the_probability_of_the_given_label() -> None:
    frame, _ = _oof(n=40)
    table, _, _ = label_audit(frame, target="y")
    merged = table.merge(frame, on="row")
    given = np.where(merged["label"] == "c0", merged["prob_c0"], merged["prob_c1"])
    np.testing.assert_allclose(merged["quality"], given, atol=1e-6)
    assert (merged["suggested_label"] == merged["prediction"]).all()


def test_a_family_shares_one_answer() -> None:
    table = pd.DataFrame({
        "row": range(6), "label": ["a"] * 4 + ["b"] * 2, "suggested_label": ["b"] * 3 + ["a"] * 3,
        "quality": [.1, .2, .3, .9, .2, .8], "split_group": [7, 7, 7, 7, 8, 9],
        "is_issue": [True, True, True, False, True, False],
        "image": [f"/x/{i}.png" for i in range(6)],
    })
    fam = issue_families(table)
    assert fam[["split_group", "label", "n", "issues", "suggested_label"]].values.tolist() == [
        [7, "a", 4, 3, "b"], [8, "b", 1, 1, "a"]]  # a one-row family is a family too
    assert fam["images"].iloc[0] == "0.png 1.png 2.png 3.png"


def test_bad_predictions_are_clear_errors() -> None:
    frame, _ = _oof(n=20)
    with pytest.raises(DataError, match="no 'label' column"):
        label_audit(frame, target="label")
    with pytest.raises(DataError, match="no prob_<class> columns"):
        label_audit(frame.drop(columns=["prob_c0", "prob_c1"]), target="y")
    odd = frame.assign(y=["c9", *frame["y"].tolist()[1:]])
    with pytest.raises(DataError, match=r"row 0: label 'c9' has no probability column"):
        label_audit(odd, target="y")
    holes = frame.copy()
    holes.loc[3, "prob_c1"] = np.nan
    with pytest.raises(DataError, match="row 3 are not finite"):
        label_audit(holes, target="y")
    # no row / split_group columns (a holdout run's test predictions): positions, own groups
    table, _, summary = label_audit(frame.drop(columns=["row", "split_group"]), target="y")
    assert sorted(table["row"]) == list(range(20)) and summary["families"] == 20
    one = find_issues(np.zeros(5, dtype=int), np.tile([.9, .1], (5, 1)))
    assert not one.is_issue.any() and "only one class" in one.notes[0]
    assert len(find_issues(np.zeros(0, dtype=int), np.zeros((0, 2))).quality) == 0


def _noisy_table(root: Path, n: int = 240, flip: float = 0.08, seed: int = 0
                 ) -> tuple[Path, np.ndarray]:
    """A tabular-only table whose label follows two columns, with labels flipped at random."""
    rng = np.random.default_rng(seed)
    x1, x2 = rng.normal(0, 1, n), rng.normal(0, 1, n)
    true = (x1 + x2 > 0).astype(int)
    flipped = rng.random(n) < flip
    label = np.where(flipped, 1 - true, true)
    path = root / "noisy.csv"
    pd.DataFrame({"x1": x1 * 3, "x2": x2 * 3, "label": np.array(["neg", "pos"])[label]}
                 ).to_csv(path, index=False)
    return path, np.flatnonzero(flipped)


def _tabular_cfg(table: Path, kind: str, handling: str) -> RunConfig:
    data = DataSpec(table=str(table), tabular={"x1": "continuous", "x2": "continuous"},
                    target="label", positive="pos")
    return RunConfig(data=data, model=ModelSpec(kind=kind, hidden_dims=[8]),  # type: ignore[arg-type]
                     train=TrainSpec(max_epochs=2, batch_size=32,
                                     label_issues=handling))  # type: ignore[arg-type]


@pytest.mark.parametrize("handling", ["drop", "downweight"])
def test_cv_trains_around_issues_on_training_rows_only(
    handling: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from medfuse.estimators.hybrid import HybridClassifier
    from medfuse.runs import cv_run

    table, flipped = _noisy_table(tmp_path)
    seen: list[tuple[int, Any]] = []
    real = HybridClassifier.fit_head

    def spy(self: Any, X: Any, y: Any, *args: Any, **kw: Any) -> Any:
        seen.append((X.shape[0], kw.get("sample_weight")))
        return real(self, X, y, *args, **kw)

    monkeypatch.setattr(HybridClassifier, "fit_head", spy)
    summary = cv_run(_tabular_cfg(table, "hybrid", handling), folds=3, out=tmp_path / "cv")
    per_fold = [f["label_issues_train"] for f in summary["folds"]]
    assert all(f["handling"] == handling and f["flagged"] > 0 for f in per_fold)
    assert summary["label_issues"]["training"]["flagged_per_fold"] == [f["flagged"]
                                                                       for f in per_fold]
    for (rows, weight), f in zip(seen, per_fold, strict=True):
        if handling == "drop":  # the head never saw the flagged training rows
            assert rows == f["rows"] - f["flagged"] and weight is None
        else:
            assert rows == f["rows"] and (weight < 1).sum() == f["flagged"]
    # test rows are never dropped or relabelled: every row predicted once, labels as given
    oof = pd.read_csv(tmp_path / "cv" / "predictions.csv")
    given = pd.read_csv(table)["label"]
    assert sorted(oof["row"]) == list(range(len(given)))
    assert (oof.sort_values("row")["label"].to_numpy() == given.to_numpy()).all()
    issues = pd.read_csv(tmp_path / "cv" / "label_issues.csv")
    assert len(issues) == len(given)
    found = set(issues.loc[issues["is_issue"], "row"])
    assert len(found & set(flipped)) / len(flipped) >= 0.8
    audit = summary["label_issues"]
    assert audit["metrics_on_rows_not_flagged"]["n"] == len(given) - audit["issues"]
    assert (audit["metrics_on_rows_not_flagged"]["accuracy"]
            >= audit["metrics_on_all_rows"]["accuracy"])


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "medfuse.cli", *args], capture_output=True,
                          text=True, timeout=600)


def test_fused_cv_drops_flagged_rows_and_audit_rebuilds_an_old_cv(tmp_path: Path) -> None:
    table, _ = _noisy_table(tmp_path, n=150)
    cfg = tmp_path / "noisy.yaml"
    cfg.write_text(_tabular_cfg(table, "fusion", "keep").to_yaml())
    out = tmp_path / "cv"
    res = run_cli("cv", str(cfg), "--folds", "3", "--out", str(out),
                  "--set", "train.label_issues=drop")
    assert res.returncode == 0, res.stderr
    assert "label audit (cleanlab, out of fold)" in " ".join(res.stdout.split())
    summary = json.loads((out / "cv_metrics.json").read_text())
    assert all(f["label_issues_train"]["flagged"] > 0 for f in summary["folds"])
    first = pd.read_csv(out / "label_issues.csv")
    # a cross-validation from before the audit: no label_issues files nor summary entry
    (out / "label_issues.csv").unlink()
    (out / "label_issue_families.csv").unlink()
    del summary["label_issues"]
    (out / "cv_metrics.json").write_text(json.dumps(summary))
    res = run_cli("audit", str(out))
    assert res.returncode == 0, res.stderr
    pd.testing.assert_frame_equal(pd.read_csv(out / "label_issues.csv"), first)
    assert "label_issues" in json.loads((out / "cv_metrics.json").read_text())
    assert (out / "report.html").is_file()
    # pooled with another cross-validation of the same table (here: a copy of itself)
    shutil.copytree(out, tmp_path / "other")
    res = run_cli("audit", str(out), "--with", str(tmp_path / "other"))
    assert res.returncode == 0, res.stderr
    assert "2 models' probabilities pooled" in " ".join(res.stdout.split())
    pd.testing.assert_frame_equal(pd.read_csv(out / "label_issues.csv"), first)
    audit = json.loads((out / "cv_metrics.json").read_text())["label_issues"]
    assert len(audit["pooled_models"]) == 2
    res = run_cli("audit", str(out), "--with", str(tmp_path / "nowhere"))
    assert res.returncode == 2 and "has no predictions.csv" in res.stderr
    (tmp_path / "other" / "predictions.csv").write_text("")
    res = run_cli("audit", str(out), "--with", str(tmp_path / "other"))
    assert res.returncode == 2 and "could not be read" in res.stderr
    assert "Traceback" not in res.stderr
    # a folder without out-of-fold predictions: a clear message, no traceback
    (tmp_path / "empty").mkdir()
    res = run_cli("audit", str(tmp_path / "empty"))
    assert res.returncode == 2 and "no config.yaml" in res.stderr
    assert "Traceback" not in res.stderr


def test_train_drops_flagged_training_rows_and_audit_reads_its_test_rows(tmp_path: Path) -> None:
    table, _ = _noisy_table(tmp_path, n=200)
    cfg = tmp_path / "noisy.yaml"
    cfg.write_text(_tabular_cfg(table, "hybrid", "drop").to_yaml())
    out = tmp_path / "run"
    res = run_cli("train", str(cfg), "--out", str(out))
    assert res.returncode == 0, res.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    found = metrics["label_issues_train"]
    assert found["handling"] == "drop" and 0 < found["flagged"] < found["rows"]
    res = run_cli("audit", str(out))
    assert res.returncode == 0, res.stderr
    issues = pd.read_csv(out / "label_issues.csv")
    assert len(issues) == metrics["n"]  # the held-out test rows, each once
    audit = json.loads((out / "metrics.json").read_text())["label_issues"]
    assert "test rows only" in audit["rows_audited"]
    page = (out / "report.html").read_text()
    assert 'id="label-audit"' in page and "What the suspect rows say" in page
    # the run still loads: the manifest follows the files the audit rewrote
    res = run_cli("predict", str(out), "--data", str(table), "--out", str(tmp_path / "p.csv"))
    assert res.returncode == 0, res.stderr


def test_a_cv_interrupted_before_label_issues_existed_still_resumes() -> None:
    import hashlib

    import yaml

    from medfuse.runs.folds import _fold_key

    cfg = _tabular_cfg(Path("t.csv"), "hybrid", "keep")
    before = cfg.model_dump(mode="json")
    del before["train"]["label_issues"]  # the config as the previous release wrote it
    del before["evaluation"]["conformal_alpha"]  # (newer still: conformal sets)
    blob = json.dumps({"config": yaml.safe_dump(before, sort_keys=False), "folds": 3,
                       "heads": ["lr"], "test_rows": [1, 2]}, sort_keys=True)
    assert _fold_key(cfg, 3, ["lr"], np.array([1, 2])) == hashlib.sha256(blob.encode()).hexdigest()
    other_alpha = cfg.model_copy(update={"evaluation": cfg.evaluation.model_copy(
        update={"conformal_alpha": 0.2})})
    assert _fold_key(other_alpha, 3, ["lr"], np.array([1, 2])) != _fold_key(
        cfg, 3, ["lr"], np.array([1, 2]))
    dropping = _tabular_cfg(Path("t.csv"), "hybrid", "drop")
    assert _fold_key(dropping, 3, ["lr"], np.array([1, 2])) != _fold_key(cfg, 3, ["lr"],
                                                                          np.array([1, 2]))


def test_montage_of_rows_without_an_image() -> None:
    from medfuse.evaluation.label_audit import plot_montage

    table = pd.DataFrame({"image": [float("nan"), ""], "is_issue": [True, True], "row": [0, 1],
                          "label": ["0", "1"], "suggested_label": ["1", "0"],
                          "quality": [0.1, 0.2]})
    png = plot_montage(table)
    assert png is not None and png[:8] == b"\x89PNG\r\n\x1a\n"
