"""What the report reads from a run directory, and where its plots are saved.

:func:`_read_json` and :func:`_read_config` read the optional files (a problem is reported,
not raised); :class:`_Predictions` is what the report needs from ``predictions.csv``;
:class:`_Plots` saves each PNG under ``run/plots`` and returns the figure's template
context (the image as base64, for a ``data:`` URI: the page stays one offline file).
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from medfuse.config import DataSpec, RunConfig
from medfuse.data.validation import as_category_strings
from medfuse.io import RunDirError, atomic_write_bytes

__all__ = ["_Plots", "_Predictions", "_read_config", "_read_json", "_slug"]


def _read_json(path: Path, required: bool = False) -> tuple[Any, str | None]:
    """``(data, problem)``: data is None when absent or unreadable; problem says why."""
    if not path.is_file():
        if required:
            raise RunDirError(
                f"{path.parent} is not a complete run directory: {path.name} is missing "
                "(build_report needs metrics.json and predictions.csv)."
            )
        return None, None
    try:
        return json.loads(path.read_text()), None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        if required:
            raise RunDirError(f"{path} is not valid JSON ({e}); re-create the run.") from e
        return None, f"{path.name} could not be read ({e})"


def _read_config(path: Path) -> tuple[RunConfig | None, str | None, str | None]:
    """``(config, yaml text, problem)`` of ``config.yaml``."""
    if not path.is_file():
        return None, None, None
    text = path.read_text()
    try:
        return RunConfig.model_validate(yaml.safe_load(text)), text, None
    except Exception as e:  # any invalid or outdated config: report it, build the rest
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        return None, text, f"config.yaml could not be validated ({first})"


class _Predictions:
    """What the report needs from ``predictions.csv``."""

    def __init__(self, df: pd.DataFrame, spec: DataSpec | None) -> None:
        self.df = df
        self.classes = [str(c)[len("prob_"):] for c in df.columns if str(c).startswith("prob_")]
        if not self.classes:
            raise RunDirError("predictions.csv has no prob_<class> columns; re-create the run.")
        self.proba = df[[f"prob_{c}" for c in self.classes]].to_numpy(dtype=float)
        raw_cols = [f"raw_prob_{c}" for c in self.classes]
        self.raw_proba = (df[raw_cols].to_numpy(dtype=float)
                          if all(c in df.columns for c in raw_cols) else None)
        if spec is not None and spec.positive in self.classes:
            self.positive = str(spec.positive)
        else:
            self.positive = self.classes[-1]
        if "prediction" in df.columns:
            self.predicted = as_category_strings(df["prediction"]).fillna("").astype(str)
        else:
            self.predicted = pd.Series(np.asarray(self.classes)[self.proba.argmax(axis=1)])
        self.target_column = self._target_column(spec)
        self.truth: pd.Series | None = None
        if self.target_column is not None:
            self.truth = as_category_strings(df[self.target_column]).fillna("").astype(str)
        # multi-label: a pred_<label> column beside every prob_<label>
        self.multilabel = all(f"pred_{c}" in df.columns for c in self.classes)
        self.hot: np.ndarray | None = None  # (n, L) 0/1 truth of a multi-label table
        self.decided: np.ndarray | None = None
        if self.multilabel:
            self.decided = df[[f"pred_{c}" for c in self.classes]].to_numpy(dtype=int)
            if self.truth is not None:
                sep = spec.separator if spec is not None else "|"
                given = [set(filter(None, v.split(sep))) for v in self.truth]
                self.hot = np.array([[int(c in g) for c in self.classes] for g in given],
                                    dtype=int).reshape(len(df), len(self.classes))

    def _target_column(self, spec: DataSpec | None) -> str | None:
        if spec is not None:
            return spec.target if spec.target in self.df.columns else None
        known = set(self.classes)
        skip = {"prediction", "fold", "row"}
        for col in reversed(list(self.df.columns)):
            name = str(col)
            if name in skip or name.startswith(("prob_", "raw_prob_")):
                continue
            values = set(as_category_strings(self.df[col]).dropna().tolist())
            if values and values <= known:
                return name
        return None

    @property
    def labelled(self) -> np.ndarray:
        """Rows whose true class is one of the classes."""
        if self.truth is None:
            return np.zeros(len(self.df), dtype=bool)
        if self.multilabel:  # every row is labelled: an empty cell is "no label"
            return np.ones(len(self.df), dtype=bool)
        return self.truth.isin(self.classes).to_numpy()


class _Plots:
    """Saves PNGs under ``run/plots`` and returns their figure contexts."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.saved: list[Path] = []

    def add(self, name: str, png: bytes, alt: str, caption: str | None = None) -> dict[str, Any]:
        """Save ``name.png``; ``{"data": base64 PNG, "alt", "caption"}`` for the template."""
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"{name}.png"
        atomic_write_bytes(path, png)
        self.saved.append(path)
        return {"data": base64.b64encode(png).decode("ascii"), "alt": alt, "caption": caption}


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")[:50] or "plot"
