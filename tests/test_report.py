"""The data report (EDA) and the self-contained HTML report of a run directory."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from medfuse.config import DataSpec, RunConfig
from medfuse.errors import DataError
from medfuse.evaluation.report import (
    build_report,
    data_report,
    fmt,
    plot_confusion,
    plot_data_report,
    plot_learning_curves,
    plot_reliability,
    plot_roc_pr,
)
from medfuse.io import RunDirError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
ALL_SECTIONS = ("summary", "data", "training", "performance", "calibration", "subgroups",
                "ablation", "model-card")
WEIRD = '<b>&"site"'  # a column name full of HTML special characters


def _table(n: int = 60, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    label = np.where(rng.random(n) < 0.4, "malignant", "benign")
    site = rng.choice(["arm", "leg", "face"], n).astype(object)
    site[:3] = None
    age = rng.normal(50, 12, n) + 8 * (label == "malignant")
    age[5] = np.nan
    return pd.DataFrame({
        "patient": [f"P{i // 2:03d}" for i in range(n)],
        "image": [f"img/{i:03d}.png" for i in range(n)],
        WEIRD: site,
        "age": age,
        "label": label,
    })


def _spec() -> DataSpec:
    return DataSpec(image="image", tabular={WEIRD: "categorical", "age": "continuous"},
                    target="label", group="patient", positive="malignant")


def _metrics(n: int) -> dict[str, Any]:
    rng = np.random.default_rng(1)
    keys = ("accuracy", "balanced_accuracy", "precision_macro", "recall_macro", "f1_macro",
            "roc_auc", "pr_auc", "sensitivity", "specificity", "ppv", "npv", "brier", "ece")
    metrics: dict[str, Any] = {"n": n, **{k: float(rng.uniform(0.55, 0.95)) for k in keys}}
    metrics["brier"] = 0.1712345
    metrics["ece"] = 0.0456789
    metrics["threshold"] = 0.42
    metrics["ci95"] = {k: sorted([metrics[k] - 0.0712345, metrics[k] + 0.0587654])
                       for k in keys}
    metrics.update(
        train_seconds=12.34, peak_rss_mb=812.5, epochs=4,
        calibration={"temperature": 1.7321, "ece_before": 0.1234567, "ece_after": 0.0456789},
        data={"table": "derm.csv", "rows_in": 62, "rows_out": 60, "rows_dropped": 2,
              "dropped": {"missing_image": 2}, "kept_with_problems": {}},
        split={"n_rows": 60, "n_groups": 30, "duplicate_groups": 1, "duplicate_images": 2,
               "sizes": {"train": 40, "valid": 8, "test": 12}},
    )
    return metrics


def _predictions(df: pd.DataFrame, seed: int = 2) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    y = (df["label"] == "malignant").to_numpy()
    logit = 2.5 * (y - 0.5) + rng.normal(0, 1.2, len(df))
    raw = 1 / (1 + np.exp(-1.8 * logit))  # over-confident
    cal = 1 / (1 + np.exp(-logit))
    out = df[["patient", "image", "label"]].copy()
    out["prob_benign"], out["prob_malignant"] = 1 - cal, cal
    out["raw_prob_benign"], out["raw_prob_malignant"] = 1 - raw, raw
    out["prediction"] = np.where(cal >= 0.42, "malignant", "benign")
    return out


def _lightning_log(path: Path, epochs: int = 5) -> None:
    rows = ["epoch,step,train_loss,val_acc,val_auc,val_loss"]
    for e in range(epochs):
        step = 10 * (e + 1) - 1
        rows.append(f"{e},{step},,{0.6 + 0.05 * e},{0.65 + 0.05 * e},{0.7 - 0.08 * e}")
        rows.append(f"{e},{step},{0.75 - 0.1 * e},,,")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(rows) + "\n")


def _subgroups() -> list[dict[str, Any]]:
    return [
        {"column": WEIRD, "level": "arm", "n": 20, "positives": 8, "accuracy": 0.85,
         "roc_auc": 0.9, "sensitivity": 0.75, "specificity": 0.9167, "flagged": False},
        {"column": WEIRD, "level": "face", "n": 18, "positives": 7, "accuracy": 0.6111,
         "roc_auc": 0.62, "sensitivity": 0.4286, "specificity": 0.7273, "flagged": True},
        {"column": "age", "level": "[20.0, 45.0)", "n": 15, "positives": 4,
         "accuracy": 0.8, "roc_auc": None, "sensitivity": None, "specificity": 0.8,
         "flagged": False},
    ]


def _ablation() -> dict[str, Any]:
    def model(auc: float) -> dict[str, Any]:
        return {"n": 60, "accuracy": auc - 0.05, "roc_auc": auc, "pr_auc": auc - 0.1,
                "sensitivity": 0.7, "specificity": 0.8,
                "ci95": {"roc_auc": [auc - 0.06, auc + 0.05]}}

    return {"models": {"image": model(0.81), "tabular": model(0.7), "fused": model(0.86)},
            "comparison": {"best_single": "image", "delta_roc_auc": 0.05, "p_value": 0.0312,
                           "delta_ci95": [0.01, 0.09], "test": "DeLong (paired)"}}


def _write_run(root: Path, optional: bool = True) -> Path:
    run = root / "run"
    run.mkdir(parents=True)
    df = _table()
    (run / "metrics.json").write_text(json.dumps(_metrics(len(df)), indent=1))
    preds = _predictions(df)
    if not optional:
        preds = preds.drop(columns=[c for c in preds.columns if c.startswith("raw_prob_")])
    preds.to_csv(run / "predictions.csv", index=False)
    if optional:
        cfg = RunConfig(name="derm <test>", data=_spec())
        (run / "config.yaml").write_text(cfg.to_yaml())
        _lightning_log(run / "logs" / "metrics.csv")
        duplicates = {"groups": 30, "duplicate_groups": 1, "images_in_duplicate_groups": 2,
                      "hash_distance": 6}
        rep = data_report(df, _spec(), duplicates=duplicates)
        (run / "data_report.json").write_text(json.dumps(rep, indent=1))
        (run / "subgroups.json").write_text(json.dumps(_subgroups()))
        (run / "ablation.json").write_text(json.dumps(_ablation()))
    return run


def _section(page: str, sid: str) -> str:
    match = re.search(rf'<section id="{re.escape(sid)}">(.*?)</section>', page, re.S)
    assert match, f"section {sid} missing"
    return match.group(1)


@pytest.fixture(scope="module")
def full_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    run = _write_run(tmp_path_factory.mktemp("report"))
    out = build_report(run)
    return run, out.read_text(encoding="utf-8")


# ------------------------------------------------------------------------ data report


def test_data_report_counts_on_a_hand_made_frame() -> None:
    df = pd.DataFrame({
        "sex": ["F", "F", "M", "M", "M", None, " "],
        "age": [30, None, 50.0, 70, "n/a", 40, 60],
        "note": ["a b c", "a", None, "a b", "x y z w", "", "q"],
        "label": ["yes", "no", "yes", "yes", "no", "no", None],
    })
    spec = DataSpec(tabular={"sex": "categorical", "age": "continuous"}, text="note")
    rep = data_report(df, spec)
    json.dumps(rep)  # JSON-able
    assert rep["n_rows"] == 7
    assert rep["positive"] == "yes"  # last label in sorted order
    assert rep["class_balance"] == {"no": 3, "yes": 3}
    assert rep["missing"] == {"label": 1, "note": 2, "sex": 2, "age": 1}  # blank = missing
    rates = {r["level"]: (r["n"], r["positive_rate"])
             for r in rep["positive_rate_by_category"]["sex"]}
    assert rates == {"F": (2, 0.5), "M": (3, pytest.approx(2 / 3)), "(missing)": (1, 0.0)}
    assert [r["level"] for r in rep["positive_rate_by_category"]["sex"]][-1] == "(missing)"
    yes = rep["continuous_by_class"]["age"]["yes"]
    assert yes["n"] == 3 and yes["mean"] == pytest.approx(50.0) and yes["median"] == 50.0
    assert (yes["min"], yes["max"], yes["q1"], yes["q3"]) == (30.0, 70.0, 40.0, 60.0)
    assert yes["std"] == pytest.approx(20.0)
    assert rep["continuous_by_class"]["age"]["no"]["n"] == 1  # "n/a" and None dropped
    assert rep["continuous_by_class"]["age"]["no"]["std"] is None
    assert rep["text_length"]["yes"] == {"median_words": 2.5, "mean_words": 2.5}  # no None
    assert rep["text_length"]["no"] == {"median_words": 1.0, "mean_words": pytest.approx(5 / 3)}
    assert rep["duplicates"] is None

    as_no = data_report(df, spec.model_copy(update={"positive": "no"}), duplicates={"x": 1})
    rates_no = {r["level"]: r["positive_rate"]
                for r in as_no["positive_rate_by_category"]["sex"]}
    assert rates_no["F"] == 0.5 and rates_no["M"] == pytest.approx(1 / 3)
    assert as_no["duplicates"] == {"x": 1}


def test_data_report_names_absent_columns() -> None:
    df = pd.DataFrame({"label": ["a", "b"]})
    with pytest.raises(DataError, match="age"):
        data_report(df, DataSpec(tabular={"age": "continuous"}))


def test_fmt_uses_four_decimals() -> None:
    assert fmt(0.5) == "0.5000"
    assert fmt(np.float32(0.25)) == "0.2500"
    assert fmt(3) == "3" and fmt(np.int64(7)) == "7"
    assert fmt(None) == fmt(float("nan")) == "n/a"
    assert fmt(True) == "yes"


# ------------------------------------------------------------------------------ plots


def test_plots_return_png_bytes(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 80)
    score = np.clip(0.3 * y + rng.random(80) * 0.7, 0, 1)
    assert plot_roc_pr(y, score).startswith(PNG_MAGIC)
    assert plot_roc_pr(np.ones(5), np.linspace(0, 1, 5)).startswith(PNG_MAGIC)  # one class
    assert plot_reliability(y, score).startswith(PNG_MAGIC)
    assert plot_reliability(y, score, score**2, bins=5).startswith(PNG_MAGIC)
    labels = np.array(["a", "b", "$c$"])
    assert plot_confusion(labels[y], labels[1 - y], list(labels)).startswith(PNG_MAGIC)
    log = tmp_path / "logs" / "metrics.csv"
    assert plot_learning_curves(log) is None  # missing
    log.parent.mkdir()
    log.write_text("")
    assert plot_learning_curves(log) is None  # empty
    log.write_text("epoch,step,train_loss,val_loss\n")
    assert plot_learning_curves(log) is None  # header only
    _lightning_log(log)
    png = plot_learning_curves(log)
    assert png is not None and png.startswith(PNG_MAGIC)
    plots = plot_data_report(data_report(_table(), _spec()))
    titles = [t for t, _ in plots]
    assert titles == ["Class balance", f"Positive rate by {WEIRD}", "age by class"]
    assert all(p.startswith(PNG_MAGIC) for _, p in plots)


# ------------------------------------------------------------------------ HTML report


def test_report_is_a_single_self_contained_file(full_run: tuple[Path, str]) -> None:
    run, page = full_run
    assert (run / "report.html").is_file()
    assert page.startswith("<!DOCTYPE html>")
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page)
    assert "http://" not in page and "https://" not in page
    assert "<script" not in page.lower() and "<link" not in page.lower()
    sources = re.findall(r"<img\b[^>]*\bsrc=\"([^\"]*)\"", page)
    assert len(sources) == page.count("<img") >= 6
    assert all(s.startswith("data:image/png;base64,") for s in sources)
    for sid in ALL_SECTIONS:
        assert page.count(f'<section id="{sid}">') == 1
        assert "<h2>" in _section(page, sid)
    saved = sorted(p.name for p in (run / "plots").glob("*.png"))
    assert {"confusion.png", "learning_curves.png", "reliability.png", "roc_pr.png"} <= set(saved)
    assert sum(name.startswith("data_") for name in saved) == 3


def test_summary_shows_every_metric_of_metrics_json(full_run: tuple[Path, str]) -> None:
    run, page = full_run
    metrics = json.loads((run / "metrics.json").read_text())
    summary = _section(page, "summary")
    rows = dict(re.findall(r'<tr data-metric="([^"]+)">(.*?)</tr>', summary, re.S))
    numeric = {k: v for k, v in metrics.items()
               if isinstance(v, int | float) and not isinstance(v, bool)}
    assert set(numeric) <= set(rows)
    for key, value in numeric.items():
        cells = re.findall(r"<td[^>]*>(.*?)</td>", rows[key], re.S)
        assert cells[1] == fmt(value), key
        if key in metrics["ci95"]:
            lo, hi = metrics["ci95"][key]
            assert cells[2] == f"[{fmt(lo)}, {fmt(hi)}]", key
    assert fmt(metrics["roc_auc"]) == f"{metrics['roc_auc']:.4f}"


def test_sections_show_their_inputs(full_run: tuple[Path, str]) -> None:
    _, page = full_run
    subgroups = _section(page, "subgroups")
    flagged = re.findall(r'<tr class="flagged">(.*?)</tr>', subgroups, re.S)
    assert len(flagged) == 1 and "face" in flagged[0]
    assert subgroups.count("<tr") == 1 + len(_subgroups())  # header + rows
    ablation = _section(page, "ablation")
    assert "0.0312" in ablation and "+0.0500" in ablation and "DeLong" in ablation
    assert "[0.7500, 0.8600]" in ablation  # CI of the image model's ROC AUC
    calibration = _section(page, "calibration")
    assert "before" in calibration and "1.7321" in calibration and "0.1235" in calibration
    card = _section(page, "model-card")
    assert "not a diagnostic device" in card and "prospective" in card
    assert "image, tabular" in card and "benign, malignant" in card
    assert "face" in card  # the flagged subgroup is named among the limitations
    import medfuse

    assert medfuse.__version__ in card
    data = _section(page, "data")
    assert "(missing)" in data and "hash_distance" in data and "derm.csv" in data
    assert "not available" not in page


def test_user_strings_are_escaped(full_run: tuple[Path, str]) -> None:
    _, page = full_run
    assert WEIRD not in page
    assert "<b>" not in page
    assert html.escape(WEIRD) in _section(page, "data")
    assert html.escape(WEIRD) in _section(page, "subgroups")
    assert "derm &lt;test&gt;" in page  # the run name from config.yaml


def test_report_without_optional_files(tmp_path: Path) -> None:
    run = _write_run(tmp_path, optional=False)
    out = build_report(run, out=tmp_path / "elsewhere" / "r.html")
    assert out == tmp_path / "elsewhere" / "r.html" and out.is_file()
    assert not (run / "report.html").exists()
    page = out.read_text(encoding="utf-8")
    for sid in ALL_SECTIONS:
        if sid == "ablation":
            assert 'id="ablation"' not in page
        else:
            assert f'<section id="{sid}">' in page
    assert "not available for this run" in _section(page, "training")
    assert "not available for this run" in _section(page, "subgroups")
    assert "not available for this run" in _section(page, "data")
    # without config.yaml the target column is recognised from its values
    assert "<h3>Confusion matrix</h3>" in _section(page, "performance")
    assert (run / "plots" / "reliability.png").is_file()


def test_report_needs_metrics_and_predictions(tmp_path: Path) -> None:
    run = _write_run(tmp_path, optional=False)
    (run / "predictions.csv").unlink()
    with pytest.raises(RunDirError, match=r"predictions\.csv"):
        build_report(run)
    (run / "metrics.json").unlink()
    with pytest.raises(RunDirError, match=r"metrics\.json"):
        build_report(run)


# --------------------------------------------------------------------------- chromium


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is not installed")
def test_report_renders_in_chromium(full_run: tuple[Path, str], tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from PIL import Image

    # our own 5-Mpixel screenshot, whatever limit a service built in this process left
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)

    run, _ = full_run
    report = (run / "report.html").resolve()
    base = [
        "chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
        "--no-first-run", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}",
    ]
    shot = tmp_path / "shot.png"
    subprocess.run(
        [*base, f"--screenshot={shot}", "--window-size=1280,4000", report.as_uri()],
        check=True, timeout=60, capture_output=True,
    )
    assert shot.is_file()
    with Image.open(shot) as img:
        pixels = np.asarray(img.convert("L"), dtype=float)
    assert pixels.shape == (4000, 1280)
    assert pixels.var() > 0
    dom = subprocess.run(
        [*base, "--dump-dom", report.as_uri()],
        check=True, timeout=60, capture_output=True, text=True,
    ).stdout
    for sid in ALL_SECTIONS:
        assert f'id="{sid}"' in dom
