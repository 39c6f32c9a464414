"""The ``data`` section: which columns hold which modality, what to do with bad rows, splits."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from medfuse.config.base import Spec

ColumnType = Literal["continuous", "categorical"]
Modality = Literal["image", "tabular", "text"]
MULTILABEL_SEP = "|"  # joins the labels of a row given as data.targets columns


class DataPolicy(Spec):
    """What to do with each kind of bad input found by validation.

    ``error`` stops with a message naming every culprit; ``drop`` removes the
    row, counts it and reports the count (log + ``metrics.json``); ``keep``
    keeps the row and reports it (missing numbers are imputed, empty texts
    become an empty token sequence, a row without its image file has no image:
    fused models with ``model.modality_dropout > 0`` predict it from its other
    modalities).
    """

    missing_image: Literal["error", "drop", "keep"] = "error"
    bad_image: Literal["error", "drop"] = "error"
    missing_target: Literal["error", "drop"] = "error"
    missing_number: Literal["error", "drop", "keep"] = "keep"
    infinite_number: Literal["error", "drop", "keep"] = "error"
    bad_number: Literal["error", "drop", "keep"] = "error"
    empty_text: Literal["error", "drop", "keep"] = "keep"


class SplitSpec(Spec):
    """How rows are split into train / validation / test."""

    test_size: float = Field(0.2, gt=0.0, lt=1.0)
    valid_size: float = Field(0.1, gt=0.0, lt=1.0)
    dedupe_images: bool = Field(
        True, description="group near-duplicate images so they never straddle a split"
    )
    hash_distance: int = Field(
        6, ge=0, le=64, description="max Hamming distance of 64-bit perceptual hashes"
    )
    dedupe_flips: bool = Field(
        True, description="also link an image to flipped / 90-degree-rotated copies of it "
        "(public datasets often ship such augmented copies); needs dedupe_images"
    )


class DataSpec(Spec):
    """Which columns of a table hold which modality.

    Any modality may be absent. ``table`` is a CSV or Parquet file; ``dataset``
    names a built-in dataset instead (see ``medfuse datasets``). Image paths
    are relative to the table's folder; a path that leaves it (an absolute path
    elsewhere, or ``..`` climbing out of it) is refused unless ``allow_outside_paths``.
    """

    dataset: str | None = None
    dataset_options: dict[str, int] = Field(
        default_factory=dict, description="options of a built-in dataset, e.g. synth-derm n_rows"
    )
    table: Path | None = None
    image: str | None = None
    image_template: str | None = Field(
        None, description="path of an image from the image column's value, '{}' standing "
        "for the value, e.g. 'jpeg/train/{}.jpg' for a column of image names"
    )
    allow_outside_paths: bool = Field(
        False, description="accept image paths outside the table's folder (absolute paths "
        "elsewhere, '..' climbing out of it); refused by default so a table cannot make "
        "medfuse read arbitrary files"
    )
    hair_removal: bool = Field(
        False, description="remove hair / thin dark artefacts from every image before it "
        "reaches the model (DullRazor-style: black-hat filter, threshold, inpainting)"
    )
    tabular: dict[str, ColumnType] = Field(default_factory=dict)
    text: str | None = None
    target: str = "label"
    targets: list[str] | None = Field(
        None, description="multi-label: one 0/1 column per label (finding); the labels of a "
        "row, joined by '|', go to the column named by data.target (default 'labels')"
    )
    label_sep: str | None = Field(
        None, description="multi-label: data.target holds a row's labels joined by this "
        "separator, e.g. 'Lung|Opacity'; an empty cell means none of the labels"
    )
    group: str | None = None
    positive: str | None = Field(
        None, description="positive class label; default: the last class in sorted order"
    )
    policy: DataPolicy = Field(default_factory=DataPolicy)
    split: SplitSpec = Field(default_factory=SplitSpec)

    @field_validator("image_template")
    @classmethod
    def _one_placeholder(cls, value: str | None) -> str | None:
        if value is not None and (value.count("{}") != 1 or value.replace("{}", "").count("{")
                                  or value.replace("{}", "").count("}")):
            raise ValueError(
                f"must hold '{{}}' once (for the image column's value) and no other braces, "
                f"e.g. 'jpeg/train/{{}}.jpg'; got {value!r}"
            )
        return value

    @model_validator(mode="after")
    def _check(self) -> DataSpec:
        self._check_multilabel()
        if (self.image_template or self.hair_removal) and not self.image:
            raise ValueError("image_template and hair_removal need an image column (data.image)")
        if not (self.image or self.tabular or self.text):
            raise ValueError(
                "no input modality: set at least one of 'image', 'tabular' or 'text'"
            )
        used: dict[str, str] = {}
        for role, col in self.columns().items():
            if col in used and used[col] != role:
                raise ValueError(f"column '{col}' is used both as {used[col]} and as {role}")
            used.setdefault(col, role)
        return self

    def _check_multilabel(self) -> None:
        if self.targets is not None:
            if not self.targets:
                raise ValueError("data.targets is an empty list: list one 0/1 column per "
                                 "label, or use data.target for a single label column")
            if self.label_sep is not None:
                raise ValueError("set either data.targets (one 0/1 column per label) or "
                                 "data.label_sep (one column of joined labels), not both")
            repeated = sorted({c for c in self.targets if self.targets.count(c) > 1})
            if repeated:
                raise ValueError(f"data.targets lists {repeated} more than once")
            bad = [c for c in self.targets if MULTILABEL_SEP in c]
            if bad:
                raise ValueError(f"data.targets column(s) {bad} contain "
                                 f"'{MULTILABEL_SEP}', which joins labels; rename them")
            if "target" not in self.model_fields_set:
                object.__setattr__(self, "target", "labels")
            if self.target in self.targets:
                raise ValueError(f"data.target='{self.target}' names the column the joined "
                                 "labels are written to; it must not be one of data.targets")
        if self.label_sep is not None and not self.label_sep.strip():
            raise ValueError("data.label_sep must be a visible separator such as '|' or ';'")
        if self.multilabel and self.positive is not None:
            raise ValueError("data.positive has no meaning for a multi-label target (every "
                             "label is its own positive class); remove it")

    @property
    def multilabel(self) -> bool:
        """True for several labels per row (``targets`` or ``label_sep``)."""
        return self.targets is not None or self.label_sep is not None

    @property
    def separator(self) -> str:
        """What joins a row's labels in the ``target`` column."""
        return self.label_sep or MULTILABEL_SEP

    @property
    def modalities(self) -> list[str]:
        """Modalities present, in canonical order."""
        out = []
        if self.image:
            out.append("image")
        if self.tabular:
            out.append("tabular")
        if self.text:
            out.append("text")
        return out

    @property
    def categorical(self) -> list[str]:
        return [c for c, t in self.tabular.items() if t == "categorical"]

    @property
    def continuous(self) -> list[str]:
        return [c for c, t in self.tabular.items() if t == "continuous"]

    def columns(self) -> dict[str, str]:
        """Map role -> column name for every column the spec uses."""
        roles: dict[str, str] = (
            {f"target:{c}": c for c in self.targets} if self.targets else {"target": self.target})
        if self.image:
            roles["image"] = self.image
        if self.text:
            roles["text"] = self.text
        if self.group:
            roles["group"] = self.group
        for col in self.tabular:
            roles[f"tabular:{col}"] = col
        return roles
