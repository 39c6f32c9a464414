"""The ``evaluation`` section: threshold, calibration, conformal sets, CIs, subgroups."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from medfuse.config.base import Spec


class EvalSpec(Spec):
    """Decision threshold, calibration, confidence intervals and subgroups."""

    threshold: Literal["fixed", "youden", "sensitivity"] = Field(
        "fixed", description="fixed: threshold_value (0.5); youden: max sensitivity + "
        "specificity - 1; sensitivity: the highest threshold with sensitivity >= "
        "threshold_value; chosen on validation rows and saved with the model",
    )
    threshold_value: float | None = Field(None, gt=0.0, le=1.0)
    calibrate: bool = Field(True, description="temperature scaling fitted on validation rows, "
                            "kept only if it lowers their cross-validated ECE")
    conformal_alpha: float | None = Field(
        0.1, gt=0.0, lt=1.0, description="miscoverage of the class-conditional conformal "
        "prediction sets calibrated on validation rows (0.1: each class's sets hold it 90% "
        "of the time); null: no sets",
    )
    bootstrap: int = Field(1000, ge=0, description="bootstrap replicates for 95% CIs (0: none)")
    subgroups: dict[str, Literal["categorical", "continuous"]] = Field(
        default_factory=dict, description="columns to report metrics per level / bin of"
    )
    subgroup_bins: int = Field(4, ge=2, le=20)

    @model_validator(mode="after")
    def _value_for_sensitivity(self) -> EvalSpec:
        if self.threshold == "sensitivity" and self.threshold_value is None:
            raise ValueError(
                "threshold: sensitivity needs threshold_value, the minimum sensitivity "
                "(e.g. 0.95)"
            )
        return self
