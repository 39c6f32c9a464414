"""DDP on CPU (gloo): two processes train, the first alone evaluates and writes the run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd


def _train(config: Path, out: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "medfuse.cli", "train", str(config), "--out", str(out),
         "--set", "train.max_epochs=2", "--set", "evaluation.bootstrap=50", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


def _files(run: Path) -> set[str]:
    return {str(p.relative_to(run)) for p in run.rglob("*") if p.is_file()}


def test_ddp_two_cpu_processes_write_the_same_run_directory(
    tiny_config: Path, tmp_path: Path
) -> None:
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    t0 = time.perf_counter()
    procs = {
        "single": _train(tiny_config, single),
        "ddp": _train(tiny_config, ddp, "--set", "train.strategy=ddp",
                      "--set", "train.devices=2", "--set", "train.accelerator=cpu"),
    }
    outs = {name: p.communicate(timeout=300) for name, p in procs.items()}
    for name, p in procs.items():
        assert p.returncode == 0, f"{name}:\n{outs[name][0]}\n{outs[name][1]}"
    assert time.perf_counter() - t0 < 120  # both runs side by side on 2 cores
    stdout, stderr = outs["ddp"]
    # one process reports: the result, and the log lines of the split, once
    assert stdout.count("run directory:") == 1 and stdout.count("test:") == 1, stdout
    assert stderr.count("split:") == 1, stderr
    assert _files(ddp) == _files(single)
    metrics = json.loads((ddp / "metrics.json").read_text())
    assert metrics["epochs"] == 2 and metrics["n"] == len(pd.read_csv(ddp / "predictions.csv"))
    manifest = json.loads((ddp / "manifest.json").read_text())
    listed = manifest.get("files", manifest)
    assert {"model.safetensors", "metrics.json", "preprocess.json"} <= set(listed)
    logged = pd.read_csv(ddp / "logs" / "metrics.csv")
    assert sorted(logged["epoch"].dropna().unique()) == [0, 1]
    config = (ddp / "config.yaml").read_text()
    assert "strategy: ddp" in config and "devices: 2" in config
    # each process trained on half of the rows per epoch: half the optimiser steps
    steps = {name: pd.read_csv(run / "logs" / "metrics.csv")["step"].max()
             for name, run in (("single", single), ("ddp", ddp))}
    assert steps["ddp"] < steps["single"]
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in stderr and "Traceback" not in stderr
