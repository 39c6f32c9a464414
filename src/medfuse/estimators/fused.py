"""FusionClassifier: image, tabular and text encoders fused and trained end to end.

This module holds what the model does: fit, predict and its files (``estimator.json``,
``model.safetensors``, ``preprocess.json``). Its parts live beside it:

* :mod:`~medfuse.estimators.fused_params` -- the parameters (storage, checks, config keys);
* :mod:`~medfuse.estimators.fused_network` -- the network built from them;
* :mod:`~medfuse.estimators.fused_training` -- the Lightning run of a fit;
* :mod:`~medfuse.estimators.training_log` -- ``logs/metrics.csv`` kept whole on resume.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from medfuse.config import DataSpec
from medfuse.data.dataset import SAMPLE_WEIGHT, MultimodalDataset
from medfuse.data.labels import stratification_target
from medfuse.data.preprocess import ImageTransform, Preprocessor
from medfuse.data.splits import carve, group_labels
from medfuse.data.validation import validate_table
from medfuse.errors import ConfigError, NotFittedError
from medfuse.estimators.base import ESTIMATOR_FILE, MODEL_FILE, PREPROCESS_FILE, DecisionMixin
from medfuse.estimators.fused_network import (
    build_network,
    image_encoder,
    pretrained_modules,
    tokenizer,
)
from medfuse.estimators.fused_params import (
    MONITORS,
    OPTIMIZERS,
    SAMPLERS,
    SCHEDULERS,
    UNFREEZE,
    FusionParams,
)
from medfuse.estimators.fused_training import train_network
from medfuse.estimators.training_log import LOG_FILE
from medfuse.fusion import view_averaged_proba
from medfuse.io import (
    MANIFEST,
    REPORT_FILE,
    atomic_path,
    atomic_write_json,
    verify_manifest,
    write_manifest,
)
from medfuse.scoring.checks import check_sample_weight

__all__ = [
    "LOG_FILE",
    "MONITORS",
    "OPTIMIZERS",
    "SAMPLERS",
    "SCHEDULERS",
    "UNFREEZE",
    "FusionClassifier",
]

log = logging.getLogger(__name__)


class FusionClassifier(FusionParams, DecisionMixin):
    """Image / tabular / text encoders joined by a fusion head, trained end to end.

    Parameters mirror ``ModelSpec`` and ``TrainSpec`` of the YAML config (see
    :meth:`from_config`); any subset of modalities in ``spec`` works, one
    modality alone being a plain classifier.
    """

    kind: ClassVar[Literal["fused", "hybrid"]] = "fused"

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
        sample_weight: Sequence[float] | np.ndarray | None = None,
    ) -> FusionClassifier:
        """Fit on ``train``; early stopping watches ``valid`` (carved from ``train`` if None).

        ``run_dir`` receives Lightning's ``logs/`` and ``checkpoints/`` (default: a temp
        dir); ``resume=True`` continues from ``run_dir/checkpoints/last.ckpt``.
        ``sample_weight`` (one non-negative weight per row of ``train``) multiplies each
        row's training loss (validation is unweighted); weights are not saved, so a resumed
        fit must be given the same ones again.
        """
        from lightning import seed_everything

        from medfuse.losses import label_weights
        from medfuse.training import FusionModule, class_weights

        self._validate_params()
        seed_everything(self.seed, workers=True, verbose=False)
        spec = self.spec
        if sample_weight is not None:  # a column, so the weights follow the rows kept
            train = train.assign(**{SAMPLE_WEIGHT: check_sample_weight(sample_weight,
                                                                       len(train))})
        train, self.validation_ = validate_table(train, spec, table="train", check_images="exists")
        if valid is None:
            groups, _ = group_labels(train, spec)
            y = stratification_target(train, spec)
            rest, held = carve(y, groups, spec.split.valid_size, self.seed)
            train, valid = train.iloc[rest].reset_index(drop=True), train.iloc[held]
        valid, _ = validate_table(valid, spec, table="valid", check_images="exists",
                                  training=False)
        self._check_missing(train, "train")

        image = image_encoder(self, self.pretrained) if spec.image else None
        transform = image.transform if image is not None else ImageTransform()
        pre = Preprocessor(
            spec, self.max_tokens, self.min_token_freq, self.max_vocab, image=transform,
            tokenizer=tokenizer(self.text_encoder),
        ).fit(train)
        embeddings = None
        if spec.text and pre.vocab_ is not None:
            from medfuse.encoders.text import train_word2vec

            embeddings = train_word2vec(
                train[spec.text].tolist(), pre.vocab_, dim=self.embed_dim, seed=self.seed
            )
        model = build_network(self, pre, image, embeddings)
        targets = pre.encode_target(train).numpy()
        module = FusionModule(
            model, label_weights(targets) if pre.multilabel
            else class_weights(targets, len(pre.classes_)), self.optimizer, self.lr,
            self.weight_decay, self.momentum, self.patience, self.encoder_lr,
            pretrained=pretrained_modules(model, self.pretrained), scheduler=self.scheduler,
            warmup=self.warmup, loss=self.loss, focal_gamma=self.focal_gamma,
        )
        with tempfile.TemporaryDirectory(prefix="medfuse-") as tmp:
            run = train_network(self, module, pre, train, valid, Path(run_dir or tmp), resume)
        self.train_seconds_ = run.seconds
        self.is_primary_ = run.primary
        self.epochs_ = run.epochs
        self.model_ = model.eval()
        self.pre_ = pre
        self.classes_ = list(pre.classes_)
        return self

    def training_seconds(self) -> float:
        """Seconds spent training (``train_seconds_``)."""
        return float(self.train_seconds_)

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
        from medfuse.perf import loader_options, to_device

        clean, _ = validate_table(df, self.input_spec(), table="predict",
                                  check_images="exists", require_target=False, training=False)
        device = self._device()
        options = loader_options(device, self.num_workers)
        options["persistent_workers"] = False  # one pass
        for batch in DataLoader(MultimodalDataset(clean, self.pre_, with_target=False),
                                batch_size=self.batch_size, **options):
            yield to_device(batch, device)

    def _device(self) -> torch.device:
        """Where prediction runs: CUDA where there is one (``accelerator="cpu"``: the CPU;
        a model trained on a GPU still predicts on a machine without one); the network is
        moved there."""
        from medfuse.perf import resolve_device

        device = resolve_device("cpu" if self.accelerator == "cpu" else "auto")
        if next(self.model_.parameters()).device != device:
            self.model_.to(device)
        return device

    def _raw_proba(self, df: pd.DataFrame) -> np.ndarray:
        """Uncalibrated class probabilities (softmax of the network's logits)."""
        from medfuse.perf import autocast, resolve_precision

        out = []
        self.model_.eval()
        device = self._device()
        mixed = device.type != "cpu" and resolve_precision(
            self.precision, self.accelerator) != "32-true"
        with torch.inference_mode(), autocast(device, mixed):
            for batch in self._batches(df):
                out.append(view_averaged_proba(self.model_, batch, self.tta).float().cpu())
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
                out.append(self.model_.gates(batch).float().cpu())
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
        existing = [p.name for p in run.iterdir()
                    if p.is_file() and p.name not in (MANIFEST, REPORT_FILE)]
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
        image = image_encoder(clf, "none") if clf.spec.image else None
        model = build_network(clf, clf.pre_, image)
        load_model(model, str(run / MODEL_FILE), strict=True)
        clf.model_ = model.eval()
        clf.classes_ = list(meta["classes"])
        clf.train_seconds_ = float(meta["train_seconds"])
        clf.epochs_ = int(meta["epochs"])
        clf.set_decision_state(meta.get("decision", {}))
        return clf
