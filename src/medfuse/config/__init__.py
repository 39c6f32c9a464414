"""Run configuration: ``RunConfig = DataSpec + ModelSpec + TrainSpec``.

Configs are YAML files validated by pydantic. Unknown keys and wrong values are
:class:`~medfuse.errors.ConfigError` s that name the key, the value, the valid
options and the closest match::

    >>> from medfuse.config import load_config
    >>> cfg = load_config("synth_derm", overrides=["train.max_epochs=2"])
    >>> cfg.train.max_epochs
    2

The sections live in :mod:`~medfuse.config.data`, :mod:`~medfuse.config.model`,
:mod:`~medfuse.config.train`, :mod:`~medfuse.config.evaluation` and
:mod:`~medfuse.config.run`; reading configs in :mod:`~medfuse.config.loading`, the
error messages in :mod:`~medfuse.config.messages`. Every name is re-exported here.
"""

from medfuse.config.base import Spec
from medfuse.config.data import ColumnType, DataPolicy, DataSpec, Modality, SplitSpec
from medfuse.config.evaluation import EvalSpec
from medfuse.config.loading import (
    CONFIG_ALIASES,
    CONFIG_DIR,
    apply_overrides,
    available_configs,
    load_config,
    parse_config,
    resolve_config_path,
)
from medfuse.config.model import TEXT_FEATURE_VIEWS, ModelSpec
from medfuse.config.run import RunConfig
from medfuse.config.train import AugmentSpec, TrainSpec

__all__ = [
    "CONFIG_ALIASES",
    "CONFIG_DIR",
    "TEXT_FEATURE_VIEWS",
    "AugmentSpec",
    "ColumnType",
    "DataPolicy",
    "DataSpec",
    "EvalSpec",
    "Modality",
    "ModelSpec",
    "RunConfig",
    "Spec",
    "SplitSpec",
    "TrainSpec",
    "apply_overrides",
    "available_configs",
    "load_config",
    "parse_config",
    "resolve_config_path",
]
