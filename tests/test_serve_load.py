"""The serve load benchmark in quick mode: a real server, concurrent clients, no failures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("psutil")
pytest.importorskip("httpx")

KEYS = {"requests", "clients", "served", "status_5xx", "errors", "p50_ms", "p95_ms",
        "throughput_rps", "rss_after_warmup_mb", "rss_end_mb", "rss_growth_mb", "ok"}


# ~30 s on a busy 2-core machine (training the tiny model, starting the server, 240
# requests): above the budget of the default run, so it runs with `pytest -m slow`
@pytest.mark.slow
def test_quick_load_run_serves_everything(tmp_path: Path) -> None:
    from medfuse.benchmark.serve_load import RESULT_FILE, run

    result = run(tmp_path, quick=True)
    assert set(result) >= KEYS
    assert json.loads((tmp_path / RESULT_FILE).read_text()) == result
    assert (result["requests"], result["clients"]) == (200, 8)
    assert result["served"] == 200 and result["status_5xx"] == 0 and result["errors"] == 0
    assert result["rss_growth_mb"] < result["rss_growth_limit_mb"]
    assert result["server_alive"] and result["ok"]
    assert 0 < result["p50_ms"] <= result["p95_ms"]
