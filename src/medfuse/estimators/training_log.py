"""The run directory's training log (``logs/metrics.csv``), kept whole across resumed fits.

Lightning's CSV logger starts that file afresh when training resumes from a checkpoint.
:func:`logged_epochs` reads the rows of the epochs the checkpoint has finished before the
resumed fit (and keeps them on disk in ``logs/metrics.before_resume.csv`` meanwhile);
:func:`prepend_log_rows` puts them back in front of the new rows afterwards.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch

from medfuse.io import atomic_write_text

__all__ = ["LOG_FILE", "logged_epochs", "prepend_log_rows"]

LOG_FILE = Path("logs") / "metrics.csv"
_LOG_KEPT = Path("logs") / "metrics.before_resume.csv"


def logged_epochs(run_dir: Path, checkpoint: Path) -> pd.DataFrame | None:
    """Rows of ``logs/metrics.csv`` for the epochs ``checkpoint`` has finished.

    Lightning's CSV logger starts that file afresh when training resumes; these rows are
    put back in front afterwards (:func:`prepend_log_rows`).
    """
    saved = run_dir / _LOG_KEPT
    frames: list[pd.DataFrame] = []
    try:
        done = int(torch.load(checkpoint, map_location="cpu", weights_only=True)["epoch"])
        for path in (saved, run_dir / LOG_FILE):  # rows kept by an earlier resume first
            if path.is_file():
                rows = pd.read_csv(path)
                if "epoch" in rows:
                    seen = set().union(*(f["epoch"] for f in frames))
                    frames.append(rows[(rows["epoch"] <= done) & ~rows["epoch"].isin(seen)])
    except (OSError, ValueError, KeyError, RuntimeError, pd.errors.ParserError):
        return None
    if not frames:
        return None
    earlier = pd.concat(frames, ignore_index=True)
    # on disk too: if the resumed run is killed in turn, these rows are not lost
    atomic_write_text(saved, earlier.to_csv(index=False))
    return earlier


def prepend_log_rows(run_dir: Path, earlier: pd.DataFrame) -> None:
    """Put the rows :func:`logged_epochs` read back in front of ``logs/metrics.csv``."""
    path = run_dir / LOG_FILE
    later = pd.read_csv(path) if path.is_file() else earlier.iloc[:0]
    if "epoch" in later:
        later = later[~later["epoch"].isin(earlier["epoch"].unique())]
    atomic_write_text(path, pd.concat([earlier, later], ignore_index=True).to_csv(index=False))
    (run_dir / _LOG_KEPT).unlink(missing_ok=True)
