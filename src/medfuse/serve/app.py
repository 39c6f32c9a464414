"""The FastAPI app behind ``medfuse serve RUN``: a REST API and a web page, fully offline.

Endpoints
---------
``GET /health``
    ``{"status": "ok"}`` (never needs the token).
``GET /api/model``
    The spec, classes, threshold, temperature, the run's metrics and a short model card.
``POST /api/predict[?explain=true]``
    ``multipart/form-data`` (``image`` file, one field per tabular column, ``text``) or
    ``application/json`` (``{"image_base64", "tabular": {...}, "text"}``). Returns the
    probabilities, the decision at the model's threshold, ``warnings`` and, with
    ``explain=true``, ``modalities`` and ``explanation`` (regions, words, features and an
    ``overlay_png_base64`` of the image with the regions circled).
``GET /``
    An HTML form generated from the spec (inline CSS / JS, no CDN).
``GET /report``
    ``RUN/report.html`` when present.

Every prediction is audited in SQLite (``RUN/audit.sqlite`` by default): time, model
sha256, sha256 of the inputs, outputs and latency; never the raw image or text.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import json
import math
import os
import secrets
import sqlite3
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.datastructures import UploadFile

from medfuse.errors import DataError, MedfuseError
from medfuse.estimators import FusionClassifier

TOKEN_ENV = "MEDFUSE_TOKEN"
AUDIT_FILE = "audit.sqlite"
_TRUE = {"1", "true", "yes", "on"}


class InputError(Exception):
    """Invalid request input: answered with ``status`` and ``{"detail": problems}``."""

    def __init__(self, problems: list[dict[str, Any]], status: int = 422) -> None:
        super().__init__("; ".join(str(p.get("msg")) for p in problems))
        self.problems = problems
        self.status = status


def _problem(field_name: str, msg: str) -> dict[str, Any]:
    return {"loc": ["body", field_name], "field": field_name, "msg": msg}


@dataclass
class Inputs:
    """One prediction request, parsed but not yet validated."""

    image: bytes | None = None
    image_name: str = ""
    tabular: dict[str, Any] = field(default_factory=dict)
    text: str | None = None


# ------------------------------------------------------------------------ audit log
class AuditLog:
    """Append-only SQLite log of predictions (hashes and outputs, no raw inputs)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        with self._connect() as con:
            con.execute(
                "CREATE TABLE IF NOT EXISTS predictions (id INTEGER PRIMARY KEY AUTOINCREMENT, "
                "time TEXT NOT NULL, model_sha256 TEXT NOT NULL, input_sha256 TEXT NOT NULL, "
                "outputs TEXT NOT NULL, latency_ms REAL NOT NULL, status INTEGER NOT NULL)"
            )

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=30)

    def write(self, model_sha: str, input_sha: str, outputs: dict[str, Any],
              latency_ms: float, status: int = 200) -> None:
        """Append one row."""
        row = (datetime.now(timezone.utc).isoformat(timespec="milliseconds"), model_sha,
               input_sha, json.dumps(outputs, default=float), float(latency_ms), status)
        with self._lock, self._connect() as con:
            con.execute("INSERT INTO predictions (time, model_sha256, input_sha256, outputs, "
                        "latency_ms, status) VALUES (?, ?, ?, ?, ?, ?)", row)

    def rows(self) -> list[dict[str, Any]]:
        """Every row, oldest first (for tests and inspection)."""
        with self._connect() as con:
            con.row_factory = sqlite3.Row
            return [dict(r) for r in con.execute("SELECT * FROM predictions ORDER BY id")]


def input_sha256(inputs: Inputs) -> str:
    """sha256 over the image bytes, the tabular values and the text (canonical JSON)."""
    digest = hashlib.sha256()
    digest.update(hashlib.sha256(inputs.image or b"").digest())
    digest.update(json.dumps(inputs.tabular, sort_keys=True, default=str).encode())
    digest.update(json.dumps(inputs.text).encode())
    return digest.hexdigest()


# ------------------------------------------------------------------------ the model
class ServedModel:
    """A loaded run: the estimator, an optional ONNX predictor and what the API reports."""

    def __init__(self, run: Path) -> None:
        from medfuse.runs import load_model

        self.run = run
        self.clf = load_model(run)
        self.spec = self.clf.spec
        self.onnx: Any = None
        if (run / "model.onnx").is_file():
            from medfuse.export import OnnxPredictor
            from medfuse.io import MANIFEST, RunDirError

            listed = json.loads((run / MANIFEST).read_text()).get("files", {})
            if "model.onnx" not in listed:  # load_model checked every listed file
                raise RunDirError(
                    f"'{run / 'model.onnx'}' is not in manifest.json, so it cannot be "
                    "checked: re-create it with `medfuse export RUN` or delete it"
                )

            self.onnx = OnnxPredictor(run, clf=self.clf)
        self.lock = threading.Lock()
        self.sha256 = self._model_sha()
        tab = getattr(self.clf.pre_, "tabular_", None)
        self.categories: dict[str, list[str]] = (
            {k: list(v) for k, v in tab.categories_.items()} if tab is not None else {}
        )

    def _model_sha(self) -> str:
        from medfuse.io import MANIFEST, sha256

        path = self.run / MANIFEST
        if path.is_file():
            files = json.loads(path.read_text()).get("files", {})
            if "model.safetensors" in files:
                return str(files["model.safetensors"])
            return sha256(path)
        return "unknown"

    @property
    def backend(self) -> str:
        return "onnxruntime" if self.onnx is not None else "pytorch"

    def predict_proba(self, df: pd.DataFrame) -> np.ndarray:
        if self.onnx is not None:
            return np.asarray(self.onnx.predict_proba(df))
        with self.lock:
            return np.asarray(self.clf.predict_proba(df))

    def explain(self, df: pd.DataFrame) -> dict[str, Any]:
        from medfuse.explain import explain

        with self.lock:
            return explain(self.clf, df, rows=[0])[0]

    def metrics(self) -> dict[str, Any] | None:
        path = self.run / "metrics.json"
        if not path.is_file():
            return None
        try:
            out: dict[str, Any] = json.loads(path.read_text())
        except json.JSONDecodeError:
            return None
        return out

    def card(self, metrics: dict[str, Any] | None) -> dict[str, Any]:
        """A short model card."""
        from medfuse.io import MANIFEST

        manifest: dict[str, Any] = {}
        if (self.run / MANIFEST).is_file():
            manifest = json.loads((self.run / MANIFEST).read_text())
        headline = {k: metrics.get(k) for k in ("n", "accuracy", "roc_auc", "pr_auc",
                                                 "sensitivity", "specificity")
                    if k in metrics} if metrics else {}
        return {
            "name": self.run.name,
            "estimator": type(self.clf).__name__,
            "modalities": list(self.spec.modalities),
            "target": self.spec.target,
            "positive": getattr(self.spec, "positive", None),
            "classes": list(self.clf.classes_),
            "epochs": getattr(self.clf, "epochs_", None),
            "created": manifest.get("created"),
            "versions": manifest.get("versions", {}),
            "model_sha256": self.sha256,
            "backend": self.backend,
            "test_metrics": headline,
            "intended_use": "Research and decision support only; not a medical device. "
                            "Predictions must be reviewed by a qualified clinician.",
        }

    def positive_index(self) -> int:
        classes = list(self.clf.classes_)
        positive = getattr(self.spec, "positive", None)
        if positive is not None and str(positive) in classes:
            return classes.index(str(positive))
        return len(classes) - 1


# ------------------------------------------------------------------ input parsing
async def _read_body(request: Request, limit: int) -> bytes:
    """The request body, or 413 as soon as it exceeds ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise InputError([_problem("body", f"request body of {int(declared)} bytes exceeds "
                                   f"the {limit} byte limit; send a smaller image, or start "
                                   "the server with a larger --max-upload-mb")], 413)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise InputError([_problem("body", f"request body exceeds the {limit} byte "
                                       "limit; send a smaller image, or start the server "
                                       "with a larger --max-upload-mb")], 413)
        chunks.append(chunk)
    return b"".join(chunks)


async def _parse(request: Request, body: bytes) -> Inputs:
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "application/json":
        try:
            data = json.loads(body or b"null")
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise InputError([_problem("body", f"invalid JSON: {e}")]) from e
        except RecursionError as e:  # [[[[...]]]] deeper than the parser's stack
            raise InputError([_problem("body", "invalid JSON: nested too deeply")]) from e
        if not isinstance(data, dict):
            raise InputError([_problem("body", "the JSON body must be an object with "
                                       "'image_base64', 'tabular' and 'text'")])
        inputs = Inputs(text=data.get("text"))
        tab = data.get("tabular") or {}
        if not isinstance(tab, dict):
            raise InputError([_problem("tabular", "'tabular' must be an object "
                                       "{column: value}")])
        inputs.tabular = dict(tab)
        for name, value in [("text", inputs.text), *inputs.tabular.items()]:
            _check_unicode(str(name), value)
        if data.get("image_base64"):
            raw = str(data["image_base64"])
            if raw.startswith("data:") and "," in raw:
                raw = raw.split(",", 1)[1]
            try:
                inputs.image = base64.b64decode(raw, validate=True)
            except (binascii.Error, ValueError) as e:
                raise InputError([_problem("image_base64", f"not valid base64: {e}")]) from e
        if inputs.text is not None and not isinstance(inputs.text, str):
            raise InputError([_problem("text", "'text' must be a string")])
        return inputs
    if ctype in ("multipart/form-data", "application/x-www-form-urlencoded"):
        request._body = body  # let starlette parse the body already read
        try:
            form = await request.form(max_part_size=len(body) + 1)
        except Exception as e:  # multipart parser errors
            raise InputError([_problem("body", f"malformed form data: {e}")]) from e
        inputs = Inputs()
        for key, value in form.multi_items():
            if isinstance(value, UploadFile):
                if key == "image":
                    inputs.image = await value.read()
                    inputs.image_name = value.filename or ""
            elif key == "text":
                inputs.text = str(value)
            elif key != "image":
                inputs.tabular[key] = value
        return inputs
    raise InputError([_problem("content-type", f"unsupported content type {ctype!r}: send "
                               "multipart/form-data or application/json")], 415)


def _check_unicode(name: str, value: Any) -> None:
    """422 for strings that are not valid Unicode (JSON ``"\\udcff"``: a lone surrogate)."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as e:
            raise InputError([_problem(name, f"field '{name}' is not valid Unicode text "
                                       f"({e.reason} at position {e.start})")]) from e


def _check_pixels(path: Path, max_pixels: int) -> None:
    """422 for images over ``max_pixels`` pixels, checked from the header before decoding."""
    from PIL import Image

    from medfuse.data.images import is_dicom

    if is_dicom(path):
        import pydicom

        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            size = int(ds.get("Rows", 0)) * int(ds.get("Columns", 0))
            size *= int(ds.get("NumberOfFrames", 1) or 1)
        except Exception as e:
            reason = str(e).replace(str(path), "the upload")
            raise InputError([_problem("image", f"cannot decode the DICOM image: {reason}")]
                             ) from e
    else:
        try:
            with Image.open(path) as img:
                size = img.size[0] * img.size[1]
        except Image.DecompressionBombError as e:
            raise InputError([_problem("image", f"image rejected as a decompression bomb: {e} "
                                       "Downscale it, or start the server with a larger "
                                       "--max-pixels")]) from e
        except Exception as e:
            reason = str(e).replace(str(path), "the upload")
            raise InputError([_problem("image", "cannot decode the image (supported: PNG, "
                                       f"JPEG, TIFF, BMP, DICOM): {reason}")]) from e
    if size > max_pixels:
        raise InputError([_problem("image", f"image has {size} pixels, more than the "
                                   f"{max_pixels} allowed: rejected as a possible "
                                   "decompression bomb. Downscale it, or start the server "
                                   "with a larger --max-pixels")])


def _validate(model: ServedModel, inputs: Inputs, image_path: Path | None,
              max_pixels: int) -> tuple[pd.DataFrame, list[str], list[str]]:
    """A one-row table for the model, warnings and the modalities the request lacks;
    :class:`InputError` on bad input."""
    from medfuse.data.images import read_image
    from medfuse.data.tabular import UNKNOWN

    spec = model.spec
    optional = model.clf.handles_missing  # trained to predict without a modality
    problems: list[dict[str, Any]] = []
    warnings: list[str] = []
    row: dict[str, Any] = {}
    if spec.image:
        nothing = inputs.image is None or image_path is None or (
            not inputs.image and not inputs.image_name)  # a form's empty file input
        if optional and nothing:
            row[spec.image] = ""  # predicted from the other modalities
        elif inputs.image is None or image_path is None:
            problems.append(_problem("image", "field 'image' is required: upload a PNG, "
                                     "JPEG or DICOM file (or send image_base64)"))
        elif not inputs.image:
            problems.append(_problem("image", "the uploaded image is empty (0 bytes): "
                                     "choose the file again"))
        else:
            try:
                _check_pixels(image_path, max_pixels)
                read_image(image_path)
            except InputError as e:
                problems += e.problems
            except (MedfuseError, OSError) as e:
                reason = str(e).replace(str(image_path), "the upload")
                problems.append(_problem("image", f"cannot decode the uploaded image: {reason}"))
            row[spec.image] = str(image_path)
    for col, kind in spec.tabular.items():
        value = inputs.tabular.get(col)
        if value is None or (isinstance(value, str) and not value.strip()):
            if optional:  # imputed as in training; all of them missing: no tabular input
                row[col] = np.nan
            else:
                problems.append(_problem(col, f"field '{col}' ({kind}) is required"))
            continue
        if kind == "continuous":
            try:
                if isinstance(value, bool):
                    raise ValueError
                number = float(value)
            except (TypeError, ValueError):
                problems.append(_problem(col, f"field '{col}' must be a number; got {value!r}"))
                continue
            if not math.isfinite(number):
                problems.append(_problem(col, f"field '{col}' must be a finite number; "
                                         f"got {value!r}"))
                continue
            row[col] = number
        else:
            text = str(value).strip()
            known = model.categories.get(col, [])
            if known and text not in known:
                warnings.append(f"field '{col}': value {text!r} was not seen in training; it "
                                f"is treated as {UNKNOWN} (known: {', '.join(known)})")
            row[col] = text
    extra = sorted(set(inputs.tabular) - set(spec.tabular))
    if extra:
        warnings.append(f"ignored unknown field(s) {extra}")
    if spec.text:
        if inputs.text is None and optional:
            row[spec.text] = ""
        elif inputs.text is None:
            problems.append(_problem("text", f"field 'text' (the '{spec.text}' column) is "
                                     "required; send an empty string if there is no text"))
        else:
            row[spec.text] = inputs.text
    if problems:
        raise InputError(problems)
    missing = missing_modalities(spec, row)
    if missing and len(missing) == len(spec.modalities):
        raise InputError([_problem("body", "no input at all: send at least one of "
                                   + ", ".join(_FIELDS[m] for m in spec.modalities))])
    if missing:
        warnings.append(f"no {' / '.join(missing)} input: predicted from "
                        f"{' + '.join(m for m in spec.modalities if m not in missing)} alone")
    if spec.group:  # patient ids only group rows in training; one request is one patient
        row[spec.group] = "request"
    return pd.DataFrame([row]), warnings, missing


_FIELDS = {"image": "'image'", "tabular": "the tabular fields", "text": "'text'"}


def missing_modalities(spec: Any, row: dict[str, Any]) -> list[str]:
    """The modalities a one-row request lacks (empty image path / text, no tabular value)."""
    from medfuse.data.dataset import presence

    has = presence(pd.DataFrame([row]), spec)[0]
    return [m for m, h in zip(spec.modalities, has, strict=True) if not h]


def overlay_png(path: Path, regions: list[dict[str, Any]]) -> bytes:
    """PNG of the image at ``path`` with the explanation's regions circled."""
    from PIL import ImageDraw

    from medfuse.data.images import read_image

    img = read_image(path)
    scale = 1.0
    if max(img.size) < 256:  # small images: enlarge so the circles are visible
        scale = 256 / max(img.size)
        img = img.resize((round(img.size[0] * scale), round(img.size[1] * scale)))
    draw = ImageDraw.Draw(img)
    width = max(2, round(max(img.size) / 150))
    for i, r in enumerate(regions):
        x, y, rad = (float(r[k]) * scale for k in ("x", "y", "r"))
        rad = max(rad, 3.0)
        colour = (0, 220, 80) if i == 0 else (255, 200, 0)
        draw.ellipse((x - rad, y - rad, x + rad, y + rad), outline=colour, width=width)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _suffix(data: bytes, name: str) -> str:
    if len(data) > 132 and data[128:132] == b"DICM":
        return ".dcm"
    ext = Path(name).suffix.lower()
    return ext if ext and len(ext) <= 6 else ".img"


# --------------------------------------------------------------------------- app
def create_app(run: Path, token: str | None = None, audit_db: Path | None = None,
               max_upload_mb: float = 20, max_pixels: int = 50_000_000) -> FastAPI:
    """The web app and REST API over the saved model in ``run``.

    Parameters
    ----------
    run:
        A run directory of ``medfuse train``. If it holds ``model.onnx`` (see
        :func:`medfuse.export.export_onnx`), predictions run on onnxruntime.
    token:
        Bearer token required on ``/api/*``; default the ``MEDFUSE_TOKEN`` environment
        variable; no authentication when neither is set.
    audit_db:
        SQLite audit log, default ``run/audit.sqlite``.
    max_upload_mb:
        Larger request bodies get 413.
    max_pixels:
        Larger images get 422 (decompression bombs).

    Returns
    -------
    FastAPI
        The application (``app.state.model`` is the :class:`ServedModel`,
        ``app.state.audit`` the :class:`AuditLog`).
    """
    from PIL import Image

    from medfuse.serve.page import render_page

    run = Path(run)
    model = ServedModel(run)
    token = token or os.environ.get(TOKEN_ENV) or None
    audit = AuditLog(Path(audit_db) if audit_db else run / AUDIT_FILE)
    limit = int(max_upload_mb * 1024 * 1024)
    # Pillow refuses (> 2x) or warns (> 1x) above this; our own check runs first
    Image.MAX_IMAGE_PIXELS = max(int(max_pixels), 1)

    from fastapi_offline import FastAPIOffline  # /docs and /redoc assets served locally

    app: FastAPI = FastAPIOffline(
        title="medfuse", version="1",
        description=f"Predictions of the model in '{run.name}' ({model.backend}). "
        "Research use only.",
    )
    app.state.model = model
    app.state.audit = audit

    @app.exception_handler(InputError)
    async def _input_error(request: Request, exc: InputError) -> JSONResponse:
        return JSONResponse({"detail": exc.problems}, status_code=exc.status)

    @app.middleware("http")
    async def _auth(request: Request, call_next: Any) -> Response:
        if token and request.url.path.startswith("/api/"):
            header = request.headers.get("authorization", "")
            scheme, _, given = header.partition(" ")
            if scheme.lower() != "bearer" or not secrets.compare_digest(given.strip(), token):
                return JSONResponse({"detail": [{"loc": ["header", "authorization"],
                                                 "msg": "missing or invalid bearer token"}]},
                                    status_code=401, headers={"WWW-Authenticate": "Bearer"})
        response: Response = await call_next(request)
        return response

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/api/model")
    def model_info() -> dict[str, Any]:
        metrics = model.metrics()
        return {
            "spec": model.spec.model_dump(mode="json"),
            "classes": list(model.clf.classes_),
            "categories": model.categories,
            "threshold": float(model.clf.threshold_),
            "temperature": float(model.clf.temperature_),
            "backend": model.backend,
            "handles_missing": model.clf.handles_missing,
            "metrics": metrics,
            "card": model.card(metrics),
        }

    predict_body = {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {"schema": {"type": "object", "properties": {
                    "image": {"type": "string", "format": "binary"},
                    "text": {"type": "string"},
                    **{c: {"type": "number" if k == "continuous" else "string"}
                       for c, k in model.spec.tabular.items()},
                }}},
                "application/json": {"schema": {"type": "object", "properties": {
                    "image_base64": {"type": "string"},
                    "tabular": {"type": "object"},
                    "text": {"type": "string"},
                }}},
            },
        }
    }

    @app.post("/api/predict", openapi_extra=predict_body)
    async def predict(request: Request) -> JSONResponse:
        t0 = time.perf_counter()
        explain = request.query_params.get("explain", "").lower() in _TRUE
        body = await _read_body(request, limit)
        inputs = await _parse(request, body)
        result = await run_in_threadpool(_predict, inputs, explain)
        latency = (time.perf_counter() - t0) * 1000.0
        result["latency_ms"] = round(latency, 2)
        audited = {k: v for k, v in result.items() if k != "explanation"}
        if "explanation" in result:
            audited["regions"] = result["explanation"]["regions"]
        await run_in_threadpool(audit.write, model.sha256, input_sha256(inputs), audited,
                                latency)
        return JSONResponse(result)

    def _predict(inputs: Inputs, explain: bool) -> dict[str, Any]:
        with tempfile.TemporaryDirectory(prefix="medfuse-serve-") as tmp:
            path = None
            if inputs.image is not None:
                path = Path(tmp) / ("upload" + _suffix(inputs.image, inputs.image_name))
                path.write_bytes(inputs.image)
            df, warnings, missing = _validate(model, inputs, path, max_pixels)
            try:
                proba = model.predict_proba(df)
            except DataError as e:
                raise InputError([_problem("body", str(e))]) from e
            if not np.isfinite(proba).all():  # JSON has no NaN: say why instead of a 500
                raise InputError([_problem("body", "the model cannot score these values (its "
                                           "probabilities are not finite); check the "
                                           "inputs' ranges")])
            classes = [str(c) for c in model.clf.classes_]
            decision = str(model.clf.decide(proba)[0])
            pos = model.positive_index()
            out: dict[str, Any] = {
                "probability": float(proba[0, pos]),
                "positive_class": classes[pos],
                "probabilities": {c: float(p) for c, p in zip(classes, proba[0], strict=True)},
                "decision": decision,
                "threshold": float(model.clf.threshold_),
                "modalities": None,
                "missing": missing,
                "warnings": warnings,
                "backend": model.backend,
            }
            if isinstance(model.clf, FusionClassifier) and model.clf.fusion == "gated":
                with model.lock:
                    gates = model.clf.modality_weights(df)
                out["gates"] = {m: float(gates[m].iloc[0]) for m in gates.columns}
            if explain:
                entry = model.explain(df)
                explanation = {k: entry.get(k, []) for k in ("regions", "words", "features")}
                if path is not None and model.spec.image and df[model.spec.image].iloc[0]:
                    png = overlay_png(path, entry.get("regions", []))
                    explanation["overlay_png_base64"] = base64.b64encode(png).decode()
                out["modalities"] = entry.get("modalities")
                out["explanation"] = explanation
            return out

    @app.get("/", response_class=HTMLResponse)
    def index() -> HTMLResponse:
        return HTMLResponse(render_page(model, token_required=bool(token)))

    @app.get("/report", response_model=None)
    def report() -> FileResponse | JSONResponse:
        path = run / "report.html"
        if not path.is_file():
            return JSONResponse({"detail": "this run has no report.html; create it with "
                                 "'medfuse report RUN'"}, status_code=404)
        return FileResponse(path, media_type="text/html")

    return app
