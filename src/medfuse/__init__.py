"""medfuse: fused classifiers over medical images, tabular patient data and clinical text.

Public API only; see the README for a tour.

>>> import medfuse
>>> [d.name for d in medfuse.list_datasets()]
['br35h', 'iu-xray', 'iu-xray-findings', 'synth-derm', 'synth-derm-findings']
"""

import importlib
from typing import TYPE_CHECKING, Any

from medfuse.config import DataSpec, ModelSpec, RunConfig, TrainSpec, load_config
from medfuse.errors import (
    ConfigError,
    DataError,
    DataValidationError,
    MedfuseError,
    NotFittedError,
)

if TYPE_CHECKING:
    from medfuse.data import (
        MultimodalDataset,
        Preprocessor,
        holdout_split,
        kfold_splits,
        list_datasets,
        load_data,
        load_dataset,
        load_table,
        prepare_dataset,
        validate_table,
    )
    from medfuse.estimators import FusionClassifier, HybridClassifier
    from medfuse.evaluation.evaluate import evaluate

_DATA = {
    "MultimodalDataset", "Preprocessor", "holdout_split", "kfold_splits", "list_datasets",
    "load_data", "load_dataset", "load_table", "prepare_dataset", "validate_table",
}


_OTHER = {
    "FusionClassifier": "medfuse.estimators",
    "HybridClassifier": "medfuse.estimators",
    "evaluate": "medfuse.evaluation.evaluate",
}


def __getattr__(name: str) -> Any:
    if name in _DATA:
        return getattr(importlib.import_module("medfuse.data"), name)
    if name in _OTHER:
        return getattr(importlib.import_module(_OTHER[name]), name)
    raise AttributeError(f"module 'medfuse' has no attribute {name!r}")


__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "DataError",
    "DataSpec",
    "DataValidationError",
    "FusionClassifier",
    "HybridClassifier",
    "MedfuseError",
    "ModelSpec",
    "MultimodalDataset",
    "NotFittedError",
    "Preprocessor",
    "RunConfig",
    "TrainSpec",
    "__version__",
    "evaluate",
    "holdout_split",
    "kfold_splits",
    "list_datasets",
    "load_config",
    "load_data",
    "load_dataset",
    "load_table",
    "prepare_dataset",
    "validate_table",
]
