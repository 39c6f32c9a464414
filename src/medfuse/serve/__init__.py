"""``medfuse serve RUN``: a local web app and REST API over a saved model.

>>> from medfuse.serve import serve  # doctest: +SKIP
>>> serve(Path("runs/tiny"), port=8000)  # doctest: +SKIP

See :mod:`medfuse.serve.app` for the endpoints.
"""

from __future__ import annotations

from pathlib import Path

from medfuse.serve.app import create_app

__all__ = ["create_app", "serve"]


def serve(
    run: Path | str,
    host: str = "127.0.0.1",
    port: int = 8000,
    token: str | None = None,
    audit_db: Path | str | None = None,
    max_upload_mb: float = 20,
    max_pixels: int = 50_000_000,
    log_level: str = "info",
) -> None:
    """Serve the model in ``run`` with uvicorn until interrupted.

    Parameters
    ----------
    run:
        Run directory of ``medfuse train``.
    host, port:
        Where to listen; the default only accepts local connections.
    token:
        Bearer token for ``/api/*`` (default: ``MEDFUSE_TOKEN``; none: no auth).
    audit_db:
        SQLite audit log (default ``run/audit.sqlite``).
    max_upload_mb, max_pixels:
        Upload size (413 above) and image size (422 above) limits.
    log_level:
        uvicorn's log level.
    """
    import uvicorn

    app = create_app(Path(run), token=token, audit_db=Path(audit_db) if audit_db else None,
                     max_upload_mb=max_upload_mb, max_pixels=max_pixels)
    uvicorn.run(app, host=host, port=port, log_level=log_level, workers=1)
