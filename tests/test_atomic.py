"""Atomic writes: a failing or killed writer never leaves a partial file in a run directory."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from medfuse.io import atomic_path, atomic_write_bytes, atomic_write_json, atomic_write_text


class WriterError(Exception):
    pass


def test_writes_replace_the_file(tmp_path: Path) -> None:
    target = tmp_path / "metrics.json"
    atomic_write_text(target, "old")
    atomic_write_json(target, {"a": 1.5})
    assert target.read_text() == '{\n "a": 1.5\n}'
    atomic_write_bytes(target, b"\x00\x01")
    assert target.read_bytes() == b"\x00\x01"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_temp_name_keeps_the_suffix_for_format_sniffing_writers(tmp_path: Path) -> None:
    with atomic_path(tmp_path / "head.xgb.json") as tmp:
        assert tmp.parent == tmp_path and tmp.suffix == ".json" and tmp.name.startswith(".")
        tmp.write_text("{}")


@pytest.mark.parametrize("existing", [True, False])
def test_a_failing_writer_leaves_the_old_file_and_no_partial_one(
    tmp_path: Path, existing: bool
) -> None:
    target = tmp_path / "model.safetensors"
    if existing:
        target.write_bytes(b"old weights")

    def half_then_fail(path: Path) -> None:
        with open(path, "wb") as fh:
            fh.write(b"half of the new wei")
        raise WriterError("disk on fire")

    with pytest.raises(WriterError), atomic_path(target) as tmp:
        half_then_fail(tmp)
    if existing:
        assert target.read_bytes() == b"old weights"
    else:
        assert not target.exists()
    assert [p.name for p in tmp_path.iterdir()] == (["model.safetensors"] if existing else [])


def test_library_writers_through_atomic_path(tmp_path: Path) -> None:
    import numpy as np
    import pandas as pd
    from safetensors.numpy import load_file, save_file

    with atomic_path(tmp_path / "w.safetensors") as tmp:
        save_file({"w": np.arange(3.0)}, str(tmp))
    with atomic_path(tmp_path / "p.csv") as tmp:
        pd.DataFrame({"a": [1, 2]}).to_csv(tmp, index=False)
    assert load_file(str(tmp_path / "w.safetensors"))["w"].tolist() == [0.0, 1.0, 2.0]
    assert pd.read_csv(tmp_path / "p.csv")["a"].tolist() == [1, 2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.csv", "w.safetensors"]


def test_a_killed_writer_leaves_the_old_file_intact(tmp_path: Path) -> None:
    target = tmp_path / "predictions.csv"
    target.write_text("old,content\n")
    code = f"""
import sys, time
from medfuse.io import atomic_path
with atomic_path({str(target)!r}) as tmp, open(tmp, "w") as fh:
    for i in range(10_000):
        fh.write("new,row\\n" * 100)
        fh.flush()
        if i == 3:
            print("writing", flush=True)
        time.sleep(0.01)
"""
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "writing"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert target.read_text() == "old,content\n"


def _recording_replace(monkeypatch: pytest.MonkeyPatch) -> set[Path]:
    """Record every ``os.replace`` destination (how the atomic helpers finish a write)."""
    done: set[Path] = set()
    real: Callable[..., Any] = os.replace

    def replace(src: Any, dst: Any, *args: Any, **kw: Any) -> None:
        real(src, dst, *args, **kw)
        done.add(Path(dst).resolve())

    monkeypatch.setattr(os, "replace", replace)
    return done


def _files(run: Path, skip: tuple[str, ...] = ("checkpoints", "logs")) -> set[Path]:
    return {p.resolve() for p in run.rglob("*")
            if p.is_file() and p.relative_to(run).parts[0] not in skip}


def test_every_file_of_a_training_run_is_written_atomically(
    tiny_config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``train_run`` (model, JSON, CSV, YAML, report, plots, manifest); Lightning's own
    ``checkpoints/`` and ``logs/`` are excluded."""
    from medfuse.config import load_config
    from medfuse.runs import train_run

    done = _recording_replace(monkeypatch)
    out = tmp_path / "run"
    train_run(load_config(str(tiny_config), ["evaluation.bootstrap=20"]), out)
    files = _files(out)
    assert {"model.safetensors", "preprocess.json", "estimator.json", "metrics.json",
            "predictions.csv", "config.yaml", "manifest.json"} <= {p.name for p in files}
    assert not sorted(str(p.relative_to(out.resolve())) for p in files - done)
    assert not [p for p in out.rglob(".*.tmp*")]


@pytest.mark.parametrize("head", ["lr", "xgboost"])
def test_every_file_of_a_hybrid_model_is_written_atomically(
    tiny_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, head: str
) -> None:
    from medfuse.config import DataSpec
    from medfuse.data import load_table
    from medfuse.hybrid import HybridClassifier

    spec = DataSpec(image="image", tabular={"age": "continuous", "sex": "categorical"},
                    text="note", target="label", group="patient", positive="malignant")
    df, _ = load_table(tiny_dir / "data.csv", spec)
    clf = HybridClassifier(spec, head=head, image_backbone="small_cnn", pretrained="none",
                           image_size=32, min_token_freq=1, progress=False, batch_size=8,
                           cache_dir=str(tmp_path / "cache")).fit(df)
    done = _recording_replace(monkeypatch)
    run = clf.save(tmp_path / "run")
    names = {p.name for p in _files(run)}
    assert {"text.skops", "image.safetensors", "estimator.json", "manifest.json"} <= names
    assert ("head.xgb.json" in names) == (head == "xgboost")
    assert not sorted(p.name for p in _files(run) - done)
    HybridClassifier.load(run)  # and what was written loads

