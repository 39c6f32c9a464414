"""Missing modalities: modality dropout, predicting without a modality, auxiliary losses,
gate weights, per-subset evaluation, and the CLI / service around them."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from medfuse.config import DataSpec
from medfuse.data import load_table
from medfuse.data.dataset import MultimodalDataset, presence
from medfuse.errors import ConfigError
from medfuse.estimators import FusionClassifier
from medfuse.fusion import FusionModel, drop_modalities

FAST = dict(
    image_backbone="small_cnn", pretrained="none", image_size=32, max_epochs=1, batch_size=8,
    min_token_freq=1, embed_dim=16, hidden_dims=(16,), progress=False,
)
ALL = {"image": "image", "tabular": {"age": "continuous", "sex": "categorical"},
       "text": "note"}


def _spec(**policy: str) -> DataSpec:
    return DataSpec.model_validate({"target": "label", "group": "patient",
                                    "positive": "malignant", **ALL,
                                    "policy": policy})


class _Const(torch.nn.Module):
    """An encoder whose features are a constant per modality (to see what fusion uses)."""

    def __init__(self, value: float, dim: int = 4) -> None:
        super().__init__()
        self.output_dim = dim
        self.value = value

    def forward(self, x: object) -> torch.Tensor:
        n = (x[0] if isinstance(x, tuple) else x).shape[0]  # type: ignore[index]
        return torch.full((n, self.output_dim), self.value)


def _model(fusion: str, **kw: object) -> FusionModel:
    return FusionModel({"image": _Const(1.0), "text": _Const(-1.0)}, 2, (8,), 0.0, fusion,
                       missing=True, **kw).eval()  # type: ignore[arg-type]


def _batch(present: list[list[float]]) -> dict[str, torch.Tensor]:
    n = len(present)
    return {"image": torch.zeros(n, 3, 8, 8), "text": torch.zeros(n, 5, dtype=torch.long),
            "present": torch.tensor(present)}


def test_drop_modalities_never_empties_a_row() -> None:
    torch.manual_seed(0)
    present = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 1.0]]).repeat(200, 1)
    kept = drop_modalities(present, 0.6)
    assert bool((kept <= present).all())  # never adds a modality a row lacks
    assert bool((kept.sum(1) >= 1).all())
    assert bool((kept[1::3] == present[1::3]).all())  # a row's only modality always stays
    # each kept w.p. 0.4, a row dropping all of them keeps all: 0.4 + 0.6 ** M per modality
    full, pair = kept[0::3].mean(), kept[2::3].sum(1).mean() / 2
    assert abs(float(full) - (0.4 + 0.6**3)) < 0.05
    assert abs(float(pair) - (0.4 + 0.6**2)) < 0.05


@pytest.mark.parametrize("fusion", ["concat", "gated", "late"])
def test_a_missing_modality_does_not_reach_the_head(fusion: str) -> None:
    torch.manual_seed(0)
    model = _model(fusion)
    with torch.no_grad():
        only_image = model(_batch([[1.0, 0.0]]))
        # the text features are different now, but the row has no text: same logits
        other_text = FusionModel({"image": _Const(1.0), "text": _Const(5.0)}, 2, (8,), 0.0,
                                 fusion, missing=True).eval()
        other_text.load_state_dict(model.state_dict())
        assert torch.allclose(other_text(_batch([[1.0, 0.0]])), only_image)
        assert not torch.allclose(other_text(_batch([[1.0, 1.0]])), model(_batch([[1.0, 1.0]])))


def test_gates_sum_to_one_over_present_modalities() -> None:
    model = _model("gated")
    with torch.no_grad():
        gates = model.gates(_batch([[1.0, 1.0], [1.0, 0.0], [0.0, 1.0]]))
    np.testing.assert_allclose(gates.sum(1).numpy(), 1.0, atol=1e-6)
    assert float(gates[1, 1]) == 0.0 and float(gates[2, 0]) == 0.0


def test_without_missing_flag_present_is_ignored() -> None:
    model = FusionModel({"image": _Const(1.0), "text": _Const(-1.0)}, 2, (8,), 0.0).eval()
    with torch.no_grad():
        assert torch.allclose(model(_batch([[1.0, 0.0]])), model(_batch([[1.0, 1.0]])))


def test_presence_and_kept_missing_images(tiny_dir: Path) -> None:
    raw = pd.read_csv(tiny_dir / "data.csv")
    raw.loc[0, "image"] = "img/does-not-exist.png"
    raw.loc[1, "image"] = np.nan
    raw.loc[2, "note"] = "  "
    raw.loc[3, ["age", "sex"]] = np.nan
    (tiny_dir / "holes.csv").write_text(raw.to_csv(index=False))
    df, report = load_table(tiny_dir / "holes.csv", _spec(missing_image="keep"))
    assert len(df) == len(raw) and report.kept["missing_image"] == 2
    assert df.loc[0, "image"] == "" and df.loc[1, "image"] == ""
    has = presence(df, _spec())
    assert has[:4].tolist() == [[0, 1, 1], [0, 1, 1], [1, 1, 0], [1, 0, 1]]
    assert has[4:].min() == 1


def test_training_rows_without_images_need_modality_dropout(tiny_dir: Path) -> None:
    spec = _spec(missing_image="keep")
    raw, _ = load_table(tiny_dir / "data.csv", spec)
    raw.loc[[0, 5], "image"] = ""
    with pytest.raises(ConfigError, match=r"2 'train' row\(s\) have no image.*modality_dropout"):
        FusionClassifier(spec, **FAST).fit(raw.iloc[:18], raw.iloc[18:])


def test_modality_dropout_needs_two_modalities() -> None:
    spec = DataSpec(text="note", target="label")
    with pytest.raises(ConfigError, match=r"modality_dropout=0\.3.*one modality"):
        FusionClassifier(spec, modality_dropout=0.3, **FAST).fit(
            pd.DataFrame({"note": ["a", "b"] * 4, "label": ["x", "y"] * 4}))


@pytest.fixture(scope="module")
def robust(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[FusionClassifier,
                                                                             pd.DataFrame, Path]:
    """A gated model trained with modality dropout and auxiliary losses, some rows lacking
    their image, saved to a folder."""
    spec = _spec(missing_image="keep")
    df, _ = load_table(tiny_dir / "data.csv", spec)
    train = df.iloc[:18].copy()
    train.loc[[0, 3], "image"] = ""
    clf = FusionClassifier(spec, fusion="gated", modality_dropout=0.3, aux_loss=0.5,
                           **FAST).fit(train, df.iloc[18:])
    run = tmp_path_factory.mktemp("robust")
    clf.save(run)
    return clf, df, run


def test_predicts_without_each_modality(robust: tuple[FusionClassifier, pd.DataFrame, Path]
                                        ) -> None:
    clf, df, _ = robust
    assert clf.handles_missing
    full = clf.predict_proba(df)
    for m in ("image", "tabular", "text"):
        proba = clf.predict_proba(df, without=[m])
        assert proba.shape == full.shape and np.isfinite(proba).all()
        assert not np.allclose(proba, full)
    # the columns of a left-out modality need not exist
    no_image = df.drop(columns=["image"])
    np.testing.assert_allclose(clf.predict_proba(no_image, without=["image"]),
                               clf.predict_proba(df, without=["image"]), atol=1e-6)
    # empty cells are the same as leaving the modality out
    holes = df.assign(note="")
    np.testing.assert_allclose(clf.predict_proba(holes), clf.predict_proba(df, without=["text"]),
                               atol=1e-6)
    with pytest.raises(ConfigError, match="leaves no modality"):
        clf.predict_proba(df, without=["image", "tabular", "text"])
    with pytest.raises(ConfigError, match="modalities are"):
        clf.predict_proba(df, without=["audio"])


def test_gate_weights_per_row(robust: tuple[FusionClassifier, pd.DataFrame, Path]) -> None:
    clf, df, _ = robust
    gates = clf.modality_weights(df)
    assert list(gates.columns) == ["image", "tabular", "text"]
    np.testing.assert_allclose(gates.sum(axis=1), 1.0, atol=1e-5)
    no_image = clf.modality_weights(df, without=["image"])
    assert (no_image["image"] == 0).all()
    np.testing.assert_allclose(no_image.sum(axis=1), 1.0, atol=1e-5)


def test_round_trip_keeps_missing_handling(robust: tuple[FusionClassifier, pd.DataFrame, Path]
                                           ) -> None:
    clf, df, run = robust
    again = FusionClassifier.load(run)
    assert again.handles_missing and again.aux_loss == 0.5
    for without in ([], ["image"], ["text", "tabular"]):
        np.testing.assert_allclose(again.predict_proba(df, without=without),
                                   clf.predict_proba(df, without=without), atol=1e-6)


def test_models_without_dropout_refuse_without(tiny_dir: Path) -> None:
    spec = _spec()
    df, _ = load_table(tiny_dir / "data.csv", spec)
    clf = FusionClassifier(spec, **FAST).fit(df)
    with pytest.raises(ConfigError, match="not trained to predict without a modality"):
        clf.predict_proba(df, without=["image"])
    with pytest.raises(ConfigError, match="fusion='gated'"):
        clf.modality_weights(df)


@pytest.mark.parametrize("fusion", ["concat", "late"])
def test_aux_loss_trains_every_fusion(tiny_dir: Path, fusion: str) -> None:
    spec = _spec()
    df, _ = load_table(tiny_dir / "data.csv", spec)
    clf = FusionClassifier(spec, fusion=fusion, aux_loss=1.0, modality_dropout=0.2,
                           **FAST).fit(df)
    before = {k: v.clone() for k, v in clf.model_.state_dict().items()}
    assert np.isfinite(clf.predict_proba(df, without=["text"])).all()
    if fusion == "concat":  # the auxiliary heads exist and were trained
        assert any(k.startswith("aux.") for k in before)
    ds = MultimodalDataset(df, clf.pre_)
    batch = {k: torch.stack([ds[i][k] for i in range(4)]) for k in ds[0]}
    clf.model_.train()
    logits, aux, present = clf.model_.forward_train(batch)
    assert set(aux) == {"image", "tabular", "text"} and present is not None
    assert all(a.shape == logits.shape for a in aux.values())


def test_cli_evaluate_subsets_and_predict_without(
    robust: tuple[FusionClassifier, pd.DataFrame, Path], tiny_dir: Path, tmp_path: Path
) -> None:
    clf, df, run = robust
    medfuse = [sys.executable, "-m", "medfuse"]
    out = tmp_path / "ev"
    res = subprocess.run([*medfuse, "evaluate", str(run), "--data", str(tiny_dir / "data.csv"),
                          "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "modality subsets" in res.stdout
    subsets = json.loads((out / "modality_subsets.json").read_text())
    assert subsets["modalities"] == ["image", "tabular", "text"]
    assert set(subsets["removed"]) == {"image+tabular+text", "image+tabular", "image+text",
                                       "tabular+text", "image", "tabular", "text"}
    assert subsets["available"]["image+tabular+text"]["n"] == len(df)
    # the subset metric is that of predict_proba(without=...) on the same rows
    y = (df["label"] == "malignant").to_numpy()
    acc = float(((clf.predict_proba(df, without=["image"])[:, 1] >= clf.threshold_) == y).mean())
    assert subsets["removed"]["tabular+text"]["accuracy"] == pytest.approx(acc)
    preds = pd.read_csv(out / "predictions.csv")
    assert {"gate_image", "gate_tabular", "gate_text"} <= set(preds.columns)

    table = tmp_path / "no-image.csv"
    df.drop(columns=["image"]).to_csv(table, index=False)
    res = subprocess.run([*medfuse, "predict", str(run), "--data", str(table), "--out",
                          str(tmp_path / "p.csv"), "--without", "image"],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    p = pd.read_csv(tmp_path / "p.csv")
    np.testing.assert_allclose(p["prob_malignant"],
                               clf.predict_proba(df, without=["image"])[:, 1], atol=1e-5)
    assert (p["gate_image"] == 0).all()


def test_export_onnx_with_presence(robust: tuple[FusionClassifier, pd.DataFrame, Path],
                                   tmp_path: Path) -> None:
    import shutil

    from medfuse.export import OnnxPredictor, export_onnx

    _, df, run = robust
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    export_onnx(copy)
    onnx = OnnxPredictor(copy)
    clf = onnx.clf
    for frame in (df, df.assign(image="", note="")):
        np.testing.assert_allclose(onnx.predict_proba(frame), clf.predict_proba(frame),
                                   atol=1e-4)


def test_hybrid_refuses_kept_missing_images(tiny_dir: Path) -> None:
    from medfuse.hybrid import HybridClassifier

    raw = pd.read_csv(tiny_dir / "data.csv")
    with pytest.raises(ConfigError, match="hybrid models need an image in every row"):
        HybridClassifier(_spec(missing_image="keep"), extractor="frozen").fit(raw)


@pytest.fixture(scope="module")
def robust_server(robust: tuple[FusionClassifier, pd.DataFrame, Path]) -> Iterator[str]:
    """A real ``medfuse serve`` process over the ``robust`` model."""
    pytest.importorskip("httpx")
    from medfuse.benchmark.serving import running_server

    with running_server(robust[2]) as server:
        yield server.url


def test_service_predicts_without_an_image(
    robust: tuple[FusionClassifier, pd.DataFrame, Path], robust_server: str
) -> None:
    """No image (and no age) still gets a prediction, equal to the model's
    ``without=["image"]``; the gates come back; nothing at all is a 422; the page marks
    inputs optional."""
    import httpx

    clf, df, _ = robust
    url = robust_server
    row = df.iloc[5]
    info = httpx.get(f"{url}/api/model", timeout=30).json()
    assert info["handles_missing"] is True
    body = {"tabular": {"sex": row["sex"], "age": float(row["age"])}, "text": row["note"]}
    r = httpx.post(f"{url}/api/predict", json=body, timeout=60)
    assert r.status_code == 200, r.text
    out = r.json()
    expected = clf.predict_proba(df.iloc[[5]], without=["image"])[0, 1]
    assert out["probability"] == pytest.approx(expected, abs=1e-5)
    assert out["missing"] == ["image"] and out["gates"]["image"] == 0.0
    assert any("predicted from tabular + text" in w for w in out["warnings"])
    r = httpx.post(f"{url}/api/predict", json={"tabular": {"sex": "male"}},
                   timeout=60)  # no age either: imputed, as in training
    assert r.status_code == 200, r.text
    assert r.json()["missing"] == ["image", "text"]
    r = httpx.post(f"{url}/api/predict", json={}, timeout=60)
    assert r.status_code == 422 and "at least one of" in r.text
    page = httpx.get(f"{url}/", timeout=30).text
    assert 'id="optional-note"' in page and 'name="image" required' not in page


def test_page_predicts_without_an_image_in_chromium(
    robust: tuple[FusionClassifier, pd.DataFrame, Path], robust_server: str,
    chromium_page: Any, tmp_path: Path,
) -> None:
    row = robust[1].iloc[5]
    page = chromium_page
    page.goto(robust_server + "/")
    page.select_option("#f_sex", str(row["sex"]))
    page.fill("#text", str(row["note"]))
    page.click("#submit")
    page.wait_for_selector("#probability", timeout=60_000)
    page.wait_for_selector("#gates", timeout=60_000)
    assert "predicted from tabular + text" in page.inner_text("#result")
    page.screenshot(path=str(tmp_path / "no-image.png"), full_page=True)
    assert (tmp_path / "no-image.png").stat().st_size > 0


def test_cli_train_with_modality_dropout(tiny_config: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    res = subprocess.run([sys.executable, "-m", "medfuse", "train", str(tiny_config), "--out",
                          str(out), "--set", "model.modality_dropout=0.3", "--set",
                          "model.fusion=late", "--set", "model.aux_loss=0.2"],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    subsets = json.loads((out / "modality_subsets.json").read_text())
    n = json.loads((out / "metrics.json").read_text())["n"]
    assert subsets["available"]["image+tabular+text"]["n"] == n
    assert len(subsets["removed"]) == 7
    html = (out / "report.html").read_text()
    assert 'id="modality-subsets"' in html and "tabular+text" in html
    meta = json.loads((out / "estimator.json").read_text())["params"]
    assert meta["modality_dropout"] == 0.3 and meta["aux_loss"] == 0.2
