"""The endpoints of ``medfuse serve`` (see :mod:`medfuse.serve.app`) as an ``APIRouter``
over one :class:`~medfuse.serve.model.ServedModel` and its audit log."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse

from medfuse.config import DataSpec
from medfuse.serve.audit import AuditLog, input_sha256
from medfuse.serve.inputs import parse_inputs, read_body
from medfuse.serve.model import ServedModel
from medfuse.serve.page import render_page
from medfuse.serve.prediction import predict_inputs

_TRUE = {"1", "true", "yes", "on"}


def predict_openapi(spec: DataSpec, optional: bool = False) -> dict[str, Any]:
    """The OpenAPI request body of ``POST /api/predict``: a form or a JSON object with one
    field per column of ``spec`` (the image and text columns also by their aliases
    ``image`` / ``image_base64`` and ``text``). ``optional``: no input is required (a model
    that predicts without a modality)."""
    tabular = {c: {"type": "number" if k == "continuous" else "string",
                   "description": f"the '{c}' column ({k})"} for c, k in spec.tabular.items()}
    form: dict[str, Any] = dict(tabular)
    body: dict[str, Any] = dict(tabular)
    required = [] if optional else list(spec.tabular)
    if spec.image:
        form[spec.image] = {"type": "string", "format": "binary",
                            "description": f"the '{spec.image}' column: a PNG, JPEG or "
                            "DICOM file (alias: image)"}
        body[spec.image] = {"type": "string", "format": "byte",
                            "description": f"the '{spec.image}' column: the image file, "
                            "base64 (alias: image_base64)"}
        required.append(spec.image)
    if spec.text:
        for schema in (form, body):
            schema[spec.text] = {"type": "string",
                                 "description": f"the '{spec.text}' column (alias: text)"}
        required.append(spec.text)
    body["tabular"] = {"type": "object", "description": "the tabular columns, nested "
                       "(alternative to giving them at the top level)"}
    req = {"required": required} if required else {}
    return {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {"schema": {"type": "object", "properties": form,
                                                   **req}},
                "application/json": {"schema": {"type": "object", "properties": body,
                                                **req}},
            },
        }
    }


def build_router(model: ServedModel, audit: AuditLog, *, limit: int, max_pixels: int,
                 token_required: bool) -> APIRouter:
    """The routes over ``model``: bodies over ``limit`` bytes get 413, images over
    ``max_pixels`` 422; every prediction is written to ``audit``."""
    router = APIRouter()

    @router.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @router.get("/api/model")
    def model_info() -> dict[str, Any]:
        metrics = model.metrics()
        return {
            "spec": model.spec.model_dump(mode="json"),
            "classes": list(model.clf.classes_),
            "categories": model.categories,
            "threshold": float(model.clf.threshold_),
            "temperature": float(model.clf.temperature_),
            "multilabel": bool(getattr(model.clf, "multilabel", False)),
            "thresholds": ({str(c): float(t) for c, t in zip(
                model.clf.classes_, getattr(model.clf, "thresholds", []), strict=False)}
                if getattr(model.clf, "multilabel", False) else None),
            "conformal_alpha": model.conformal_alpha(),
            "backend": model.backend,
            "handles_missing": model.clf.handles_missing,
            "metrics": metrics,
            "card": model.card(metrics),
        }

    @router.post("/api/predict", openapi_extra=predict_openapi(
        model.spec, optional=model.clf.handles_missing))
    async def predict(request: Request) -> JSONResponse:
        t0 = time.perf_counter()
        explain = request.query_params.get("explain", "").lower() in _TRUE
        body = await read_body(request, limit)
        inputs = await parse_inputs(request, body, model.spec)
        result = await run_in_threadpool(predict_inputs, model, inputs, explain, max_pixels)
        latency = (time.perf_counter() - t0) * 1000.0
        result["latency_ms"] = round(latency, 2)
        audited = {k: v for k, v in result.items() if k != "explanation"}
        if "explanation" in result:
            audited["regions"] = result["explanation"]["regions"]
        await run_in_threadpool(audit.write, model.sha256, input_sha256(inputs), audited,
                                latency)
        return JSONResponse(result)

    @router.get("/", response_class=HTMLResponse)
    def index() -> HTMLResponse:
        return HTMLResponse(render_page(model, token_required=token_required))

    @router.get("/report", response_model=None)
    def report() -> FileResponse | JSONResponse:
        path = model.run / "report.html"
        if not path.is_file():
            return JSONResponse({"detail": "this run has no report.html; create it with "
                                 "'medfuse report RUN'"}, status_code=404)
        return FileResponse(path, media_type="text/html")

    return router
