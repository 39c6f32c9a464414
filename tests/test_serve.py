"""``medfuse serve``: the REST API and web page over a real server process, and ONNX export."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from PIL import Image

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

TOKEN = "s3cret-test-token"
SECRET_TEXT = "lesion has grown quite secretive-phrase"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def run_dir(tiny_config: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "tiny"
    res = subprocess.run([sys.executable, "-m", "medfuse.cli", "train", str(tiny_config), "--out",
                          str(out), "--set", "train.max_epochs=1"], capture_output=True,
                         text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stderr
    return out


@pytest.fixture(scope="module")
def audit(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("audit") / "audit.sqlite"


@pytest.fixture(scope="module")
def server(run_dir: Path, audit: Path, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[str]:
    port = free_port()
    cmd = [sys.executable, "-m", "medfuse.cli", "serve", str(run_dir), "--port", str(port),
           "--token", TOKEN, "--audit-db", str(audit), "--max-upload-mb", "0.2",
           "--max-pixels", "5000"]  # the real CLI, as a user starts it
    log = tmp_path_factory.mktemp("log") / "server.log"
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT,
                                env={**os.environ, "OMP_NUM_THREADS": "1"})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                pytest.fail(f"server exited early:\n{log.read_text()}")
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"server did not start:\n{log.read_text()}")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def client(server: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server, timeout=120,
                      headers={"Authorization": f"Bearer {TOKEN}"}) as c:
        yield c


def image_bytes(tiny_dir: Path) -> bytes:
    return (tiny_dir / "img" / "01.png").read_bytes()


def test_health_and_model(client: httpx.Client) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    info = client.get("/api/model").json()
    assert info["classes"] == ["benign", "malignant"]
    assert info["spec"]["tabular"] == {"age": "continuous", "sex": "categorical"}
    assert info["categories"] == {"sex": ["female", "male"]}
    assert 0 < info["threshold"] < 1 and info["temperature"] > 0
    assert "roc_auc" in info["metrics"] and info["card"]["estimator"] == "FusionClassifier"
    assert client.get("/openapi.json").json()["paths"]["/api/predict"]["post"]


def test_predict_multipart(client: httpx.Client, tiny_dir: Path) -> None:
    res = client.post("/api/predict", files={"image": ("a.png", image_bytes(tiny_dir),
                                                       "image/png")},
                      data={"age": "41", "sex": "female", "text": SECRET_TEXT})
    assert res.status_code == 200, res.text
    body = res.json()
    assert set(body["probabilities"]) == {"benign", "malignant"}
    assert sum(body["probabilities"].values()) == pytest.approx(1.0, abs=1e-6)
    assert body["probability"] == pytest.approx(body["probabilities"]["malignant"])
    assert body["decision"] in {"benign", "malignant"} and body["warnings"] == []
    # the conformal prediction set of the request, and whether to refer it
    assert set(body["prediction_set"]) <= {"benign", "malignant"}
    assert body["abstain"] == (len(body["prediction_set"]) != 1)
    assert body["conformal_alpha"] == 0.1


def test_inputs_go_by_their_column_names(client: httpx.Client, tiny_dir: Path) -> None:
    img = base64.b64encode(image_bytes(tiny_dir)).decode()
    # JSON: every input under its column name at the top level, as in data.csv
    by_column = client.post("/api/predict", json={"image": img, "age": 41, "sex": "female",
                                                  "note": SECRET_TEXT})
    assert by_column.status_code == 200, by_column.text
    alias = client.post("/api/predict", json={"image_base64": img, "text": SECRET_TEXT,
                                              "tabular": {"age": 41, "sex": "female"}})
    assert alias.status_code == 200, alias.text
    assert by_column.json()["probabilities"] == alias.json()["probabilities"]
    # a form, with the text under its column name
    form = client.post("/api/predict", files={"image": ("a.png", image_bytes(tiny_dir),
                                                        "image/png")},
                       data={"age": "41", "sex": "female", "note": SECRET_TEXT})
    assert form.status_code == 200, form.text
    assert form.json()["probabilities"] == pytest.approx(alias.json()["probabilities"])
    both = client.post("/api/predict", json={"image": img, "age": 41, "sex": "female",
                                             "note": "a", "text": "b"})
    assert both.status_code == 422 and "'text' and 'note' are the same input" in both.text
    missing = client.post("/api/predict", json={"image": img, "age": 41, "sex": "female"})
    assert missing.status_code == 422
    assert missing.json()["detail"][0]["field"] == "note" and "alias 'text'" in missing.text
    schema = client.get("/openapi.json").json()["paths"]["/api/predict"]["post"]["requestBody"]
    for ctype in ("multipart/form-data", "application/json"):
        props = schema["content"][ctype]["schema"]["properties"]
        assert {"image", "age", "sex", "note"} <= set(props), ctype
        assert set(schema["content"][ctype]["schema"]["required"]) == {"image", "age", "sex",
                                                                       "note"}


def test_predict_json_with_explanation_matches_the_model(
    client: httpx.Client, tiny_dir: Path, run_dir: Path
) -> None:
    from medfuse.runs import load_model

    payload = {"image_base64": base64.b64encode(image_bytes(tiny_dir)).decode(),
               "tabular": {"age": 41, "sex": "other"}, "text": SECRET_TEXT}
    res = client.post("/api/predict?explain=true", json=payload)
    assert res.status_code == 200, res.text
    body = res.json()
    assert any("'sex'" in w and "unknown" in w for w in body["warnings"])
    assert sum(body["modalities"].values()) == pytest.approx(1.0, abs=1e-6)
    ex = body["explanation"]
    assert {"regions", "words", "features"} <= set(ex)
    assert {f["name"] for f in ex["features"]} >= {"age", "sex"}
    overlay = Image.open(io.BytesIO(base64.b64decode(ex["overlay_png_base64"])))
    assert overlay.format == "PNG"
    clf = load_model(run_dir)
    df = pd.DataFrame([{"image": str(tiny_dir / "img" / "01.png"), "age": 41.0, "sex": "other",
                        "note": SECRET_TEXT, "patient": "x"}])
    assert body["probability"] == pytest.approx(float(clf.predict_proba(df)[0, 1]), abs=1e-5)


def test_dicom_upload(client: httpx.Client, tiny_dir: Path) -> None:
    res = client.post("/api/predict", files={"image": ("s.dcm", (tiny_dir / "img" / "scan.dcm")
                                                       .read_bytes(), "application/dicom")},
                      data={"age": "61", "sex": "male", "text": "new scan"})
    assert res.status_code == 200, res.text


def test_validation_errors(client: httpx.Client, tiny_dir: Path) -> None:
    img = ("a.png", image_bytes(tiny_dir), "image/png")
    res = client.post("/api/predict", files={"image": img},
                      data={"age": "forty", "sex": "female", "text": ""})
    assert res.status_code == 422
    assert [d["field"] for d in res.json()["detail"]] == ["age"]
    assert "number" in res.json()["detail"][0]["msg"]
    res = client.post("/api/predict", files={"image": img}, data={"sex": "female", "text": ""})
    assert res.status_code == 422 and "'age'" in res.json()["detail"][0]["msg"]
    res = client.post("/api/predict", files={"image": ("a.png", b"not an image", "image/png")},
                      data={"age": "3", "sex": "female", "text": ""})
    assert res.status_code == 422 and res.json()["detail"][0]["field"] == "image"
    assert "medfuse-serve" not in res.text  # no temp paths leak
    big = io.BytesIO()
    Image.new("RGB", (100, 100)).save(big, format="PNG")  # 10k pixels > max_pixels=5000
    res = client.post("/api/predict", files={"image": ("b.png", big.getvalue(), "image/png")},
                      data={"age": "3", "sex": "female", "text": ""})
    assert res.status_code == 422 and "decompression bomb" in res.json()["detail"][0]["msg"]
    res = client.post("/api/predict", json={"tabular": {"age": 3, "sex": "male"}, "text": "",
                                            "image_base64": "%%%"})
    assert res.status_code == 422 and res.json()["detail"][0]["field"] == "image_base64"
    res = client.post("/api/predict", content=b"hi", headers={"content-type": "text/plain"})
    assert res.status_code == 415


def test_oversized_upload_is_413(client: httpx.Client) -> None:
    noise = np.random.default_rng(0).bytes(300_000)  # > max_upload_mb=0.2
    res = client.post("/api/predict", files={"image": ("n.png", noise, "image/png")},
                      data={"age": "3", "sex": "female", "text": ""})
    assert res.status_code == 413


def test_token_is_required(server: str) -> None:
    assert httpx.get(f"{server}/health").status_code == 200
    assert httpx.get(f"{server}/api/model").status_code == 401
    res = httpx.get(f"{server}/api/model", headers={"Authorization": "Bearer wrong"})
    assert res.status_code == 401
    assert httpx.post(f"{server}/api/predict", json={}).status_code == 401


def test_docs_work_offline(client: httpx.Client) -> None:
    html = client.get("/docs").text
    assert "swagger" in html.lower()
    assert "cdn." not in html and "unpkg" not in html  # assets come from this server
    assets = re.findall(r'(?:src|href)="([^"]+\.(?:js|css))"', html)
    assert assets, "no local swagger assets referenced"
    for src in assets:
        assert client.get(src).status_code == 200, src


def test_page_and_report(client: httpx.Client) -> None:
    html = client.get("/").text
    assert 'type="file"' in html and 'name="age"' in html and '<option value="male">' in html
    assert "<textarea" in html and "http" not in html.split("<script>")[1].split("fetch")[0]
    assert "cdn" not in html.lower()
    assert client.get("/report").status_code == 200


def test_audit_log_has_hashes_not_raw_inputs(client: httpx.Client, tiny_dir: Path,
                                             run_dir: Path, audit: Path) -> None:
    client.post("/api/predict", files={"image": ("a.png", image_bytes(tiny_dir), "image/png")},
                data={"age": "41", "sex": "female", "text": SECRET_TEXT})
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert audit.is_file(), "audit database not written"
    with sqlite3.connect(audit) as con:
        rows = con.execute("SELECT time, model_sha256, input_sha256, outputs, latency_ms "
                           "FROM predictions").fetchall()
        dump = "\n".join(con.iterdump())
    assert rows
    for _, model_sha, input_sha, outputs, latency in rows:
        assert model_sha == manifest["files"]["model.safetensors"]
        assert len(input_sha) == 64 and latency > 0
        assert "probabilities" in json.loads(outputs)
    assert SECRET_TEXT not in dump and "secretive" not in dump
    assert base64.b64encode(image_bytes(tiny_dir)).decode()[:40] not in dump


def test_onnx_export_matches_pytorch(run_dir: Path, tiny_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from medfuse.export import OnnxPredictor, export_onnx
    from medfuse.runs import load_model

    path = export_onnx(run_dir, tmp_path / "model.onnx")
    assert path.is_file()
    df = pd.read_csv(tiny_dir / "data.csv")
    df["image"] = [str(tiny_dir / p) for p in df["image"]]
    clf = load_model(run_dir)
    onnx = OnnxPredictor(run_dir, path=path, clf=clf)
    onnx_proba = onnx.predict_proba(df)
    np.testing.assert_allclose(onnx_proba, clf.predict_proba(df), atol=1e-4)
    assert onnx_proba.shape == (len(df), 2)
    # the same conformal sets from either backend (up to probabilities within 1e-4 of a cut)
    sets, ref = onnx.prediction_sets(df), clf.prediction_sets(df)
    assert sets is not None and ref is not None and (sets == ref).mean() >= 0.95


def test_onnx_export_of_a_tf_same_padding_backbone(tiny_dir: Path, tmp_path: Path) -> None:
    """tf_* backbones pad 'same' from the input's shape; the export fixes it per run size."""
    pytest.importorskip("onnxruntime")
    import onnx

    from medfuse.config import DataSpec
    from medfuse.data import load_table
    from medfuse.estimators import FusionClassifier
    from medfuse.export import OnnxPredictor, export_onnx

    spec = DataSpec(image="image", tabular={"age": "continuous"}, target="label",
                    group="patient")
    df, _ = load_table(tiny_dir / "data.csv", spec)
    clf = FusionClassifier(spec, image_backbone="tf_efficientnet_lite0", pretrained="builtin",
                           image_size=37, hidden_dims=(8,), batch_size=8, max_epochs=1,
                           progress=False)
    run = clf.fit(df.iloc[:18], df.iloc[18:]).save(tmp_path / "run")
    path = export_onnx(run)
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert "Ceil" not in ops, ops  # no padding computed at run time
    proba = OnnxPredictor(run, clf=clf).predict_proba(df)
    np.testing.assert_allclose(proba, clf.predict_proba(df), atol=1e-4)


def test_app_uses_onnx_when_exported(run_dir: Path, tiny_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    import shutil

    from fastapi.testclient import TestClient

    from medfuse.serve.app import create_app

    run = tmp_path / "run"
    shutil.copytree(run_dir, run, ignore=shutil.ignore_patterns("checkpoints", "logs"))
    res = subprocess.run([sys.executable, "-m", "medfuse.cli", "export", str(run), "--format",
                          "onnx"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and "model.onnx" in res.stdout, res.stderr
    bad = subprocess.run([sys.executable, "-m", "medfuse.cli", "export", str(run), "--format",
                          "tflite"], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "'format'" in bad.stderr and "Traceback" not in bad.stderr
    client = TestClient(create_app(run, audit_db=tmp_path / "a.sqlite"))
    res = client.post("/api/predict", files={"image": ("a.png", image_bytes(tiny_dir),
                                                       "image/png")},
                      data={"age": "41", "sex": "female", "text": "x"})
    assert res.status_code == 200 and res.json()["backend"] == "onnxruntime"


def test_web_page_in_chromium(server: str, tiny_dir: Path, tmp_path: Path,
                              chromium_page: Any) -> None:
    page = chromium_page
    page.goto(server + "/")
    page.fill("#token", TOKEN)
    page.set_input_files("#image", str(tiny_dir / "img" / "01.png"))
    page.fill("#f_age", "41")
    page.select_option("#f_sex", "female")
    page.fill("#text", "lesion has grown")
    page.click("#submit")
    page.wait_for_selector("#probability", timeout=60_000)
    page.wait_for_selector("#overlay", timeout=60_000)
    # the conformal set, said plainly: "Uncertain: refer" when it is not one class
    shown = page.query_selector("#refer") or page.query_selector("#prediction-set")
    assert shown is not None and "prediction set" in shown.inner_text()
    assert "%" in page.inner_text("#probability")
    page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
    assert (tmp_path / "page.png").stat().st_size > 0
