"""Schemathesis against the serve app's OpenAPI schema, in process: no input gives a 5xx."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

schemathesis = pytest.importorskip("schemathesis")
pytest.importorskip("fastapi")
from hypothesis import HealthCheck, settings  # noqa: E402


@pytest.fixture(scope="module")
def served_run(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny image + tabular + text model, saved as a run directory."""
    from medfuse.config import DataSpec
    from medfuse.data import load_table
    from medfuse.estimators import FusionClassifier

    spec = DataSpec(image="image", tabular={"age": "continuous", "sex": "categorical"},
                    text="note", target="label", group="patient", positive="malignant")
    df, _ = load_table(tiny_dir / "data.csv", spec)
    clf = FusionClassifier(spec, image_backbone="small_cnn", pretrained="none", image_size=32,
                           max_epochs=1, batch_size=8, min_token_freq=1, embed_dim=16,
                           hidden_dims=(16,), progress=False)
    return clf.fit(df).save(tmp_path_factory.mktemp("runs") / "tiny")


@pytest.fixture(scope="module")
def app(served_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from PIL import Image

    from medfuse.serve.app import create_app

    audit = tmp_path_factory.mktemp("audit") / "audit.sqlite"
    before = Image.MAX_IMAGE_PIXELS  # create_app sets Pillow's process-wide limit
    yield create_app(served_run, audit_db=audit, max_upload_mb=1, max_pixels=1_000_000)
    Image.MAX_IMAGE_PIXELS = before


@pytest.fixture(scope="module")
def api_schema(app: Any) -> Any:
    return schemathesis.openapi.from_asgi("/openapi.json", app)


# (schemathesis' own pytest integration, ``schema.parametrize()`` with a lazy fixture
# schema, does not run under pytest 9: it sets ``Function._nodeid``, which pytest removed.
# Each operation's hypothesis strategy is driven directly instead.)
OPERATIONS = [("GET", "/health"), ("GET", "/api/model"), ("POST", "/api/predict"),
              ("GET", "/"), ("GET", "/report")]


# negative cases (bodies that break the schema) exist only where there is a body
# and with a real image swapped in, so requests get past the image to the tabular / text
# values and the model itself
CASES = [(m, p, "positive", False) for m, p in OPERATIONS] + [
    ("POST", "/api/predict", "negative", False),
    ("POST", "/api/predict", "positive", True),
    ("POST", "/api/predict", "negative", True),
]


def _with_image(case: Any, png: bytes) -> None:
    if not isinstance(case.body, dict):
        return
    if case.media_type == "application/json":
        case.body["image_base64"] = base64.b64encode(png).decode()
    else:
        case.body["image"] = png


@pytest.mark.parametrize(("method", "path", "mode", "real_image"), CASES)
def test_no_generated_request_makes_the_server_fail(
    api_schema: Any, tiny_dir: Path, method: str, path: str, mode: str, real_image: bool
) -> None:
    from hypothesis import given

    operation = api_schema[path][method]
    strategy = operation.as_strategy(generation_mode=schemathesis.GenerationMode(mode))
    png = _png(tiny_dir)
    seen: list[int] = []

    @given(case=strategy)
    @settings(max_examples=25, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    def check(case: Any) -> None:
        if real_image:
            _with_image(case, png)
        response = case.call()
        seen.append(response.status_code)
        assert response.status_code < 500, (
            f"{case.method} {case.formatted_path} -> {response.status_code}: "
            f"{response.text[:300]}\n{case.as_curl_command()}"
        )

    check()
    assert seen


def test_every_operation_is_fuzzed(api_schema: Any) -> None:
    listed = {(r.ok().method.upper(), r.ok().path) for r in api_schema.get_all_operations()}
    assert listed == set(OPERATIONS)


# ------------------------------------------------ hand-made nasties schemathesis may miss
def _png(tiny_dir: Path) -> bytes:
    return (tiny_dir / "img" / "01.png").read_bytes()


@pytest.fixture(scope="module")
def client(app: Any) -> Any:
    from fastapi.testclient import TestClient

    return TestClient(app, raise_server_exceptions=False)


NASTY_JSON: list[Any] = [
    {"tabular": {"age": 1e308, "sex": "female"}, "text": "x"},
    {"tabular": {"age": -1e308, "sex": "female"}, "text": "x"},
    {"tabular": {"age": "1e999", "sex": "female"}, "text": "x"},
    {"tabular": {"age": "NaN", "sex": "female"}, "text": "x"},
    {"tabular": {"age": True, "sex": ["a"]}, "text": "x"},
    {"tabular": {"age": {"x": 1}, "sex": {"y": 2}}, "text": "x"},
    {"tabular": {"age": 3, "sex": None}, "text": None},
    {"tabular": {"age": 3, "sex": "\udcff"}, "text": "\x00\udcff" * 1000},
    {"tabular": [], "text": 5},
    {"tabular": {"age": 3, "sex": "m"}, "text": "x", "image_base64": 17},
    {"tabular": {"age": 3, "sex": "m"}, "text": "x", "image_base64": "data:,"},
    {"tabular": {"age": 3, "sex": "m"}, "text": "x", "image_base64": "AAAA"},
    {"tabular": {"age": 3, "sex": "m"}, "text": "x", "image_base64": ["a"]},
    [], None, "string", 1.5,
]


@pytest.mark.parametrize("payload", NASTY_JSON, ids=range(len(NASTY_JSON)))
def test_weird_json_is_not_a_server_error(client: Any, tiny_dir: Path, payload: Any) -> None:
    if isinstance(payload, dict) and "image_base64" not in payload:
        payload = {**payload, "image_base64": base64.b64encode(_png(tiny_dir)).decode()}
    import json

    body = json.dumps(payload, allow_nan=True)
    res = client.post("/api/predict", content=body.encode("utf-8", "surrogatepass"),
                      headers={"content-type": "application/json"})
    assert res.status_code < 500, res.text
    if res.status_code == 200:
        assert 0.0 <= res.json()["probability"] <= 1.0


RAW_BODIES: list[tuple[str, bytes]] = [
    ("multipart/form-data", b"garbage"),
    ("multipart/form-data; boundary=xyz", b"--xyz\r\nContent-Disposition: form-data\r\n\r\n"),
    ("multipart/form-data; boundary=xyz", b"--xyz\r\n\r\n--xyz--"),
    ("multipart/form-data; boundary=", b""),
    ("multipart/form-data; boundary=xyz",
     b'--xyz\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n\r\n'),
    ("application/x-www-form-urlencoded", b"%%%&&&=\xff\xfe"),
    ("application/json", b"\xff\xfe\x00"),
    ("application/json", b'{"tabular": {"age": 1e999}}'),
    ("application/json", b"[" * 10_000 + b"]" * 10_000),
    ("application/json; charset=latin-1", b'{"text": "\xe9"}'),
    ("", b"{}"),
    ("text/plain", b"hello"),
]


@pytest.mark.parametrize(("ctype", "body"), RAW_BODIES, ids=range(len(RAW_BODIES)))
def test_malformed_bodies_are_not_server_errors(client: Any, ctype: str, body: bytes) -> None:
    res = client.post("/api/predict", content=body, headers={"content-type": ctype})
    assert 400 <= res.status_code < 500, res.text


def test_multipart_with_absurd_numbers_and_odd_parts(client: Any, tiny_dir: Path) -> None:
    png = ("a.png", _png(tiny_dir), "image/png")
    for age in ("1e308", "-1e308", "inf", "nan", "0x10", "١٢", "", " "):
        res = client.post("/api/predict", files={"image": png},
                          data={"age": age, "sex": "female", "text": "x"})
        assert res.status_code in (200, 422), (age, res.text)
    res = client.post("/api/predict", files={"image": png, "text": ("t.txt", b"\xff", "x/y")},
                      data={"age": "3", "sex": "female"})
    assert res.status_code < 500, res.text
    res = client.post("/api/predict", files=[("image", png), ("image", png)],
                      data={"age": "3", "sex": "female", "text": "x"})
    assert res.status_code < 500, res.text
    res = client.post("/api/predict?explain=maybe", files={"image": png},
                      data={"age": "3", "sex": "female", "text": ""})
    assert res.status_code == 200, res.text


def test_non_finite_probabilities_are_a_clear_422(
    app: Any, client: Any, tiny_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import numpy as np

    monkeypatch.setattr(app.state.model, "predict_proba",
                        lambda df: np.full((len(df), 2), np.nan))
    res = client.post("/api/predict", files={"image": ("a.png", _png(tiny_dir), "image/png")},
                      data={"age": "3", "sex": "female", "text": "x"})
    assert res.status_code == 422 and "not finite" in res.json()["detail"][0]["msg"]
