"""Data layer: tables, validation, preprocessing, datasets and splits."""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medfuse.config import DataSpec
from medfuse.errors import ConfigError

if TYPE_CHECKING:
    import pandas as pd

    from medfuse.data.builtin import DatasetInfo, list_datasets, load_dataset, prepare_dataset
    from medfuse.data.dataset import MultimodalDataset
    from medfuse.data.images import read_image
    from medfuse.data.preprocess import ImageTransform, Preprocessor
    from medfuse.data.splits import (
        HoldoutSplit,
        SplitReport,
        group_labels,
        holdout_split,
        kfold_splits,
    )
    from medfuse.data.table import read_table
    from medfuse.data.tabular import TabularPreprocessor
    from medfuse.data.text import Vocabulary, normalize_text, tokenize
    from medfuse.data.validation import ImageCheck, ValidationReport, validate_table

# Heavy modules (torch, scikit-learn) load on first use, so `medfuse datasets` starts fast.
_LAZY = {
    "DatasetInfo": "builtin", "list_datasets": "builtin", "load_dataset": "builtin",
    "prepare_dataset": "builtin", "MultimodalDataset": "dataset", "read_image": "images",
    "ImageTransform": "preprocess", "Preprocessor": "preprocess", "HoldoutSplit": "splits",
    "SplitReport": "splits", "group_labels": "splits", "holdout_split": "splits",
    "kfold_splits": "splits", "read_table": "table", "TabularPreprocessor": "tabular",
    "Vocabulary": "text", "normalize_text": "text", "tokenize": "text",
    "ValidationReport": "validation", "validate_table": "validation",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"medfuse.data.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'medfuse.data' has no attribute {name!r}")


__all__ = [
    "DatasetInfo",
    "HoldoutSplit",
    "ImageTransform",
    "MultimodalDataset",
    "Preprocessor",
    "SplitReport",
    "TabularPreprocessor",
    "ValidationReport",
    "Vocabulary",
    "group_labels",
    "holdout_split",
    "kfold_splits",
    "list_datasets",
    "load_data",
    "load_dataset",
    "load_table",
    "normalize_text",
    "prepare_dataset",
    "read_image",
    "read_table",
    "tokenize",
    "validate_table",
]


def load_table(
    path: str | os.PathLike[str],
    spec: DataSpec,
    check_images: ImageCheck = "decode",
    require_target: bool = True,
    training: bool = True,
) -> tuple[pd.DataFrame, ValidationReport]:
    """Read a CSV / Parquet table and validate it; image paths resolve from its folder.

    ``training=False`` for evaluation tables, which may hold a single class.
    """
    from medfuse.data.table import read_table
    from medfuse.data.validation import validate_table

    p = Path(path)
    df = read_table(p)
    return validate_table(
        df, spec, root=p.parent, table=str(p), check_images=check_images,
        require_target=require_target, training=training,
    )


def load_data(
    spec: DataSpec, check_images: ImageCheck = "decode"
) -> tuple[pd.DataFrame, ValidationReport]:
    """Load and validate the data a spec points to (``spec.table`` or ``spec.dataset``)."""
    if spec.table is not None:
        return load_table(spec.table, spec, check_images=check_images)
    if spec.dataset is not None:
        from medfuse.data.builtin import load_dataset
        from medfuse.data.validation import validate_table

        df, _ = load_dataset(spec.dataset, **spec.dataset_options)
        return validate_table(
            df, spec, root=None, table=f"dataset:{spec.dataset}", check_images=check_images
        )
    raise ConfigError(
        "data: set either 'table' (a CSV or Parquet file) or 'dataset' (a built-in name, "
        "see `medfuse datasets`)"
    )
