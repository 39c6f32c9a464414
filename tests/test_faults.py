"""Faults: a training process killed mid-run resumes to exactly the uninterrupted result."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

# four epochs of ~1 s each on the tiny fixture (larger images, small batches)
SLOW_EPOCHS = ["--set", "train.max_epochs=4", "--set", "model.image_size=224",
               "--set", "train.batch_size=2", "--set", "train.patience=10"]
VARYING = {"train_seconds", "peak_rss_mb"}  # wall-clock and memory figures


def train(config: Path, out: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "medfuse.cli", "train", str(config), "--out", str(out),
         *SLOW_EPOCHS, *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


def finish(proc: subprocess.Popen[str], timeout: float = 300) -> None:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, f"{out}\n{err}"


def assert_close(a: Any, b: Any, where: str = "metrics") -> None:
    """Equal JSON values, numbers within 1e-6."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), where
        for k in a:
            assert_close(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_close(x, y, f"{where}[{i}]")
    elif isinstance(a, float) and isinstance(b, float) and not (math.isnan(a) or math.isnan(b)):
        assert abs(a - b) <= 1e-6, f"{where}: {a} != {b}"
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


@pytest.mark.parametrize("extra", [[], ["--set", "train.ema=0.9"]], ids=["plain", "ema"])
def test_sigkilled_training_resumes_to_the_uninterrupted_result(
    tiny_config: Path, tmp_path: Path, extra: list[str]
) -> None:
    """Also with a moving average of the weights (its state lives in the checkpoint)."""
    import torch

    reference, killed = tmp_path / "reference", tmp_path / "killed"
    ref = train(tiny_config, reference, *extra)  # runs alongside the one that gets killed
    victim = train(tiny_config, killed, *extra)
    last = killed / "checkpoints" / "last.ckpt"
    try:
        deadline = time.monotonic() + 180
        while not last.is_file():
            assert victim.poll() is None, f"training ended before its first checkpoint:\n" \
                                          f"{victim.communicate()[1]}"
            assert time.monotonic() < deadline, "no checkpoint after 180 s"
            time.sleep(0.05)
        victim.send_signal(signal.SIGKILL)
        victim.communicate(timeout=60)
        assert victim.returncode == -signal.SIGKILL
    finally:
        if victim.poll() is None:
            victim.kill()
    assert not (killed / "metrics.json").exists(), "the run finished before it was killed"
    epoch = torch.load(last, map_location="cpu", weights_only=True)["epoch"]
    assert epoch < 3, f"killed too late (checkpoint of epoch {epoch})"

    finish(train(tiny_config, killed, "--resume", *extra))
    finish(ref)

    got = json.loads((killed / "metrics.json").read_text())
    want = json.loads((reference / "metrics.json").read_text())
    assert got["epochs"] == want["epochs"] == 4
    assert_close({k: v for k, v in got.items() if k not in VARYING},
                 {k: v for k, v in want.items() if k not in VARYING})
    pd.testing.assert_frame_equal(pd.read_csv(killed / "predictions.csv"),
                                  pd.read_csv(reference / "predictions.csv"), atol=1e-6)
    # the learning curves of the epochs before the kill are kept
    logged = pd.read_csv(killed / "logs" / "metrics.csv")
    assert sorted(logged["epoch"].unique()) == [0, 1, 2, 3]
    assert not (killed / "logs" / "metrics.before_resume.csv").exists()


def test_resume_without_a_checkpoint_is_a_clean_error(tiny_config: Path, tmp_path: Path) -> None:
    res = subprocess.run([sys.executable, "-m", "medfuse.cli", "train", str(tiny_config),
                          "--out", str(tmp_path / "new"), "--resume"],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 2 and "cannot resume" in res.stderr
    assert "Traceback" not in res.stderr


def test_checkpoint_is_written_after_every_epoch(
    tiny_dir: Path, tmp_path: Path, add_callbacks: Any
) -> None:
    """``last.ckpt`` follows every epoch, improving or not (Lightning's save_last does not)."""
    import torch
    from lightning.pytorch.callbacks import Callback

    from medfuse.config import DataSpec
    from medfuse.data import load_table
    from medfuse.estimators import FusionClassifier

    epochs: list[int] = []

    def saved_epoch() -> int:
        ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
        return int(ckpt["epoch"])

    class Spy(Callback):  # checkpoints are written as an epoch ends
        def on_train_epoch_start(self, trainer: Any, module: Any) -> None:
            if trainer.current_epoch > 0:
                epochs.append(saved_epoch())

    spec = DataSpec(tabular={"age": "continuous"}, target="label", group="patient")
    df, _ = load_table(tiny_dir / "data.csv", spec)
    add_callbacks(Spy())
    # lr ~ 0: the validation loss never improves after the first epoch
    FusionClassifier(spec, max_epochs=3, lr=1e-12, patience=10, progress=False,
                     hidden_dims=(4,)).fit(df.iloc[:18], df.iloc[18:], run_dir=tmp_path)
    assert [*epochs, saved_epoch()] == [0, 1, 2]
