"""Jobs in child processes, each with its own wall time and peak resident memory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

Log = Callable[[str], None]


@dataclass
class Context:
    """Where a benchmark writes, how big it is, and how it reports progress."""

    out: Path
    quick: bool = False
    log: Log = field(default=lambda message: None)
    env: dict[str, str] = field(default_factory=dict)
    timeout: float = 3600.0

    def work(self, name: str) -> Path:
        """A scratch folder for one job (inside ``out/work``)."""
        path = self.out / "work" / name
        path.mkdir(parents=True, exist_ok=True)
        return path


def run_job(ctx: Context, name: str, target: str, env: dict[str, str] | None = None,
            **kwargs: Any) -> dict[str, Any]:
    """Run ``medfuse.benchmark.<target>(**kwargs)`` in a fresh Python process.

    Returns the function's result plus ``wall_seconds`` (the whole process: start-up,
    imports and work) and ``peak_rss_mb`` (the child's peak resident set, from
    ``wait4``); a failure or a timeout gives ``{"error": ...}`` instead of raising.
    The child's output goes to ``out/work/<name>/job.log``.
    """
    work = ctx.work(name)
    result_file = work / "result.json"
    result_file.unlink(missing_ok=True)
    child_env = {**os.environ, **ctx.env, **(env or {})}
    child_env.setdefault("PYTHONUNBUFFERED", "1")
    cmd = [sys.executable, "-m", "medfuse.benchmark._job", target, json.dumps(kwargs),
           str(result_file)]
    ctx.log(f"{name}: started")
    t0 = time.perf_counter()
    with open(work / "job.log", "w") as log_fh:
        proc = subprocess.Popen(cmd, stdout=log_fh, stderr=subprocess.STDOUT, env=child_env)
        timed_out = threading.Event()

        def kill() -> None:
            timed_out.set()
            proc.kill()

        timer = threading.Timer(ctx.timeout, kill)
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
        proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    peak_mb = usage.ru_maxrss / 1024.0  # kilobytes on Linux
    result: dict[str, Any]
    try:
        result = json.loads(result_file.read_text())
    except (OSError, ValueError):
        result = {"error": f"the job wrote no result (exit status {proc.returncode}"
                  + (f", killed after {ctx.timeout:.0f} s" if timed_out.is_set() else "")
                  + f"); see {work / 'job.log'}"}
    result["wall_seconds"] = round(wall, 2)
    result["peak_rss_mb"] = round(peak_mb, 1)
    if "error" in result:
        ctx.log(f"{name}: [red]failed[/] after {wall:.0f} s: {result['error']}")
    else:
        ctx.log(f"{name}: done in {wall:.0f} s, peak RSS {peak_mb:.0f} MB")
    return result
