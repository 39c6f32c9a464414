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

This module wires the parts together: :mod:`~medfuse.serve.model` (the loaded run),
:mod:`~medfuse.serve.inputs` and :mod:`~medfuse.serve.validation` (the request),
:mod:`~medfuse.serve.prediction` (the answer), :mod:`~medfuse.serve.audit`,
:mod:`~medfuse.serve.auth`, :mod:`~medfuse.serve.routes` and :mod:`~medfuse.serve.page`.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline  # /docs and /redoc assets served locally
from PIL import Image

from medfuse.serve.audit import AUDIT_FILE, AuditLog, input_sha256
from medfuse.serve.auth import TOKEN_ENV, bearer_auth, resolve_token
from medfuse.serve.inputs import InputError, Inputs, input_error_response
from medfuse.serve.model import ServedModel
from medfuse.serve.prediction import overlay_png
from medfuse.serve.routes import build_router
from medfuse.serve.validation import missing_modalities

__all__ = ["AUDIT_FILE", "TOKEN_ENV", "AuditLog", "InputError", "Inputs", "ServedModel",
           "create_app", "input_sha256", "missing_modalities", "overlay_png"]


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
    run = Path(run)
    model = ServedModel(run)
    token = resolve_token(token)
    audit = AuditLog(Path(audit_db) if audit_db else run / AUDIT_FILE)
    limit = int(max_upload_mb * 1024 * 1024)
    # Pillow refuses (> 2x) or warns (> 1x) above this; our own check runs first
    Image.MAX_IMAGE_PIXELS = max(int(max_pixels), 1)

    app: FastAPI = FastAPIOffline(
        title="medfuse", version="1",
        description=f"Predictions of the model in '{run.name}' ({model.backend}). "
        "Research use only.",
    )
    app.state.model = model
    app.state.audit = audit
    app.exception_handler(InputError)(input_error_response)
    app.middleware("http")(bearer_auth(token))
    app.include_router(build_router(model, audit, limit=limit, max_pixels=max_pixels,
                                    token_required=bool(token)))
    return app
