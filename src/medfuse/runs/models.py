"""The estimator a config names, and loading any saved medfuse model from its run directory."""

from __future__ import annotations

import json
from pathlib import Path

from medfuse.config import RunConfig
from medfuse.estimators import ESTIMATOR_FILE, FusionClassifier
from medfuse.estimators.hybrid import HybridClassifier
from medfuse.io import RunDirError

Estimator = FusionClassifier | HybridClassifier


def estimator_from_config(cfg: RunConfig) -> Estimator:
    """The estimator ``model.kind`` names: ``fusion`` or ``hybrid``."""
    if cfg.model.kind == "hybrid":
        return HybridClassifier.from_config(cfg)
    return FusionClassifier.from_config(cfg)


def load_model(run: Path) -> Estimator:
    """Load any saved medfuse model (the estimator class is read from ``estimator.json``)."""
    meta = run / ESTIMATOR_FILE
    if not run.is_dir():
        raise RunDirError(f"run directory {run} does not exist: pass the --out folder of "
                          "'medfuse train'.")
    if not meta.is_file():
        raise RunDirError(
            f"{run} is not a medfuse model directory: {ESTIMATOR_FILE} is missing. Pass the "
            "--out folder of 'medfuse train' (for 'cv', one of its fold folders is not a model)."
        )
    try:
        name = json.loads(meta.read_text()).get("estimator")
    except json.JSONDecodeError as e:
        raise RunDirError(f"{meta} is not valid JSON ({e}); re-create the run.") from e
    if name == "HybridClassifier":
        return HybridClassifier.load(run)
    return FusionClassifier.load(run)
