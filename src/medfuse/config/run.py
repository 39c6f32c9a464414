"""A whole run: ``RunConfig = DataSpec + ModelSpec + TrainSpec + EvalSpec``."""

from __future__ import annotations

import yaml
from pydantic import Field

from medfuse.config.base import Spec
from medfuse.config.data import DataSpec
from medfuse.config.evaluation import EvalSpec
from medfuse.config.model import ModelSpec
from medfuse.config.train import TrainSpec


class RunConfig(Spec):
    """A whole run: what data, which model, how to train, how to evaluate."""

    name: str | None = None
    data: DataSpec
    model: ModelSpec = Field(default_factory=ModelSpec)
    train: TrainSpec = Field(default_factory=TrainSpec)
    evaluation: EvalSpec = Field(default_factory=EvalSpec)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)
