"""Load test of ``medfuse serve``: many concurrent clients against a real server process.

Trains a tiny image + tabular + text model on ``synth-derm`` (or uses ``model_dir``),
starts ``medfuse serve`` on a free loopback port, sends a warm-up, then ``requests``
predictions from ``clients`` concurrent HTTP clients (half multipart uploads, half JSON
with base64 images, cycling through real rows), and records what was served, 5xx and
other failures, latency percentiles, throughput and the server's resident memory
(after the warm-up, at the end, peak). Memory growth over the run must stay under
``RSS_GROWTH_LIMIT_MB``::

    python -m medfuse.benchmark.serve_load --out runs/bench [--quick] [--model-dir RUN]

writes ``OUT/serve_load.json`` (the dict :func:`run` returns). Timing figures depend on the
machine and on whatever else runs on it.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import itertools
import json
import os
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RSS_GROWTH_LIMIT_MB = 50.0
FULL = {"requests": 2000, "clients": 32, "warmup": 200}
QUICK = {"requests": 200, "clients": 8, "warmup": 40}
RESULT_FILE = "serve_load.json"


@dataclass
class Payload:
    """One prediction request: multipart (``files`` + ``data``) or ``json``."""

    files: dict[str, Any] = field(default_factory=dict)
    data: dict[str, str] = field(default_factory=dict)
    json: dict[str, Any] | None = None


def train_tiny_model(out: Path, seed: int = 0) -> Path:
    """A small image + tabular + text model on generated ``synth-derm`` rows, saved in
    ``out`` (a few seconds on one CPU)."""
    from medfuse.config import DataSpec
    from medfuse.data import load_table
    from medfuse.data.synth import SYNTH_DERM_TABULAR, make_synth_derm
    from medfuse.estimators import FusionClassifier

    data = out / "data"
    data.mkdir(parents=True, exist_ok=True)
    make_synth_derm(data, n_rows=120, image_size=64, seed=seed).to_csv(data / "data.csv",
                                                                     index=False)
    spec = DataSpec(image="image_path", tabular=SYNTH_DERM_TABULAR, text="note",
                    target="label", group="patient_id", positive="1")
    df, _ = load_table(data / "data.csv", spec)
    clf = FusionClassifier(spec, image_backbone="small_cnn", pretrained="none",
                           image_size=64, max_epochs=2, batch_size=16, min_token_freq=1,
                           embed_dim=32, hidden_dims=(32,), progress=False, seed=seed)
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny model: more threads only contend on a busy machine
    try:
        clf.fit(df, run_dir=out / "fit")
    finally:
        torch.set_num_threads(threads)
    return clf.save(out / "model")


def _payloads(info: dict[str, Any], model_dir: Path, n: int = 32) -> list[Payload]:
    """``n`` different requests: real rows of the tiny model's data when present (else
    random images and defaults); every other one as JSON with a base64 image."""
    from medfuse.benchmark.serving import make_request

    spec = info["spec"]
    table = model_dir.parent / "data" / "data.csv"
    rows: list[dict[str, Any]] = []
    if table.is_file():
        import pandas as pd

        rows = [{str(k): v for k, v in r.items()}
                for r in pd.read_csv(table).head(n).to_dict("records")]
    out = []
    for i in range(n):
        row = rows[i] if i < len(rows) else {}
        image = (table.parent / str(row[spec["image"]])).read_bytes() \
            if spec.get("image") and row else _random_png(i)
        files, data = make_request(info, image, number=40.0 + i, pick=i)
        data.update({c: str(row[c]) for c in spec["tabular"] if c in row})
        if spec.get("text") and row.get(spec["text"]):
            data["text"] = str(row[spec["text"]])
        if i % 2:
            body: dict[str, Any] = {"tabular": {k: v for k, v in data.items() if k != "text"},
                                    "text": data.get("text")}
            if files:
                body["image_base64"] = base64.b64encode(image).decode()
            out.append(Payload(json=body))
        else:
            out.append(Payload(files=files, data=data))
    return out


def _random_png(seed: int, size: int = 224) -> bytes:
    import io

    import numpy as np
    from PIL import Image

    buf = io.BytesIO()
    pixels = np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


@dataclass
class _Tally:
    latencies: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    wall: float = 0.0


async def _fire(url: str, payloads: list[Payload], n: int, clients: int,
                timeout: float = 120.0) -> _Tally:
    """``n`` predictions from ``clients`` concurrent keep-alive connections."""
    import httpx

    tally = _Tally()
    counter = itertools.count()
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=timeout, limits=limits) as client:

        async def worker() -> None:
            while (i := next(counter)) < n:
                p = payloads[i % len(payloads)]
                t0 = time.perf_counter()
                try:
                    if p.json is not None:
                        res = await client.post("/api/predict", json=p.json)
                    else:
                        res = await client.post("/api/predict", files=p.files, data=p.data)
                except httpx.HTTPError as e:
                    tally.errors[type(e).__name__] += 1
                    continue
                tally.statuses[res.status_code] += 1
                if res.status_code == 200:
                    tally.latencies.append((time.perf_counter() - t0) * 1000.0)

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        tally.wall = time.perf_counter() - t0
    return tally


class _RssSampler(threading.Thread):
    """Peak resident memory of a process (and its children), sampled every ``every`` s."""

    def __init__(self, pid: int, every: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.pid, self.every, self.peak = pid, every, 0.0
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.peak = max(self.peak, rss_mb(self.pid))
            self._stop_event.wait(self.every)

    def stop(self) -> float:
        self._stop_event.set()
        self.join()
        return self.peak


def rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` plus its children, in MB (0 when it is gone)."""
    import psutil

    try:
        proc = psutil.Process(pid)
        procs = [proc, *proc.children(recursive=True)]
        total = 0
        for p in procs:
            with contextlib.suppress(psutil.Error):
                total += p.memory_info().rss
        return total / 2**20
    except psutil.Error:
        return 0.0


def run(out: Path | str, quick: bool = False, model_dir: Path | str | None = None,
        requests: int | None = None, clients: int | None = None,
        warmup: int | None = None) -> dict[str, Any]:
    """Run the load test; returns its figures and writes them to ``out/serve_load.json``.

    Parameters
    ----------
    out:
        Output folder (the tiny model is trained into ``out/serve_load/`` when
        ``model_dir`` is not given).
    quick:
        200 requests from 8 clients (40 warm-up) instead of 2000 from 32 (200 warm-up).
    model_dir:
        A run directory to serve instead of training the tiny model.
    requests, clients, warmup:
        Override the sizes above.
    """
    from medfuse.benchmark.serving import running_server, summarise
    from medfuse.io import atomic_write_json

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    sizes = dict(QUICK if quick else FULL)
    sizes.update({k: v for k, v in (("requests", requests), ("clients", clients),
                                    ("warmup", warmup)) if v is not None})
    t0 = time.perf_counter()
    model = Path(model_dir) if model_dir else train_tiny_model(out / "serve_load")
    train_s = time.perf_counter() - t0 if model_dir is None else 0.0
    with running_server(model) as server:
        import httpx

        info = httpx.get(f"{server.url}/api/model", timeout=60).json()
        payloads = _payloads(info, model)
        warm = asyncio.run(_fire(server.url, payloads, sizes["warmup"], sizes["clients"]))
        rss_warm = rss_mb(server.proc.pid)
        sampler = _RssSampler(server.proc.pid)
        sampler.start()
        try:
            tally = asyncio.run(_fire(server.url, payloads, sizes["requests"], sizes["clients"]))
        finally:
            peak = sampler.stop()
        rss_end = rss_mb(server.proc.pid)
        alive = server.proc.poll() is None
    stats = summarise(tally.latencies, 0, tally.wall)
    five = sum(c for s, c in tally.statuses.items() if s >= 500)
    other = sum(c for s, c in tally.statuses.items() if s not in (200,) and s < 500)
    errors = sum(tally.errors.values())
    growth = rss_end - rss_warm
    result: dict[str, Any] = {
        "requests": sizes["requests"], "clients": sizes["clients"],
        "warmup_requests": sizes["warmup"], "quick": quick,
        "served": tally.statuses.get(200, 0), "status_5xx": five,
        "status_other": other, "statuses": {str(k): v for k, v in sorted(tally.statuses.items())},
        "errors": errors, "error_kinds": dict(tally.errors),
        "warmup_served": warm.statuses.get(200, 0),
        "p50_ms": stats["p50_ms"], "p95_ms": stats["p95_ms"], "max_ms": stats["max_ms"],
        "mean_ms": stats["mean_ms"], "wall_s": stats["wall_s"],
        "throughput_rps": round(tally.statuses.get(200, 0) / tally.wall, 2) if tally.wall
        else None,
        "rss_after_warmup_mb": round(rss_warm, 1), "rss_end_mb": round(rss_end, 1),
        "rss_peak_mb": round(max(peak, rss_end), 1), "rss_growth_mb": round(growth, 1),
        "rss_growth_limit_mb": RSS_GROWTH_LIMIT_MB, "server_alive": alive,
        "startup_s": round(server.startup_s, 2), "train_s": round(train_s, 2),
        "backend": info.get("backend"), "model": str(model), "cpus": os.cpu_count(),
    }
    result["ok"] = bool(result["served"] == sizes["requests"] and five == 0 and errors == 0
                        and growth < RSS_GROWTH_LIMIT_MB and alive)
    atomic_write_json(out / RESULT_FILE, result)
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="output folder")
    ap.add_argument("--quick", action="store_true", help="200 requests from 8 clients")
    ap.add_argument("--model-dir", type=Path, help="serve this run instead of a tiny model")
    ap.add_argument("--requests", type=int)
    ap.add_argument("--clients", type=int)
    ap.add_argument("--warmup", type=int)
    args = ap.parse_args(argv)
    result = run(args.out, quick=args.quick, model_dir=args.model_dir, requests=args.requests,
                 clients=args.clients, warmup=args.warmup)
    print(json.dumps(result, indent=1))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
