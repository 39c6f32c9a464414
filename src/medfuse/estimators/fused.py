"""FusionClassifier: image, tabular and text encoders fused and trained end to end."""

from __future__ import annotations

import json
import logging
import math
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
import pandas as pd
import torch
from pydantic import ValidationError
from torch import nn
from torch.utils.data import DataLoader

from medfuse.config import AugmentSpec, DataSpec, RunConfig
from medfuse.data.augment import VIEWS, augment_spec
from medfuse.data.dataset import MultimodalDataset
from medfuse.data.preprocess import ImageTransform, Preprocessor
from medfuse.data.splits import carve, group_labels
from medfuse.data.validation import validate_table
from medfuse.distributed import is_primary
from medfuse.errors import ConfigError, NotFittedError, check_option
from medfuse.estimators.base import (
    ESTIMATOR_FILE,
    MODEL_FILE,
    PREPROCESS_FILE,
    TEXT_ENCODERS,
    DecisionMixin,
)
from medfuse.fusion import FUSIONS, FusionModel, view_averaged_proba
from medfuse.io import (
    atomic_path,
    atomic_write_json,
    atomic_write_text,
    verify_manifest,
    write_manifest,
)
from medfuse.losses import LOSSES

if TYPE_CHECKING:
    from medfuse.encoders.image import ImageEncoder

log = logging.getLogger(__name__)

_TOKENIZER = {"wordcnn": "vocab", "minilm": "minilm"}
OPTIMIZERS = ("adamw", "sgd")
SCHEDULERS = ("plateau", "cosine", "onecycle")
SAMPLERS = ("shuffle", "balanced")
UNFREEZE = ("all", "gradual")
MONITORS = ("val_loss", "val_auc", "val_acc", "last")


class FusionClassifier(DecisionMixin):
    """Image / tabular / text encoders joined by a fusion head, trained end to end.

    Parameters mirror ``ModelSpec`` and ``TrainSpec`` of the YAML config (see
    :meth:`from_config`); any subset of modalities in ``spec`` works, one
    modality alone being a plain classifier.
    """

    kind: ClassVar[Literal["fused", "hybrid"]] = "fused"

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
        num_workers: int = 0,
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

    # ------------------------------------------------------------------ params
    _PARAMS = (
        "image_backbone", "pretrained", "image_size", "freeze_image", "text_encoder",
        "finetune_text", "fusion", "hidden_dims", "dropout", "max_tokens", "min_token_freq",
        "max_vocab", "embed_dim", "max_epochs", "batch_size", "optimizer", "lr", "encoder_lr",
        "weight_decay", "momentum", "patience", "monitor", "scheduler", "warmup", "seed",
        "augment", "num_workers", "accelerator", "devices", "strategy", "num_nodes",
        "precision", "progress", "image_pool", "image_views", "tta", "loss", "focal_gamma",
        "sampler", "ema", "freeze_epochs", "unfreeze", "modality_dropout", "aux_loss",
    )

    def get_params(self) -> dict[str, Any]:
        """Constructor arguments (except ``spec``), as scikit-learn's ``get_params``."""
        return {k: getattr(self, k) for k in self._PARAMS}

    @classmethod
    def from_config(cls, cfg: RunConfig, **overrides: Any) -> FusionClassifier:
        """Build from a :class:`RunConfig` (``model`` and ``train`` sections)."""
        m, t = cfg.model, cfg.train
        params: dict[str, Any] = dict(
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
        params.update(overrides)
        return cls(cfg.data, **params)

    def _validate_params(self) -> None:
        owner = type(self).__name__
        check_option("fusion", self.fusion, FUSIONS, owner)
        check_option("text_encoder", self.text_encoder, TEXT_ENCODERS, owner)
        check_option("optimizer", self.optimizer, OPTIMIZERS, owner)
        check_option("scheduler", self.scheduler, SCHEDULERS, owner)
        check_option("loss", self.loss, LOSSES, owner)
        check_option("sampler", self.sampler, SAMPLERS, owner)
        check_option("unfreeze", self.unfreeze, UNFREEZE, owner)
        check_option("monitor", self.monitor, MONITORS, owner)
        check_option("tta", self.tta, VIEWS, owner)
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
        for name in ("max_epochs", "batch_size", "max_tokens", "patience"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(
                    f"The '{name}' parameter of {owner} must be an int >= 1. Got {value!r} instead."
                )
        for name in ("dropout", "modality_dropout", "ema"):
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
        for name, strict in (("lr", True), ("encoder_lr", True), ("weight_decay", False)):
            value = getattr(self, name)
            if value is None and name == "encoder_lr":
                continue
            number = isinstance(value, (int, float)) and not isinstance(value, bool)
            if not (number and math.isfinite(value) and (value > 0 if strict else value >= 0)):
                raise ConfigError(f"The '{name}' parameter of {owner} must be a finite number "
                                  f"{'> 0' if strict else '>= 0'}. Got {value!r} instead.")

    # --------------------------------------------------------------- building
    def _image_encoder(self, pretrained: str) -> ImageEncoder:
        from medfuse.encoders.image import ImageEncoder

        return ImageEncoder(
            self.image_backbone, pretrained=pretrained, image_size=self.image_size,
            freeze=self.freeze_image, pool=self.image_pool, views=self.image_views,
        )

    def _build(
        self, pre: Preprocessor, image: nn.Module | None, embeddings: Any = None
    ) -> FusionModel:
        spec = self.spec
        encoders: dict[str, nn.Module] = {}
        if image is not None:
            encoders["image"] = image
        if pre.tabular_ is not None:
            from medfuse.encoders.tabular import TabularEncoder

            encoders["tabular"] = TabularEncoder(
                pre.tabular_.cardinalities, len(pre.tabular_.continuous_names),
                dropout=self.dropout,
            )
        if spec.text:
            from medfuse.encoders import text as text_encoders

            views: list[nn.Module] = []
            for name in self.text_encoder.split("+"):
                if name == "minilm":
                    views.append(text_encoders.MiniLMEncoder(finetune=self.finetune_text))
                elif pre.vocab_ is not None:
                    views.append(text_encoders.WordCNNEncoder(
                        len(pre.vocab_), embed_dim=self.embed_dim, embeddings=embeddings,
                        dropout=self.dropout,
                    ))
            encoders["text"] = (
                views[0] if len(views) == 1 else text_encoders.MultiViewTextEncoder(views)
            )
        return FusionModel(
            encoders, len(pre.classes_), tuple(self.hidden_dims), self.dropout, self.fusion,
            missing=self.handles_missing, modality_dropout=float(self.modality_dropout),
            aux_loss=float(self.aux_loss),
        )

    @property
    def handles_missing(self) -> bool:
        """True when the model predicts rows lacking a modality (``modality_dropout > 0``)."""
        return float(self.modality_dropout) > 0

    def _pretrained_modules(self, model: FusionModel) -> tuple[nn.Module, ...]:
        """Encoders that start from pretrained weights (trained at ``encoder_lr``)."""
        from medfuse.encoders.text import MiniLMEncoder

        out: list[nn.Module] = []
        for name, encoder in model.encoders.items():
            if name == "image" and self.pretrained != "none":
                out.append(encoder)
            out += [m for m in encoder.modules() if isinstance(m, MiniLMEncoder)]
        return tuple(out)

    def _check_fitted(self) -> None:
        if not hasattr(self, "model_"):
            raise NotFittedError(
                f"This {type(self).__name__} is not fitted yet; call fit(train_df) first"
            )

    # -------------------------------------------------------------------- fit
    def fit(
        self,
        train: pd.DataFrame,
        valid: pd.DataFrame | None = None,
        run_dir: str | Path | None = None,
        resume: bool = False,
    ) -> FusionClassifier:
        """Fit on ``train``; early stopping watches ``valid`` (carved from ``train`` if None).

        ``run_dir`` receives Lightning's ``logs/`` and ``checkpoints/`` (default: a temp
        dir); ``resume=True`` continues from ``run_dir/checkpoints/last.ckpt``.
        """
        from lightning import seed_everything

        from medfuse.training import FusionModule, class_weights

        self._validate_params()
        seed_everything(self.seed, workers=True, verbose=False)
        spec = self.spec
        train, self.validation_ = validate_table(train, spec, table="train", check_images="exists")
        if valid is None:
            groups, _ = group_labels(train, spec)
            y = train[spec.target].astype(str).to_numpy()
            rest, held = carve(y, groups, spec.split.valid_size, self.seed)
            train, valid = train.iloc[rest].reset_index(drop=True), train.iloc[held]
        valid, _ = validate_table(valid, spec, table="valid", check_images="exists",
                                  training=False)
        self._check_missing(train, "train")

        image = self._image_encoder(self.pretrained) if spec.image else None
        transform = image.transform if image is not None else ImageTransform()
        pre = Preprocessor(
            spec, self.max_tokens, self.min_token_freq, self.max_vocab, image=transform,
            tokenizer="+".join(_TOKENIZER[v] for v in self.text_encoder.split("+")),
        ).fit(train)
        embeddings = None
        if spec.text and pre.vocab_ is not None:
            from medfuse.encoders.text import train_word2vec

            embeddings = train_word2vec(
                train[spec.text].tolist(), pre.vocab_, dim=self.embed_dim, seed=self.seed
            )
        model = self._build(pre, image, embeddings)
        targets = pre.encode_target(train[spec.target]).numpy()
        module = FusionModule(
            model, class_weights(targets, len(pre.classes_)), self.optimizer, self.lr,
            self.weight_decay, self.momentum, self.patience, self.encoder_lr,
            pretrained=self._pretrained_modules(model), scheduler=self.scheduler,
            warmup=self.warmup, loss=self.loss, focal_gamma=self.focal_gamma,
        )
        with tempfile.TemporaryDirectory(prefix="medfuse-") as tmp:
            self._train(module, pre, train, valid, Path(run_dir or tmp), resume)
        self.model_ = model.eval()
        self.pre_ = pre
        self.classes_ = list(pre.classes_)
        return self

    def training_seconds(self) -> float:
        """Seconds spent training (``train_seconds_``)."""
        return float(self.train_seconds_)

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

    def _train(
        self, module: Any, pre: Preprocessor, train: pd.DataFrame, valid: pd.DataFrame,
        run_dir: Path, resume: bool,
    ) -> None:
        """Run Lightning on ``module``; keep the best checkpoint's weights (``monitor``) or,
        with ``monitor="last"``, the final ones."""
        from medfuse.data.decoded import training_cache
        from medfuse.training import (
            EpochSampler,
            EpochSeed,
            balanced_weights,
            ema_callback,
            make_trainer,
        )

        last = run_dir / "checkpoints" / "last.ckpt"
        if resume and not last.is_file():
            raise ConfigError(f"cannot resume: '{last}' does not exist; train without --resume")
        if self.monitor == "val_auc" and valid[self.spec.target].nunique() < 2:
            raise ConfigError(
                f"monitor='val_auc' needs both classes among the validation rows, and all "
                f"{len(valid)} are '{valid[self.spec.target].iloc[0]}': monitor val_loss or "
                "val_acc instead, or give the validation split more rows (data.split.valid_size)."
            )
        loader_kw: dict[str, Any] = dict(
            batch_size=self.batch_size, num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )
        from medfuse.perf import tune_malloc

        tune_malloc()  # +20 % per training step: activations reuse memory, no page faults
        # each training / validation image is decoded and resized once (8-bit, on disk)
        decoded = training_cache(pre.image) if self.spec.image else None
        train_ds = MultimodalDataset(train, pre,
                                     augment=self.augment if self.spec.image else False,
                                     decoded=decoded)
        # order, augmentation and dropout follow (seed, epoch): a resumed run repeats the
        # uninterrupted one exactly (see EpochSampler / EpochSeed)
        weights = None
        if self.sampler == "balanced":
            weights = balanced_weights(pre.encode_target(train[self.spec.target]).numpy())
        sampler = EpochSampler(len(train_ds), self.seed, weights=weights)
        callbacks: list[Any] = [EpochSeed(self.seed, [sampler])]
        if self.ema:
            callbacks.append(ema_callback(self.ema))
        strategy = self.strategy
        encoders = dict(getattr(module.model, "encoders", {}))  # an nn.ModuleDict
        image = encoders.get("image")
        if self.freeze_epochs and image is not None:
            from medfuse.finetuning import BackboneFinetuning

            callbacks.append(BackboneFinetuning(image.backbone, self.freeze_epochs,
                                                self.unfreeze))
            if strategy == "ddp":  # frozen parameters get no gradient for a while
                strategy = "ddp_find_unused_parameters_true"
        trainer, checkpoint = make_trainer(
            run_dir, self.max_epochs, self.patience, self.accelerator, self.devices,
            strategy, self.num_nodes, self.training_precision(), self.progress,
            callbacks=callbacks, monitor=self.monitor,
        )
        train_dl = DataLoader(train_ds, sampler=sampler,
                              drop_last=len(train_ds) > self.batch_size,
                              generator=torch.Generator().manual_seed(self.seed), **loader_kw)
        valid_dl = DataLoader(MultimodalDataset(valid, pre, decoded=decoded), **loader_kw)
        earlier = _logged_epochs(run_dir, last) if resume and is_primary() else None
        t0 = time.perf_counter()
        trainer.fit(module, train_dl, valid_dl, ckpt_path=str(last) if resume else None)
        self.train_seconds_ = time.perf_counter() - t0
        # under DDP every process trains; only the first one writes files (run directory)
        self.is_primary_ = bool(trainer.is_global_zero)
        if earlier is not None and self.is_primary_:
            _prepend_log_rows(run_dir, earlier)
        if checkpoint is not None and checkpoint.best_model_path:
            state = torch.load(checkpoint.best_model_path, map_location="cpu", weights_only=True)
            module.load_state_dict(state["state_dict"])
        self.epochs_ = int(trainer.current_epoch)

    def _check_missing(self, train: pd.DataFrame, table: str) -> None:
        """Training rows without an image need a model that learns to do without one."""
        from medfuse.data.dataset import presence

        if self.handles_missing or not self.spec.image:
            return
        lacking = int((presence(train, self.spec)[:, 0] == 0).sum())
        if lacking:
            raise ConfigError(
                f"{lacking} '{table}' row(s) have no image (data.policy.missing_image=keep), "
                "and this model was not set up to predict without one: set "
                "model.modality_dropout (e.g. --set model.modality_dropout=0.2) so it learns "
                "to, or data.policy.missing_image=drop to leave those rows out."
            )

    # ---------------------------------------------------------------- predict
    def _batches(self, df: pd.DataFrame) -> Iterator[dict[str, torch.Tensor]]:
        """Model input batches for the rows of ``df``."""
        clean, _ = validate_table(df, self.input_spec(), table="predict",
                                  check_images="exists", require_target=False, training=False)
        yield from DataLoader(MultimodalDataset(clean, self.pre_, with_target=False),
                              batch_size=self.batch_size)

    def _raw_proba(self, df: pd.DataFrame) -> np.ndarray:
        """Uncalibrated class probabilities (softmax of the network's logits)."""
        out = []
        self.model_.eval()
        with torch.inference_mode():
            for batch in self._batches(df):
                out.append(view_averaged_proba(self.model_, batch, self.tta))
        return torch.cat(out).numpy() if out else np.zeros((0, len(self.classes_)))

    def modality_weights(self, df: pd.DataFrame, without: Sequence[str] = ()) -> pd.DataFrame:
        """The gate's weight of each modality per row (``fusion="gated"`` models).

        One column per modality (``spec.modalities``); each row sums to 1 over the
        modalities the row has. Other fusions raise :class:`~medfuse.errors.ConfigError`.
        """
        self._check_fitted()
        if self.fusion != "gated":
            raise ConfigError(f"modality_weights needs fusion='gated'; this model uses "
                              f"fusion={self.fusion!r}, which has no gate.")
        out = []
        self.model_.eval()
        with torch.inference_mode():
            for batch in self._batches(self._hide(df, without)):
                out.append(self.model_.gates(batch).float())
        weights = torch.cat(out).numpy() if out else np.zeros((0, len(self.model_.modalities)))
        return pd.DataFrame(weights, columns=self.model_.modalities)

    # ------------------------------------------------------------- save/load
    def save(self, path: str | Path) -> Path:
        """Write ``model.safetensors`` + ``preprocess.json`` + ``estimator.json`` + manifest."""
        from safetensors.torch import save_model

        self._check_fitted()
        run = Path(path)
        run.mkdir(parents=True, exist_ok=True)
        with atomic_path(run / MODEL_FILE) as tmp:
            save_model(self.model_, str(tmp))
        self.pre_.save(run / PREPROCESS_FILE)
        meta = {
            "estimator": type(self).__name__,
            "params": {k: list(v) if isinstance(v, tuple) else v
                       for k, v in self.get_params().items()},
            "spec": self.spec.model_dump(mode="json"),
            "classes": self.classes_,
            "train_seconds": self.train_seconds_,
            "epochs": self.epochs_,
            "decision": self.decision_state(),
        }
        atomic_write_json(run / ESTIMATOR_FILE, meta)
        existing = [p.name for p in run.iterdir() if p.is_file() and p.name != "manifest.json"]
        write_manifest(run, existing)
        return run

    @classmethod
    def load(cls, path: str | Path) -> FusionClassifier:
        """Load a saved model; files are checked against ``manifest.json`` first."""
        from safetensors.torch import load_model

        run = Path(path)
        verify_manifest(run, required=(MODEL_FILE, PREPROCESS_FILE, ESTIMATOR_FILE))
        meta = json.loads((run / ESTIMATOR_FILE).read_text())
        params = meta["params"]
        params["hidden_dims"] = tuple(params["hidden_dims"])
        clf = cls(DataSpec.model_validate(meta["spec"]), **params)
        clf.pre_ = Preprocessor.load(run / PREPROCESS_FILE)
        image = clf._image_encoder("none") if clf.spec.image else None
        model = clf._build(clf.pre_, image)
        load_model(model, str(run / MODEL_FILE), strict=True)
        clf.model_ = model.eval()
        clf.classes_ = list(meta["classes"])
        clf.train_seconds_ = float(meta["train_seconds"])
        clf.epochs_ = int(meta["epochs"])
        clf.set_decision_state(meta.get("decision", {}))
        return clf


LOG_FILE = Path("logs") / "metrics.csv"
_LOG_KEPT = Path("logs") / "metrics.before_resume.csv"


def _logged_epochs(run_dir: Path, checkpoint: Path) -> pd.DataFrame | None:
    """Rows of ``logs/metrics.csv`` for the epochs ``checkpoint`` has finished.

    Lightning's CSV logger starts that file afresh when training resumes; these rows are
    put back in front afterwards (:func:`_prepend_log_rows`).
    """
    saved = run_dir / _LOG_KEPT
    frames: list[pd.DataFrame] = []
    try:
        done = int(torch.load(checkpoint, map_location="cpu", weights_only=True)["epoch"])
        for path in (saved, run_dir / LOG_FILE):  # rows kept by an earlier resume first
            if path.is_file():
                rows = pd.read_csv(path)
                if "epoch" in rows:
                    seen = set().union(*(f["epoch"] for f in frames))
                    frames.append(rows[(rows["epoch"] <= done) & ~rows["epoch"].isin(seen)])
    except (OSError, ValueError, KeyError, RuntimeError, pd.errors.ParserError):
        return None
    if not frames:
        return None
    earlier = pd.concat(frames, ignore_index=True)
    # on disk too: if the resumed run is killed in turn, these rows are not lost
    atomic_write_text(saved, earlier.to_csv(index=False))
    return earlier


def _prepend_log_rows(run_dir: Path, earlier: pd.DataFrame) -> None:
    path = run_dir / LOG_FILE
    later = pd.read_csv(path) if path.is_file() else earlier.iloc[:0]
    if "epoch" in later:
        later = later[~later["epoch"].isin(earlier["epoch"].unique())]
    atomic_write_text(path, pd.concat([earlier, later], ignore_index=True).to_csv(index=False))
    (run_dir / _LOG_KEPT).unlink(missing_ok=True)


def _augment_param(spec: AugmentSpec) -> bool | dict[str, float]:
    """``True`` / ``False`` for the two named settings, else the mapping (JSON-friendly)."""
    for named in (True, False):
        if spec == AugmentSpec.model_validate(named):
            return named
    return spec.model_dump()
