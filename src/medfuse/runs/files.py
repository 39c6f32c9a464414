"""What every job writes into a run directory: its file names, JSON / CSV writers, memory.

Writes are atomic (:mod:`medfuse.io`): a run killed mid-write leaves the previous file or
none, never half of one.
"""

from __future__ import annotations

import resource
from pathlib import Path
from typing import Any

import pandas as pd

from medfuse.evaluation.families import FAMILIES_FILE
from medfuse.io import atomic_path, atomic_write_json

__all__ = ["FAMILIES_FILE", "SUBSETS_FILE", "peak_rss_mb"]

#: metrics per modality subset (models trained for missing modalities)
SUBSETS_FILE = "modality_subsets.json"


def peak_rss_mb() -> float:
    """Peak resident memory of this process (and finished children), in MB."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, kids) / 1024.0


def _write_json(path: Path, data: dict[str, Any]) -> None:
    atomic_write_json(path, data, default=float)


def _write_csv(path: Path, df: pd.DataFrame) -> None:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)
