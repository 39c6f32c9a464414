"""Latency of ``medfuse serve``: sequential and concurrent predictions over real HTTP.

Starts the server on a trained run as a subprocess (free loopback port), then sends
``--sequential`` predictions one after another and ``--concurrent`` predictions from
``--threads`` threads, and reports p50 / p95 / max latency, throughput and errors::

    .venv/bin/python benchmarks/serve_latency.py runs/tiny --out runs/tiny/serve_latency.json

Inputs are built from ``GET /api/model``: a random 224 x 224 PNG (or ``--image``), each
continuous column 50, each categorical column its first known category, a short text.
``--explain`` adds ``?explain=true`` to the sequential requests.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(run: Path, port: int, audit: Path, log: Path) -> subprocess.Popen[bytes]:
    code = (f"from medfuse.serve import serve; serve({str(run)!r}, port={port}, "
            f"audit_db={str(audit)!r}, log_level='warning')")
    with open(log, "w") as fh:
        return subprocess.Popen([sys.executable, "-c", code], stdout=fh,
                                stderr=subprocess.STDOUT)


def wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 180) -> float:
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


def make_request(info: dict[str, Any], image: bytes) -> tuple[dict[str, Any], dict[str, Any]]:
    """(files, data) for a multipart prediction matching the model's spec."""
    spec = info["spec"]
    data: dict[str, str] = {}
    for col, kind in spec["tabular"].items():
        cats = info.get("categories", {}).get(col) or ["unknown"]
        data[col] = "50" if kind == "continuous" else cats[0]
    if spec.get("text"):
        data["text"] = "lesion has grown since the last visit"
    files = {"image": ("bench.png", image, "image/png")} if spec.get("image") else {}
    return files, data


def summarise(latencies: list[float], errors: int, wall: float) -> dict[str, Any]:
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


def one(client: httpx.Client, path: str, files: dict[str, Any],
        data: dict[str, Any]) -> tuple[float, bool]:
    t0 = time.perf_counter()
    try:
        ok = client.post(path, files=files, data=data).status_code == 200
    except httpx.HTTPError:
        ok = False
    return (time.perf_counter() - t0) * 1000.0, ok


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run", type=Path, help="run directory of 'medfuse train'")
    ap.add_argument("--out", type=Path, help="JSON output (default RUN/serve_latency.json)")
    ap.add_argument("--sequential", type=int, default=200)
    ap.add_argument("--concurrent", type=int, default=500)
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--image", type=Path, help="image to send (default: random 224x224 PNG)")
    ap.add_argument("--explain", action="store_true", help="sequential requests explain too")
    args = ap.parse_args(argv)

    if args.image:
        image = args.image.read_bytes()
    else:
        buf = io.BytesIO()
        pixels = np.random.default_rng(0).integers(0, 255, (224, 224, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(buf, format="PNG")
        image = buf.getvalue()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="medfuse-bench-") as tmp:
        log = Path(tmp) / "server.log"
        proc = start_server(args.run, port, Path(tmp) / "audit.sqlite", log)
        try:
            startup = wait_ready(url, proc, log)
            with httpx.Client(base_url=url, timeout=120) as client:
                info = client.get("/api/model").json()
                files, data = make_request(info, image)
                path = "/api/predict" + ("?explain=true" if args.explain else "")
                for _ in range(3):  # warm-up
                    one(client, path, files, data)
                t0 = time.perf_counter()
                seq = [one(client, path, files, data) for _ in range(args.sequential)]
                seq_wall = time.perf_counter() - t0
            with httpx.Client(base_url=url, timeout=120,
                              limits=httpx.Limits(max_connections=args.threads)) as client:
                t0 = time.perf_counter()
                with ThreadPoolExecutor(args.threads) as pool:
                    conc = list(pool.map(lambda _: one(client, "/api/predict", files, data),
                                         range(args.concurrent)))
                conc_wall = time.perf_counter() - t0
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
    result = {
        "run": str(args.run), "backend": info.get("backend"), "startup_s": round(startup, 2),
        "cpus": os.cpu_count(), "explain": args.explain,
        "sequential": summarise([ms for ms, ok in seq if ok], sum(not ok for _, ok in seq),
                                seq_wall),
        "concurrent": {"threads": args.threads,
                       **summarise([ms for ms, ok in conc if ok],
                                   sum(not ok for _, ok in conc), conc_wall)},
    }
    out = args.out or args.run / "serve_latency.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
