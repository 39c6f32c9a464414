"""Run one benchmark job in a fresh process: ``python -m medfuse.benchmark._job TARGET KWARGS OUT``.

``TARGET`` is ``module:function`` inside :mod:`medfuse.benchmark`, ``KWARGS`` a JSON
object of its keyword arguments, ``OUT`` the JSON file its result (a dict) is written to.
A failure writes ``{"error": ...}`` and exits with status 1. The parent measures the
process's wall time and peak RSS (see :func:`medfuse.benchmark.run_job`).
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import traceback
from pathlib import Path
from typing import Any


def _write(path: Path, result: dict[str, Any]) -> None:
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(result, indent=1, default=_plain))
    os.replace(tmp, path)


def _plain(value: Any) -> Any:
    """numpy scalars / arrays and paths as JSON values."""
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def main(argv: list[str]) -> int:
    target, kwargs, out = argv[0], json.loads(argv[1]), Path(argv[2])
    module_name, _, func_name = target.partition(":")
    try:
        module = importlib.import_module(f"medfuse.benchmark.{module_name}")
        result = getattr(module, func_name)(**kwargs)
    except BaseException as e:  # report everything, also KeyboardInterrupt / SystemExit
        _write(out, {"error": f"{type(e).__name__}: {e}",
                     "traceback": traceback.format_exc()[-4000:]})
        return 1
    _write(out, dict(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
