"""A fused model's parameters: what they are, which values they take, how a config sets them.

:class:`FusionParams` is the part of
:class:`~medfuse.estimators.fused.FusionClassifier` that stores the constructor arguments
(``__init__`` does nothing else), lists them (``get_params``), reads them from a
:class:`~medfuse.config.RunConfig` (``from_config``) and checks them at ``fit`` time
(``_validate_params``), and resolves the precision a fit trains in
(``training_precision``). The single-parameter constraints are data (:data:`OPTION_PARAMS`,
:data:`COUNT_PARAMS`, :data:`FRACTION_PARAMS`, :data:`RATE_PARAMS`); the rules tying
parameters to each other or to the spec are code.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import ValidationError

from medfuse.config import AugmentSpec, DataSpec, RunConfig
from medfuse.data.augment import VIEWS, augment_spec
from medfuse.errors import ConfigError, check_option
from medfuse.estimators.base import TEXT_ENCODERS
from medfuse.fusion import FUSIONS
from medfuse.losses import LOSSES

__all__ = [
    "COUNT_PARAMS",
    "FRACTION_PARAMS",
    "MONITORS",
    "OPTIMIZERS",
    "OPTION_PARAMS",
    "RATE_PARAMS",
    "SAMPLERS",
    "SCHEDULERS",
    "UNFREEZE",
    "FusionParams",
    "params_from_config",
]

OPTIMIZERS = ("adamw", "sgd")
SCHEDULERS = ("plateau", "cosine", "onecycle")
SAMPLERS = ("shuffle", "balanced")
UNFREEZE = ("all", "gradual")
MONITORS = ("val_loss", "val_auc", "val_acc", "last")

OPTION_PARAMS: dict[str, tuple[str, ...]] = {
    "fusion": FUSIONS,
    "text_encoder": TEXT_ENCODERS,
    "optimizer": OPTIMIZERS,
    "scheduler": SCHEDULERS,
    "loss": LOSSES,
    "sampler": SAMPLERS,
    "unfreeze": UNFREEZE,
    "monitor": MONITORS,
    "tta": VIEWS,
}
"""Parameters taking one of a few names, and those names (checked in this order)."""

COUNT_PARAMS = ("max_epochs", "batch_size", "max_tokens", "patience")
"""Parameters that are an ``int >= 1``."""

FRACTION_PARAMS = ("dropout", "modality_dropout", "ema")
"""Parameters in ``[0, 1)``."""

RATE_PARAMS: tuple[tuple[str, bool], ...] = (
    ("lr", True), ("encoder_lr", True), ("weight_decay", False),
)
"""Finite numbers: ``(name, strictly positive)``; ``encoder_lr`` may also be ``None``."""

_Params = TypeVar("_Params", bound="FusionParams")


class FusionParams:
    """The constructor arguments of a fused model, their checks and their config keys.

    Parameters mirror ``ModelSpec`` and ``TrainSpec`` of the YAML config (see
    :meth:`from_config`).
    """

    _PARAMS = (
        "image_backbone", "pretrained", "image_size", "freeze_image", "text_encoder",
        "finetune_text", "fusion", "hidden_dims", "dropout", "max_tokens", "min_token_freq",
        "max_vocab", "embed_dim", "max_epochs", "batch_size", "optimizer", "lr", "encoder_lr",
        "weight_decay", "momentum", "patience", "monitor", "scheduler", "warmup", "seed",
        "augment", "num_workers", "accelerator", "devices", "strategy", "num_nodes",
        "precision", "progress", "image_pool", "image_views", "tta", "loss", "focal_gamma",
        "sampler", "ema", "freeze_epochs", "unfreeze", "modality_dropout", "aux_loss",
    )

    def __init__(
        self,
        spec: DataSpec,
        image_backbone: str = "tf_efficientnet_lite0",
        pretrained: str = "builtin",
        image_size: int | None = None,
        freeze_image: bool = False,
        text_encoder: str = "wordcnn",
        finetune_text: bool = False,
        fusion: str = "concat",
        hidden_dims: tuple[int, ...] | list[int] = (128,),
        dropout: float = 0.2,
        max_tokens: int = 128,
        min_token_freq: int = 2,
        max_vocab: int = 20000,
        embed_dim: int = 100,
        max_epochs: int = 10,
        batch_size: int = 32,
        optimizer: str = "adamw",
        lr: float = 1e-3,
        encoder_lr: float | None = None,
        weight_decay: float = 1e-4,
        momentum: float = 0.9,
        patience: int = 3,
        monitor: str = "val_loss",
        scheduler: str = "plateau",
        warmup: float = 0.05,
        seed: int = 0,
        augment: bool | Mapping[str, Any] = True,
        loss: str = "ce",
        focal_gamma: float = 2.0,
        sampler: str = "shuffle",
        ema: float = 0.0,
        freeze_epochs: int = 0,
        unfreeze: str = "all",
        num_workers: int | None = None,
        accelerator: str = "auto",
        devices: int | str | list[int] = "auto",
        strategy: str = "auto",
        num_nodes: int = 1,
        precision: str = "32-true",
        progress: bool = True,
        image_pool: str = "avg",
        image_views: str = "none",
        tta: str = "none",
        modality_dropout: float = 0.0,
        aux_loss: float = 0.0,
    ) -> None:
        self.spec = spec
        self.image_backbone = image_backbone
        self.pretrained = pretrained
        self.image_size = image_size
        self.freeze_image = freeze_image
        self.text_encoder = text_encoder
        self.finetune_text = finetune_text
        self.fusion = fusion
        self.hidden_dims = hidden_dims
        self.dropout = dropout
        self.max_tokens = max_tokens
        self.min_token_freq = min_token_freq
        self.max_vocab = max_vocab
        self.embed_dim = embed_dim
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.optimizer = optimizer
        self.lr = lr
        self.encoder_lr = encoder_lr
        self.weight_decay = weight_decay
        self.momentum = momentum
        self.patience = patience
        self.monitor = monitor
        self.scheduler = scheduler
        self.warmup = warmup
        self.seed = seed
        self.augment = augment
        self.loss = loss
        self.focal_gamma = focal_gamma
        self.sampler = sampler
        self.ema = ema
        self.freeze_epochs = freeze_epochs
        self.unfreeze = unfreeze
        self.num_workers = num_workers
        self.accelerator = accelerator
        self.devices = devices
        self.strategy = strategy
        self.num_nodes = num_nodes
        self.precision = precision
        self.progress = progress
        self.image_pool = image_pool
        self.image_views = image_views
        self.tta = tta
        self.modality_dropout = modality_dropout
        self.aux_loss = aux_loss

    def get_params(self) -> dict[str, Any]:
        """Constructor arguments (except ``spec``), as scikit-learn's ``get_params``."""
        return {k: getattr(self, k) for k in self._PARAMS}

    @classmethod
    def from_config(cls: type[_Params], cfg: RunConfig, **overrides: Any) -> _Params:
        """Build from a :class:`RunConfig` (``model`` and ``train`` sections)."""
        params = params_from_config(cfg)
        params.update(overrides)
        return cls(cfg.data, **params)

    @property
    def handles_missing(self) -> bool:
        """True when the model predicts rows lacking a modality (``modality_dropout > 0``)."""
        return float(self.modality_dropout) > 0

    def training_precision(self) -> str:
        """Lightning's ``precision`` for this fit, with ``"auto"`` resolved.

        ``"auto"`` trains networks with an image encoder in ``"bf16-mixed"`` where the CPU
        has native bf16 (see :func:`medfuse.perf.resolve_precision`), everything else in
        fp32; ``"bf16-mixed"`` falls back to fp32 on CPUs without native bf16.
        """
        from medfuse.perf import resolve_precision

        if self.precision == "auto" and not self.spec.image:
            return "32-true"  # word-CNN / MLP networks: too small for bf16 to pay
        return resolve_precision(self.precision, self.accelerator)

    def _validate_params(self) -> None:
        owner = type(self).__name__
        for name, options in OPTION_PARAMS.items():
            check_option(name, getattr(self, name), options, owner)
        if self.tta != "none" and not self.spec.image:
            raise ConfigError(f"tta={self.tta!r} averages predictions over views of the image, "
                              "and this spec has no image column: set tta='none'.")
        if not isinstance(self.freeze_epochs, int) or self.freeze_epochs < 0:
            raise ConfigError(f"The 'freeze_epochs' parameter of {owner} must be an int >= 0. "
                              f"Got {self.freeze_epochs!r} instead.")
        if self.freeze_epochs and self.freeze_image:
            raise ConfigError(
                f"freeze_epochs={self.freeze_epochs} unfreezes the image backbone after those "
                "epochs, and freeze_image=True keeps it frozen for good: set one of them only."
            )
        if self.freeze_epochs and not self.spec.image:
            raise ConfigError("freeze_epochs freezes the image backbone, and this spec has no "
                              "image column: set freeze_epochs=0.")
        try:
            augment_spec(self.augment)
        except ValidationError as e:
            raise ConfigError(f"The 'augment' parameter of {owner} must be True, False or a "
                              f"mapping of AugmentSpec keys: {e}") from None
        for name in COUNT_PARAMS:
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(
                    f"The '{name}' parameter of {owner} must be an int >= 1. Got {value!r} instead."
                )
        for name in FRACTION_PARAMS:
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and 0.0 <= float(value) < 1.0):
                raise ConfigError(
                    f"The '{name}' parameter of {owner} must be in [0, 1). Got {value!r}."
                )
        if self.modality_dropout and len(self.spec.modalities) < 2:
            raise ConfigError(
                f"modality_dropout={self.modality_dropout} hides modalities of training rows, "
                f"and this spec has one modality ({self.spec.modalities[0]}): set "
                "modality_dropout=0, or add an image / tabular / text column."
            )
        aux = self.aux_loss
        if not (isinstance(aux, (int, float)) and not isinstance(aux, bool)
                and math.isfinite(aux) and aux >= 0):
            raise ConfigError(f"The 'aux_loss' parameter of {owner} must be a finite number "
                              f">= 0 (the auxiliary losses' weight). Got {aux!r} instead.")
        for name, strict in RATE_PARAMS:
            value = getattr(self, name)
            if value is None and name == "encoder_lr":
                continue
            number = isinstance(value, (int, float)) and not isinstance(value, bool)
            if not (number and math.isfinite(value) and (value > 0 if strict else value >= 0)):
                raise ConfigError(f"The '{name}' parameter of {owner} must be a finite number "
                                  f"{'> 0' if strict else '>= 0'}. Got {value!r} instead.")


def params_from_config(cfg: RunConfig) -> dict[str, Any]:
    """The :class:`~medfuse.estimators.fused.FusionClassifier` arguments a
    :class:`RunConfig` sets (``model`` and ``train`` sections)."""
    m, t = cfg.model, cfg.train
    return dict(
        image_backbone=m.image_backbone, pretrained=m.pretrained, image_size=m.image_size,
        freeze_image=m.freeze_image, text_encoder=m.text_encoder,
        finetune_text=m.finetune_text, fusion=m.fusion, hidden_dims=tuple(m.hidden_dims),
        dropout=m.dropout, max_tokens=m.max_tokens, min_token_freq=m.min_token_freq,
        max_vocab=m.max_vocab, embed_dim=m.embed_dim, max_epochs=t.max_epochs,
        batch_size=t.batch_size, optimizer=t.optimizer, lr=t.lr, encoder_lr=t.encoder_lr,
        weight_decay=t.weight_decay, momentum=t.momentum, patience=t.patience,
        monitor=t.monitor, scheduler=t.scheduler, warmup=t.warmup, seed=t.seed,
        augment=_augment_param(t.augment), loss=t.loss, focal_gamma=t.focal_gamma,
        sampler=t.sampler, ema=t.ema, freeze_epochs=t.freeze_epochs, unfreeze=t.unfreeze,
        num_workers=t.num_workers, accelerator=t.accelerator,
        devices=t.devices, strategy=t.strategy, num_nodes=t.num_nodes,
        precision=t.precision, image_pool=m.image_pool, image_views=m.image_views,
        tta=m.tta, modality_dropout=m.modality_dropout, aux_loss=m.aux_loss,
    )


def _augment_param(spec: AugmentSpec) -> bool | dict[str, float]:
    """``True`` / ``False`` for the two named settings, else the mapping (JSON-friendly)."""
    for named in (True, False):
        if spec == AugmentSpec.model_validate(named):
            return named
    return spec.model_dump()
