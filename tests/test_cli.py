"""The CLI end to end, through a real subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd


def run(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None
        ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "medfuse.cli", *args],
        capture_output=True, text=True, cwd=cwd, env={**os.environ, **(env or {})},
        timeout=300,
    )


def test_datasets_lists_all_three() -> None:
    res = run("datasets")
    assert res.returncode == 0, res.stderr
    for name in ("br35h", "iu-xray", "synth-derm", "3955", "3000"):
        assert name in res.stdout


def test_prepare_iu_xray(tmp_path: Path) -> None:
    res = run("prepare", "iu-xray", "--out", str(tmp_path / "d"))
    assert res.returncode == 0, res.stderr
    assert "wrote 3955 rows" in res.stdout
    assert len(pd.read_csv(tmp_path / "d" / "data.csv")) == 3955


def test_validate_prepared_table_with_override(tmp_path: Path) -> None:
    csv = tmp_path / "s" / "data.csv"
    assert run("prepare", "synth-derm", "--out", str(csv.parent), "--n-rows", "30",
               "--image-size", "32").returncode == 0
    res = run("validate", "synth_derm", "--set", f"data.table={csv}", "--set", "data.dataset=null",
              "--out", str(tmp_path / "v.json"))
    assert res.returncode == 0, res.stderr
    findings = json.loads((tmp_path / "v.json").read_text())
    assert findings["validation"]["rows_out"] == 30
    assert findings["groups"]["n_groups"] <= 30


def test_bad_input_gives_clean_message_and_exit_2(tmp_path: Path) -> None:
    res = run("validate", "synth_derm", "--set", "model.fusion=concatt")
    assert res.returncode == 2
    assert "Did you mean 'concat'?" in res.stderr and "Traceback" not in res.stderr
    df = pd.DataFrame({"img": ["missing.png", "also.png"], "y": ["a", "b"]})
    df.to_csv(tmp_path / "t.csv", index=False)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"data:\n  table: {tmp_path / 't.csv'}\n  image: img\n  target: y\n")
    res = run("validate", str(cfg))
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "missing.png' does not exist" in res.stderr and "row 0" in res.stderr
    res = run("prepare", "nope", "--out", str(tmp_path / "x"))
    assert res.returncode == 2 and "unknown dataset 'nope'" in res.stderr
