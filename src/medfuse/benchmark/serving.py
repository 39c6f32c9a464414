"""A real ``medfuse serve`` process for benchmarks: start, wait, build requests, summarise.

Shared by :mod:`medfuse.benchmark.serve_load` and ``benchmarks/serve_latency.py``.

>>> summarise([10.0, 20.0, 30.0], errors=1, wall=2.0)["p50_ms"]
20.0
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


def free_port() -> int:
    """A TCP port free on the loopback interface right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    """A running ``medfuse serve`` process."""

    url: str
    proc: subprocess.Popen[bytes]
    log: Path
    startup_s: float


def wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 180) -> float:
    """Seconds until ``GET /health`` answers 200; ``RuntimeError`` if the process dies."""
    import httpx

    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited:\n{log.read_text()}")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return time.perf_counter() - t0
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"server not ready after {timeout} s:\n{log.read_text()}")


@contextlib.contextmanager
def running_server(run: Path, *extra: str, timeout: float = 180) -> Iterator[Server]:
    """``medfuse serve RUN`` on a free loopback port (audit log in a temp dir), as a user
    starts it; terminated (then killed) on exit."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="medfuse-bench-") as tmp:
        log = Path(tmp) / "server.log"
        cmd = [sys.executable, "-m", "medfuse.cli", "serve", str(run), "--port", str(port),
               "--audit-db", str(Path(tmp) / "audit.sqlite"), *extra]
        with open(log, "wb") as fh:
            proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT)
        try:
            startup = wait_ready(url, proc, log, timeout)
            yield Server(url, proc, log, startup)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def make_request(info: dict[str, Any], image: bytes, text: str = "lesion has grown since the "
                 "last visit", number: float = 50.0, pick: int = 0
                 ) -> tuple[dict[str, Any], dict[str, str]]:
    """(files, data) for a multipart prediction matching ``GET /api/model``'s spec.

    Continuous columns get ``number``, categorical ones their ``pick``-th known category.
    """
    spec = info["spec"]
    data: dict[str, str] = {}
    for col, kind in spec["tabular"].items():
        cats = info.get("categories", {}).get(col) or ["unknown"]
        data[col] = str(number) if kind == "continuous" else cats[pick % len(cats)]
    if spec.get("text"):
        data["text"] = text
    files = {"image": ("bench.png", image, "image/png")} if spec.get("image") else {}
    return files, data


def summarise(latencies: list[float], errors: int, wall: float) -> dict[str, Any]:
    """Count, errors, p50 / p95 / max / mean latency (ms), wall time and throughput."""
    arr = np.asarray(latencies) if latencies else np.zeros(1)
    return {
        "n": len(latencies) + errors, "errors": errors,
        "p50_ms": round(float(np.percentile(arr, 50)), 2),
        "p95_ms": round(float(np.percentile(arr, 95)), 2),
        "max_ms": round(float(arr.max()), 2),
        "mean_ms": round(float(arr.mean()), 2),
        "wall_s": round(wall, 2),
        "throughput_rps": round((len(latencies) + errors) / wall, 2) if wall else None,
    }
