"""The base class of every config section: unknown keys are errors, assignments are validated."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Spec(BaseModel):
    """A config section: ``extra="forbid"`` and ``validate_assignment=True``."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
