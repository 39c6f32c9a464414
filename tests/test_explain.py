"""Explanations (medfuse.explain) of fused and hybrid models on the tiny fixture."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from medfuse.config import DataSpec
from medfuse.data import load_table
from medfuse.data.images import read_image
from medfuse.data.text import tokenize
from medfuse.errors import ConfigError, DataError
from medfuse.estimators import FusionClassifier
from medfuse.explain import (
    explain,
    figure_threshold_comparison,
    grad_cam,
    heatmap_html,
    heatmap_png,
    integrated_gradients,
    lime_image,
    localise,
    modality_shares,
    randomisation_check,
    rank_correlation,
    tabular_attributions,
    to_original,
    token_attributions,
    words_html,
)
from medfuse.explain._common import fused_batch
from medfuse.hybrid import HybridClassifier

ALL = {"image": "image", "tabular": {"age": "continuous", "sex": "categorical"},
       "text": "note"}
# image_size 48 != the 32 px files, so regions must be scaled back to original pixels
FUSED: dict[str, Any] = dict(
    image_backbone="small_cnn", pretrained="none", image_size=48, max_epochs=1, batch_size=8,
    min_token_freq=1, embed_dim=16, hidden_dims=(16,), progress=False,
)
HYBRID: dict[str, Any] = dict(image_backbone="small_cnn", pretrained="none", image_size=32,
                              min_token_freq=1, progress=False, batch_size=8)
pytestmark = pytest.mark.filterwarnings("ignore::PendingDeprecationWarning:shap.*")
PNG = b"\x89PNG\r\n\x1a\n"
KEYS = {"row", "prediction", "probability", "modalities", "regions", "words", "features"}


def _data(tiny_dir: Path, modalities: dict[str, Any] = ALL) -> tuple[pd.DataFrame, DataSpec]:
    spec = DataSpec.model_validate(
        {"target": "label", "group": "patient", "positive": "malignant", **modalities}
    )
    df, _ = load_table(tiny_dir / "data.csv", spec)
    return df, spec


@pytest.fixture(scope="module")
def fused(tiny_dir: Path) -> tuple[FusionClassifier, pd.DataFrame]:
    df, spec = _data(tiny_dir)
    return FusionClassifier(spec, **FUSED).fit(df), df


_HYBRIDS: dict[str, tuple[HybridClassifier, pd.DataFrame]] = {}


def _hybrid(head: str, tiny_dir: Path, cache: Path) -> tuple[HybridClassifier, pd.DataFrame]:
    if head not in _HYBRIDS:
        df, spec = _data(tiny_dir)
        clf = HybridClassifier(spec, head=head, cache_dir=str(cache), **HYBRID).fit(df)
        _HYBRIDS[head] = clf, df
    return _HYBRIDS[head]


@pytest.fixture(scope="module", params=["lr", "rf"])
def hybrid(request: pytest.FixtureRequest, tiny_dir: Path,
           tmp_path_factory: pytest.TempPathFactory) -> tuple[HybridClassifier, pd.DataFrame]:
    return _hybrid(request.param, tiny_dir, tmp_path_factory.mktemp("features"))


def _check_common(clf: Any, df: pd.DataFrame, out: list[dict[str, Any]],
                  rows: list[int], min_regions: int = 1) -> None:
    proba = clf.predict_proba(df.iloc[rows])
    assert [e["row"] for e in out] == rows
    for k, e in enumerate(out):
        assert set(e) >= KEYS
        assert e["prediction"] in clf.classes_
        target = clf.classes_.index(e["prediction"])
        assert e["probability"] == pytest.approx(proba[k, target], abs=1e-5)
        assert set(e["modalities"]) == {"image", "tabular", "text"}
        assert sum(e["modalities"].values()) == pytest.approx(1.0)
        assert all(v >= 0 for v in e["modalities"].values())
        width, height = read_image(df["image"].iloc[e["row"]]).size
        assert min_regions <= len(e["regions"]) <= 3
        for r in e["regions"]:
            assert set(r) == {"x", "y", "r", "score"}
            assert 0 <= r["x"] <= width and 0 <= r["y"] <= height and 0 < r["r"] <= width
            assert 0 < r["score"] <= 1
        scores = [r["score"] for r in e["regions"]]
        assert scores == sorted(scores, reverse=True)
        row = df.iloc[e["row"]]
        assert [w["token"] for w in e["words"]] == tokenize(row["note"])
        assert [f["name"] for f in e["features"]] == ["sex", "age"]
        assert e["features"][0]["value"] == row["sex"]
        assert e["features"][1]["value"] == pytest.approx(row["age"])
        assert all(np.isfinite(f["score"]) for f in e["features"])
    json.dumps(out)  # JSON-ready


def test_explain_fused(fused: tuple[FusionClassifier, pd.DataFrame], tmp_path: Path) -> None:
    clf, df = fused
    rows = [0, 1, 24]  # PNG, JPEG and DICOM images
    out = explain(clf, df, rows=rows, out_dir=tmp_path, steps=8)
    _check_common(clf, df, out, rows)
    doc = json.loads((tmp_path / "explanations.json").read_text())
    assert doc["estimator"] == "FusionClassifier" and len(doc["rows"]) == 3
    for i in rows:
        for suffix in ("image.png", "threshold.png", "text_heatmap.png"):
            assert (tmp_path / f"row{i}_{suffix}").read_bytes().startswith(PNG)
        page = (tmp_path / f"row{i}_text_heatmap.html").read_text()
        assert "Plotly.newPlot" in page and "<script src=" not in page  # offline: inlined
        assert "grown" in page or "stable" in page
        assert "<span" in (tmp_path / f"row{i}_text.html").read_text()
    index = (tmp_path / "index.html").read_text()
    assert all(f"row{i}_image.png" in index and f"row{i}_text.html" in index for i in rows)


def test_explain_hybrid(hybrid: tuple[HybridClassifier, pd.DataFrame], tmp_path: Path) -> None:
    clf, df = hybrid
    rows = [1, 2]
    out = explain(clf, df, rows=rows, out_dir=tmp_path, steps=8)
    # occlusion of a random-feature tree head may change nothing: no region then
    _check_common(clf, df, out, rows, min_regions=1 if clf.head == "lr" else 0)
    doc = json.loads((tmp_path / "explanations.json").read_text())
    expected = "SmoothGrad integrated gradients" if clf.head == "lr" else "occlusion"
    assert doc["methods"]["regions"].startswith(expected)
    assert doc["methods"]["features"].startswith("linear" if clf.head == "lr" else "TreeSHAP")
    for i in rows:
        assert (tmp_path / f"row{i}_image.png").read_bytes().startswith(PNG)
        assert (tmp_path / f"row{i}_threshold.png").is_file()
        assert (tmp_path / f"row{i}_text.html").is_file()
    assert (tmp_path / "index.html").is_file()


def test_hybrid_linear_scores_add_up(tiny_dir: Path, tmp_path: Path) -> None:
    """lr: contributions sum to the decision function minus the intercept."""
    from medfuse.explain.hybrid import HeadExplainer

    clf, df = _hybrid("lr", tiny_dir, tmp_path)
    X = clf.transform(df.iloc[[3]])
    contrib = HeadExplainer(clf).contributions(X, 1)
    assert contrib is not None
    decision = clf.head_.decision_function(X)[0] - clf.head_[-1].intercept_[0]
    assert contrib.sum() == pytest.approx(decision, rel=1e-6)


def test_adaboost_tree_shap_is_exact() -> None:
    import shap
    from sklearn.ensemble import AdaBoostClassifier
    from sklearn.tree import DecisionTreeClassifier

    from medfuse.explain.hybrid import _adaboost_trees

    rng = np.random.default_rng(0)
    X = rng.random((80, 5))
    y = (X[:, 0] + X[:, 1] > 1).astype(int)
    est = AdaBoostClassifier(DecisionTreeClassifier(max_depth=2), n_estimators=15,
                             random_state=0).fit(X, y)
    for col, sign in ((1, 1.0), (0, -1.0)):
        explainer = shap.TreeExplainer(_adaboost_trees(est, col))
        values = explainer.shap_values(X[:10])
        np.testing.assert_allclose(values.sum(1) + explainer.expected_value,
                                   sign * est.decision_function(X[:10]), atol=1e-9)


def test_explain_rows_and_errors(fused: tuple[FusionClassifier, pd.DataFrame],
                                 tiny_dir: Path) -> None:
    clf, df = fused
    with pytest.raises(DataError, match="out of range"):
        explain(clf, df, rows=[99])
    with pytest.raises(ConfigError, match="threshold"):
        localise(np.ones((4, 4)), threshold=1.5)
    with pytest.raises(ConfigError, match="method"):
        localise(np.ones((4, 4)), method="meanshift")
    with pytest.raises(DataError, match="attr_map"):
        localise(np.ones(4))
    text_only, spec = _data(tiny_dir, {"text": "note"})
    model = FusionClassifier(spec, **FUSED).fit(text_only)
    _, batch = fused_batch(model, text_only.iloc[:2])
    with pytest.raises(ConfigError, match="no image input"):
        integrated_gradients(model.model_, batch, 0)
    with pytest.raises(ConfigError, match="no tabular input"):
        tabular_attributions(model.model_, batch, 0, model.pre_)


def test_image_text_tabular_functions(fused: tuple[FusionClassifier, pd.DataFrame]) -> None:
    clf, df = fused
    model = clf.model_
    _, batch = fused_batch(clf, df.iloc[:3])
    maps = integrated_gradients(model, batch, [0, 1, 1], steps=8)
    assert maps.shape == (3, 48, 48) and (maps >= 0).all() and maps.sum() > 0
    cams = grad_cam(model, batch, 1)
    assert cams.shape == (3, 48, 48) and (cams >= 0).all()
    # plain IG: attributions add up to p(x) - p(grey image), the other inputs fixed
    from medfuse.explain._common import BatchForward, split_batch
    from medfuse.explain.image import ig_attributions

    keys, (images,), rest = split_batch(batch, ("image",))
    fwd = BatchForward(model, keys)
    attr = ig_attributions(fwd, images, 1, steps=64, nt_samples=0, additional_forward_args=rest)
    with torch.no_grad():
        delta = fwd(images, *rest)[:, 1] - fwd(torch.zeros_like(images), *rest)[:, 1]
    np.testing.assert_allclose(attr.sum((1, 2, 3)).numpy(), delta.numpy(), atol=2e-3)

    words = token_attributions(model, batch, 1, clf.pre_, steps=8)
    assert [v.tokens for v in words[0]] == [tokenize(df["note"].iloc[0])]
    assert words[0][0].matrix.shape == (len(words[0][0].tokens), 16)
    feats = tabular_attributions(model, batch, 1, clf.pre_, frame=df.iloc[:3], steps=8)
    assert [f["name"] for f in feats[2]] == ["sex", "age"]
    shares = modality_shares(model, batch, 1, clf.pre_, steps=8)
    assert all(sum(s.values()) == pytest.approx(1.0) for s in shares)

    lime = lime_image(clf, df.iloc[[1]], n_samples=40, n_segments=12)
    assert lime.shape == (48, 48) and np.isfinite(lime).all()


def test_localise_finds_blobs_and_threshold_drops_noise() -> None:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:64, 0:64] + 0.5

    def blob(x: float, y: float, s: float) -> np.ndarray:
        return np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * s * s))

    strong = [(16.0, 20.0), (46.0, 44.0)]
    attr = (blob(*strong[0], 2.5) + 0.9 * blob(*strong[1], 2.5)
            + 0.12 * blob(50, 12, 4) * rng.uniform(0, 2, (64, 64))  # weak, noisy
            + rng.uniform(0, 0.03, (64, 64)))
    for method in ("dbscan", "kmeans"):
        found = localise(attr, threshold=0.9, method=method)
        for (x, y), r in zip(strong, found[:2], strict=True):
            assert abs(r["x"] - x) < 1 and abs(r["y"] - y) < 1 and 2 < r["r"] < 10
    low = localise(attr, threshold=0.8)
    assert len(low) == 3 and abs(low[2]["x"] - 50) < 2 and abs(low[2]["y"] - 12) < 2
    high = localise(attr, threshold=0.97)
    assert len(high) == 2 and sum(r["score"] for r in high) == pytest.approx(1.0, abs=0.05)
    assert localise(np.zeros((8, 8))) == []
    big = np.kron(attr, np.ones((8, 8)))  # 512 px: block-averaged, results in its pixels
    r0 = localise(big, threshold=0.9)[0]
    assert abs(r0["x"] - 8 * 16) < 8 and abs(r0["y"] - 8 * 20) < 8


def test_to_original_and_figures() -> None:
    regions = [{"x": 16.0, "y": 8.0, "r": 4.0, "score": 1.0}]
    assert to_original(regions, (64, 128), 32) == [{"x": 32.0, "y": 32.0, "r": 12.0,
                                                   "score": 1.0}]
    image = np.full((40, 60, 3), 200, np.uint8)
    attr = np.zeros((32, 32))
    attr[10:14, 20:24] = 1.0
    attr += np.random.default_rng(0).uniform(0, 0.2, attr.shape)
    assert figure_threshold_comparison(image, attr).startswith(PNG)
    html = words_html([{"token": "<b>", "score": 1.0}, {"token": "ok", "score": -0.5}])
    assert "&lt;b&gt;" in html and "rgba(40,90,220,0.500)" in html
    m = np.random.default_rng(1).normal(size=(3, 5))
    assert heatmap_png(["a", "b", "a"], m).startswith(PNG)
    page = heatmap_html(["a", "b", "a"], m)
    assert "<html" in page and "<script src=" not in page and len(page) > 1_000_000


def test_randomised_weights_change_the_maps(fused: tuple[FusionClassifier, pd.DataFrame]
                                            ) -> None:
    """Adebayo et al.: maps of a model and of its re-initialised copy barely correlate."""
    clf, df = fused
    _, batch = fused_batch(clf, df.iloc[:6])
    model = clf.model_
    rho = randomisation_check(model, batch, 1, steps=16)
    assert len(rho) == 6 and np.mean(rho) < 0.5
    signed = randomisation_check(model, batch, 1, steps=16, reduce="sum")
    assert np.mean(np.abs(signed)) < 0.2
    # the check itself: an unchanged model gives identical maps
    maps = integrated_gradients(model, batch, 1, steps=16)
    again = integrated_gradients(model, batch, 1, steps=16)
    assert rank_correlation(maps[0], again[0]) == pytest.approx(1.0)
