"""A cross-validation fold kept on disk, so an interrupted ``medfuse cv`` can resume.

Each fold folder ``out/fold<i>/`` holds :data:`FOLD_FILE` (the fold's identity and, once
finished, its metrics per head) and :data:`FOLD_PREDICTIONS` (its test predictions).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from medfuse.config import RunConfig
from medfuse.distributed import is_primary
from medfuse.errors import ConfigError
from medfuse.io import RunDirError, atomic_write_json
from medfuse.runs.files import _write_csv, _write_json

#: a cross-validation fold's identity and, once finished, its metrics (``out/fold<i>/``)
FOLD_FILE = "cv_fold.json"
FOLD_PREDICTIONS = "test_predictions.csv"

#: one fold's ``{head: (metrics, test predictions)}`` (predictions of the first head only)
FoldResults = dict[str, tuple[dict[str, Any], pd.DataFrame]]


#: ``(section, key, default)`` of config keys newer than the fold keys on disk
LATER_KEYS = (("train", "label_issues", "keep"), ("evaluation", "conformal_alpha", 0.1))


def _fold_key(cfg: RunConfig, folds: int, heads: list[str], test_idx: np.ndarray) -> str:
    """What a fold's result depends on: the config, the fold count, the heads, its test rows.

    Config keys added later (:data:`LATER_KEYS`) count only away from their default, so a
    cross-validation interrupted before they existed still resumes.
    """
    config = cfg.model_dump(mode="json")
    for section, key, default in LATER_KEYS:
        if config.get(section, {}).get(key) == default:
            del config[section][key]
    blob = json.dumps({"config": yaml.safe_dump(config, sort_keys=False), "folds": folds,
                       "heads": heads,
                       "test_rows": np.asarray(test_idx).tolist()}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def _earlier_fold(fold_dir: Path, key: str) -> dict[str, Any] | None:
    """The fold file an earlier run of this same cross-validation left, if any.

    A fold file of another cross-validation (``key`` differs) is refused.
    """
    path = fold_dir / FOLD_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise RunDirError(f"{path} is not valid JSON ({e}): delete {fold_dir} to run that "
                          "fold again.") from e
    if not isinstance(data, dict) or not isinstance(data.get("key"), str):
        raise RunDirError(f"{path} is not a medfuse cross-validation fold file: delete "
                          f"{fold_dir} to run that fold again.")
    if data["key"] != key:
        raise ConfigError(
            f"cannot resume: {path} belongs to a cross-validation with another "
            "config, fold count, head list or data. Use a new --out folder, or run without "
            "--resume to start this one again."
        )
    return data


def _finished_results(fold_dir: Path, earlier: dict[str, Any]) -> FoldResults | None:
    """The results kept in an earlier run's fold file; None if that fold never finished."""
    if not earlier.get("finished"):
        return None
    preds_path = fold_dir / FOLD_PREDICTIONS
    if not preds_path.is_file():
        raise RunDirError(f"{preds_path} is missing although {fold_dir / FOLD_FILE} says the "
                          f"fold finished: delete {fold_dir} to run that fold again.")
    results = earlier.get("results")
    if not isinstance(results, dict) or not results:
        raise RunDirError(f"{fold_dir / FOLD_FILE} says the fold finished but holds no "
                          f"results: delete {fold_dir} to run that fold again.")
    preds = pd.read_csv(preds_path, dtype=str, keep_default_na=False)
    first = next(iter(results))
    return {name: (m, preds if name == first else pd.DataFrame()) for name, m in results.items()}


def _start_fold(fold_dir: Path, key: str) -> None:
    """Mark ``fold_dir`` as this cross-validation's, not finished yet."""
    if is_primary():
        fold_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(fold_dir / FOLD_FILE, {"key": key, "finished": False})


def _finish_fold(fold_dir: Path, key: str, results: FoldResults) -> None:
    """Keep a finished fold: its test predictions (first head), then its metrics."""
    first = next(iter(results))
    _write_csv(fold_dir / FOLD_PREDICTIONS, results[first][1])
    _write_json(fold_dir / FOLD_FILE, {"key": key, "finished": True,
                                       "results": {n: m for n, (m, _) in results.items()}})
