"""Latency of ``medfuse serve``: sequential and concurrent predictions over real HTTP.

Starts ``medfuse serve`` on a trained run as a subprocess (free loopback port; see
:mod:`medfuse.benchmark.serving`), then sends
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
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image

from medfuse.benchmark.serving import make_request, running_server, summarise


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
    with running_server(args.run) as server:
        url = server.url
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
        startup = server.startup_s
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
