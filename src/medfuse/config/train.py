"""The ``train`` section: optimisation, augmentation of training images and hardware."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from medfuse.config.base import Spec


class AugmentSpec(Spec):
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


class TrainSpec(Spec):
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
    label_issues: Literal["keep", "drop", "downweight"] = Field(
        "keep", description="rows whose label looks wrong (confident learning, cleanlab, on "
        "cross-validated probabilities of the training rows only): keep them, drop them, or "
        "down-weight them (weight = label quality) before the final fit; test rows are never "
        "changed"
    )
    num_workers: int | None = Field(
        None, ge=0, description="DataLoader worker processes; unset: from the CPU count and "
        "the device (min(8, cpus - 1) with a GPU; cpus // 4 on the CPU, 0 below 4 cores)")
    accelerator: str = "auto"
    devices: int | str | list[int] = "auto"
    strategy: str = "auto"
    num_nodes: int = Field(1, ge=1)
    precision: str = "32-true"
