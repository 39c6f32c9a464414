"""Run configuration: ``RunConfig = DataSpec + ModelSpec + TrainSpec``.

Configs are YAML files validated by pydantic. Unknown keys and wrong values are
:class:`~medfuse.errors.ConfigError` s that name the key, the value, the valid
options and the closest match::

    >>> from medfuse.config import load_config
    >>> cfg = load_config("synth_derm", overrides=["train.max_epochs=2"])
    >>> cfg.train.max_epochs
    2
"""

from __future__ import annotations

import types
import typing
from pathlib import Path
from typing import Any, Literal, Union

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from medfuse.errors import ConfigError, did_you_mean, format_options

CONFIG_DIR = Path(__file__).parent / "configs"
CONFIG_ALIASES = {"siim_isic": "isic2020"}  # other names of shipped configs

ColumnType = Literal["continuous", "categorical"]
Modality = Literal["image", "tabular", "text"]


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataPolicy(_Spec):
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


class SplitSpec(_Spec):
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


class DataSpec(_Spec):
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
        roles: dict[str, str] = {"target": self.target}
        if self.image:
            roles["image"] = self.image
        if self.text:
            roles["text"] = self.text
        if self.group:
            roles["group"] = self.group
        for col in self.tabular:
            roles[f"tabular:{col}"] = col
        return roles


TEXT_FEATURE_VIEWS = ("tfidf", "word2vec", "minilm")


class ModelSpec(_Spec):
    """The model: encoders per modality, fusion and head."""

    kind: Literal["fusion", "hybrid"] = "fusion"
    image_backbone: str = "tf_efficientnet_lite0"
    pretrained: str = Field(
        "builtin", description="'builtin', 'none', 'hub' or a local .pth/.safetensors path"
    )
    image_size: int | None = Field(None, ge=16, le=1024)
    freeze_image: bool = Field(False, description="train only the head on frozen image features")
    text_encoder: Literal["wordcnn", "minilm", "wordcnn+minilm"] = "wordcnn"
    finetune_text: bool = Field(False, description="fine-tune MiniLM (frozen by default)")
    embed_dim: int = Field(100, ge=8, le=1024, description="word2vec / word-CNN embedding size")
    fusion: Literal["concat", "gated", "late"] = "concat"
    modality_dropout: float = Field(
        0.0, ge=0.0, lt=1.0, description="fused models: probability of hiding each modality "
        "of a training row (never all of them); > 0 also lets the model predict rows that "
        "lack a modality (no image file, empty text, no tabular value)"
    )
    aux_loss: float = Field(
        0.0, ge=0.0, description="fused models: weight of auxiliary per-modality losses (a "
        "linear head per modality; late fusion: its own heads)"
    )
    hidden_dims: list[int] = Field(default_factory=lambda: [128])
    dropout: float = Field(0.2, ge=0.0, lt=1.0)
    max_tokens: int = Field(128, ge=4, le=4096)
    min_token_freq: int = Field(2, ge=1)
    max_vocab: int = Field(20000, ge=10)
    # --- hybrid models (kind: hybrid): deep features + a classical head
    head: Literal["lr", "rf", "adaboost", "xgboost", "svm"] = Field(
        "lr", description="classical head of hybrid models"
    )
    head_params: dict[str, Any] = Field(
        default_factory=dict, description="constructor arguments of the head, e.g. {C: 0.1}"
    )
    extractor: Literal["frozen", "trained"] = Field(
        "frozen", description="frozen pretrained backbone, or a CNN trained on the training "
        "rows only (small_cnn unless image_backbone is set)"
    )
    extractor_tabular: bool = Field(
        False, description="extractor: trained: train the network on the tabular columns "
        "too and add its tabular embedding to the features"
    )
    text_features: str = Field(
        "tfidf", description="tfidf | word2vec | minilm, several joined by '+', or none"
    )
    text_components: int = Field(128, ge=0, description="SVD components of TF-IDF (0: raw)")
    resample: Literal["none", "smote", "adasyn", "oversample"] = Field(
        "none", description="imbalanced-learn resampling inside each training fold"
    )
    class_weight: bool = Field(True, description="balanced class weights (when not resampling)")
    feature_cache: bool = Field(True, description="cache frozen image features on disk")
    image_pool: Literal["avg", "gem"] = Field(
        "avg", description="pooling of the image backbone's last feature map: avg or gem "
        "(generalised mean, p = 3)"
    )
    image_views: Literal["none", "hflip", "dihedral"] = Field(
        "none", description="image features averaged over the image and its mirror image "
        "(hflip: left-right invariant, twice the compute), over its eight flips / quarter "
        "turns (dihedral, 8x the compute) or not"
    )
    tta: Literal["none", "hflip", "dihedral"] = Field(
        "none", description="fused models: test-time augmentation, class probabilities "
        "averaged over the image and its mirror image (hflip) or its eight flips / quarter "
        "turns (dihedral) at prediction; training is unchanged"
    )

    @field_validator("text_features")
    @classmethod
    def _text_views(cls, value: str) -> str:
        if value == "none":
            return value
        views = value.split("+")
        bad = [v for v in views if v not in TEXT_FEATURE_VIEWS]
        if bad or len(set(views)) != len(views):
            raise ValueError(
                f"must be one of {', '.join(TEXT_FEATURE_VIEWS)}, several joined by '+' or none "
                f"(each once), e.g. 'tfidf+minilm'; got {value!r}"
            )
        return value


class AugmentSpec(_Spec):
    """Random augmentation of training images, drawn per (seed, epoch, row).

    ``true`` is the default below (horizontal flip, small affine); ``false`` turns
    everything off; a mapping sets the keys it names (the others keep their defaults).
    Probabilities are in [0, 1]; 0 disables a step.
    """

    hflip: float = Field(0.5, ge=0.0, le=1.0, description="probability of a left-right flip")
    vflip: float = Field(0.0, ge=0.0, le=1.0, description="probability of an up-down flip")
    rot90: float = Field(
        0.0, ge=0.0, le=1.0, description="probability of a quarter turn (with hflip = vflip = "
        "0.5 and rot90 = 0.5, each of the 8 flips / rotations of the square is equally likely)"
    )
    rotate: float = Field(10.0, ge=0.0, le=180.0, description="max rotation, degrees")
    translate: float = Field(0.05, ge=0.0, lt=1.0, description="max shift, share of the side")
    scale: float = Field(0.1, ge=0.0, lt=1.0, description="max zoom in / out, e.g. 0.1: 0.9-1.1")
    color_jitter: float = Field(
        0.0, ge=0.0, le=1.0, description="brightness / contrast / saturation jitter (hue: a "
        "quarter of it)"
    )
    random_resized_crop: float = Field(
        0.0, ge=0.0, lt=1.0, description="smallest crop area (share of the image) of a random "
        "resized crop; 0: none"
    )

    @model_validator(mode="before")
    @classmethod
    def _from_bool(cls, value: Any) -> Any:
        if value is True:
            return {}
        if value is False:
            return {"hflip": 0.0, "rotate": 0.0, "translate": 0.0, "scale": 0.0}
        if not isinstance(value, (dict, AugmentSpec)):
            raise ValueError(
                f"must be true, false or a mapping of {', '.join(cls.model_fields)}"
            )
        return value

    @property
    def active(self) -> bool:
        """True when any step can change an image."""
        return any(v > 0 for v in self.model_dump().values())


class TrainSpec(_Spec):
    """Optimisation and hardware; ``devices`` / ``strategy`` go to Lightning as is."""

    max_epochs: int = Field(10, ge=1)
    batch_size: int = Field(32, ge=1)
    optimizer: Literal["adamw", "sgd"] = "adamw"
    lr: float = Field(1e-3, gt=0.0)
    encoder_lr: float | None = Field(
        None, gt=0.0, description="learning rate of pretrained encoders (default: lr)"
    )
    weight_decay: float = Field(1e-4, ge=0.0)
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    patience: int = Field(3, ge=1, description="epochs without improvement of monitor before "
                          "training stops early")
    monitor: Literal["val_loss", "val_auc", "val_acc", "last"] = Field(
        "val_loss",
        description="validation score that picks the weights kept (the best checkpoint) and "
        "drives early stopping: val_loss (lowest), val_auc / val_acc (highest; val_auc needs "
        "both classes among the validation rows); last: no early stopping, the last epoch's "
        "weights",
    )
    scheduler: Literal["plateau", "cosine", "onecycle"] = Field(
        "plateau",
        description="plateau: ReduceLROnPlateau on val_loss; cosine: linear warm-up then "
        "cosine decay to 0 per step; onecycle: torch's OneCycleLR",
    )
    warmup: float = Field(0.05, ge=0.0, lt=1.0, description="warm-up share of all steps")
    seed: int = 0
    augment: AugmentSpec = Field(
        default_factory=AugmentSpec,
        description="augmentation of training images: true (flip + small affine), false "
        "(none) or a mapping of AugmentSpec keys, e.g. {hflip: 0.5, vflip: 0.5, rotate: 180}",
    )
    loss: Literal["ce", "focal"] = Field(
        "ce", description="ce: class-weighted cross-entropy; focal: class-weighted focal loss"
    )
    focal_gamma: float = Field(2.0, ge=0.0, le=10.0, description="focusing exponent of focal")
    sampler: Literal["shuffle", "balanced"] = Field(
        "shuffle", description="shuffle: each training row once per epoch; balanced: rows "
        "drawn with replacement, every class equally often"
    )
    ema: float = Field(
        0.0, ge=0.0, lt=1.0, description="decay of an exponential moving average of the "
        "weights, updated every step (e.g. 0.99; warmed up as in timm: min(ema, (1 + n) / "
        "(10 + n)) at update n); validation, checkpoints and the fitted model use the average; "
        "0: off"
    )
    freeze_epochs: int = Field(
        0, ge=0, description="train the head with the image backbone frozen for this many "
        "epochs first, then unfreeze it (at encoder_lr)"
    )
    unfreeze: Literal["all", "gradual"] = Field(
        "all", description="after freeze_epochs, unfreeze the backbone at once (all) or one "
        "stage per epoch from the top (gradual)"
    )
    num_workers: int = Field(0, ge=0)
    accelerator: str = "auto"
    devices: int | str | list[int] = "auto"
    strategy: str = "auto"
    num_nodes: int = Field(1, ge=1)
    precision: str = "32-true"


class EvalSpec(_Spec):
    """Decision threshold, calibration, confidence intervals and subgroups."""

    threshold: Literal["fixed", "youden", "sensitivity"] = Field(
        "fixed", description="fixed: threshold_value (0.5); youden: max sensitivity + "
        "specificity - 1; sensitivity: the highest threshold with sensitivity >= "
        "threshold_value; chosen on validation rows and saved with the model",
    )
    threshold_value: float | None = Field(None, gt=0.0, le=1.0)
    calibrate: bool = Field(True, description="temperature scaling fitted on validation rows")
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


class RunConfig(_Spec):
    """A whole run: what data, which model, how to train, how to evaluate."""

    name: str | None = None
    data: DataSpec
    model: ModelSpec = Field(default_factory=ModelSpec)
    train: TrainSpec = Field(default_factory=TrainSpec)
    evaluation: EvalSpec = Field(default_factory=EvalSpec)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


# --------------------------------------------------------------------------- loading


def available_configs() -> list[str]:
    """Names of the configs shipped in ``configs/``."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def resolve_config_path(name_or_path: str | Path) -> Path:
    """A path as given, or a name from ``configs/`` (``iu_xray`` or ``iu-xray``)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    stem = str(name_or_path).removesuffix(".yaml").replace("-", "_")
    stem = CONFIG_ALIASES.get(stem, stem)
    candidate = CONFIG_DIR / f"{stem}.yaml"
    if candidate.is_file():
        return candidate
    names = available_configs()
    if path.is_dir():
        raise ConfigError(f"config '{path}' is a folder; give the path of a YAML file "
                          "(or the name of a built-in config)")
    if path.suffix.lower() in (".yaml", ".yml") or len(path.parts) > 1:  # meant as a path
        raise ConfigError(
            f"config file '{path}' does not exist (relative paths are read from the current "
            f"directory, '{Path.cwd()}'); check the path, or give a built-in config name: "
            f"{format_options(names)}"
        )
    raise ConfigError(
        f"config '{name_or_path}' is neither a file nor a built-in config name. "
        f"Built-in configs: {format_options(names)}.{did_you_mean(stem, names)}"
    )


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key.sub=value`` overrides (values parsed as YAML) to a raw config dict."""
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(
                f"override '{item}' must look like 'section.key=value', "
                "e.g. --set train.max_epochs=3"
            )
        try:
            value = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError as exc:
            raise ConfigError(f"override '{item}': value is not valid YAML ({exc})") from exc
        parts = key.strip().split(".")
        node = raw
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                where = ".".join(parts[: i + 1])
                raise ConfigError(f"override '{item}': '{where}' is a value, not a section")
            node = child
        node[parts[-1]] = value
    return raw


def parse_config(
    raw: dict[str, Any], source: str = "<config>", overrides: list[str] | None = None
) -> RunConfig:
    """Validate a raw dict (e.g. from YAML) into a :class:`RunConfig`."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: a config must be a mapping with a 'data' section")
    raw = apply_overrides(raw, overrides or [])
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as exc:
        lines = [_describe(err) for err in exc.errors()]
        raise ConfigError(f"invalid config {source}:\n  - " + "\n  - ".join(lines)) from None


def load_config(name_or_path: str | Path, overrides: list[str] | None = None) -> RunConfig:
    """Load a YAML config by name (from ``configs/``) or path, applying ``--set`` overrides."""
    path = resolve_config_path(name_or_path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config '{path}' is not valid YAML: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"config '{path}' is not UTF-8 text (byte {exc.start}: "
            f"{exc.object[exc.start:exc.start + 1]!r}); is it really a YAML file? Re-save "
            "it as UTF-8"
        ) from None
    except OSError as exc:
        raise ConfigError(f"config '{path}' cannot be read: {exc.strerror or exc}") from None
    cfg = parse_config(raw, source=f"'{path}'", overrides=overrides)
    if cfg.name is None:
        cfg.name = path.stem
    return cfg


# --------------------------------------------------------------- error messages


def _unwrap(annotation: Any) -> list[Any]:
    """Members of a Union/Optional annotation (or the annotation itself)."""
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        return [a for a in typing.get_args(annotation) if a is not type(None)]
    return [annotation]


def _annotation_at(loc: tuple[Any, ...]) -> Any:
    """The annotation of the field at ``loc`` inside RunConfig, or None."""
    ann: Any = RunConfig
    for part in loc:
        nxt = None
        for member in _unwrap(ann):
            if isinstance(member, type) and issubclass(member, BaseModel):
                field = member.model_fields.get(str(part))
                if field is not None:
                    nxt = field.annotation
                    break
            elif typing.get_origin(member) is dict:
                nxt = typing.get_args(member)[1]
                break
        if nxt is None:
            return None
        ann = nxt
    return ann


def _field_names_at(loc: tuple[Any, ...]) -> list[str]:
    ann = _annotation_at(loc)
    for member in _unwrap(ann) if ann is not None else []:
        if isinstance(member, type) and issubclass(member, BaseModel):
            return list(member.model_fields)
    return []


def _literal_options(loc: tuple[Any, ...]) -> list[Any]:
    ann = _annotation_at(loc)
    for member in _unwrap(ann) if ann is not None else []:
        if typing.get_origin(member) is Literal:
            return list(typing.get_args(member))
    return []


def _describe(err: Any) -> str:
    loc = tuple(err["loc"])
    key = ".".join(str(p) for p in loc) or "<root>"
    kind = err["type"]
    given = err.get("input")
    if kind == "extra_forbidden":
        valid = _field_names_at(loc[:-1])
        hint = did_you_mean(loc[-1], valid) or _key_elsewhere(str(loc[-1]))
        return f"unknown key '{key}'. Valid keys here: {format_options(valid)}.{hint}"
    if kind == "missing":
        return f"missing required key '{key}'"
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        return (f"'{key}' must be a mapping of 'key: value' entries (indented lines or "
                f"{{key: value}}). Got {given!r}.")
    options = _literal_options(loc)
    if options:
        return (
            f"'{key}' must be one of {format_options(options)}. Got {given!r} instead."
            f"{did_you_mean(given, options)}"
        )
    msg = err["msg"].removeprefix("Value error, ")
    if not loc:
        return str(msg)
    if kind == "value_error":
        return f"'{key}': {msg}"
    return f"'{key}': {msg}. Got {given!r}."


def _key_elsewhere(name: str, model: type[BaseModel] = RunConfig, prefix: str = "") -> str:
    """`` Did you mean 'evaluation.calibrate'?`` for a key that belongs to another section."""
    for field_name, info in model.model_fields.items():
        path = f"{prefix}{field_name}"
        if field_name == name and prefix:
            return f" Did you mean '{path}'?"
        for member in _unwrap(info.annotation):
            if isinstance(member, type) and issubclass(member, BaseModel):
                found = _key_elsewhere(name, member, f"{path}.")
                if found:
                    return found
    return ""
