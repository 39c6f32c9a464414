"""Job wrapper of the server load test (``medfuse.benchmark.serve_load``)."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any


def run(out: str, quick: bool = False, model_dir: str | None = None) -> dict[str, Any]:
    """The job: ``serve_load.run(out, quick, model_dir)`` with paths."""
    import importlib

    serve_load = importlib.import_module("medfuse.benchmark.serve_load")
    kwargs: dict[str, Any] = {"quick": quick}
    if model_dir and "model_dir" in inspect.signature(serve_load.run).parameters:
        kwargs["model_dir"] = Path(model_dir)
    result: dict[str, Any] = serve_load.run(Path(out), **kwargs)
    return result
