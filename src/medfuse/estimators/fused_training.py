"""The Lightning run of a fused model's fit: loaders, callbacks, trainer, best weights.

:func:`train_network` trains a :class:`~medfuse.training.FusionModule` on prepared tables
(the estimator has built the network and fitted the preprocessor), resumes from
``run_dir/checkpoints/last.ckpt`` if asked, keeps the training log whole across a resume
and loads the best checkpoint's weights (``monitor``) back into the module.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, NamedTuple

import pandas as pd
import torch
from torch.utils.data import DataLoader

from medfuse.data.dataset import SAMPLE_WEIGHT, MultimodalDataset
from medfuse.data.preprocess import Preprocessor
from medfuse.distributed import is_primary
from medfuse.errors import ConfigError
from medfuse.estimators.fused_params import FusionParams
from medfuse.estimators.training_log import logged_epochs, prepend_log_rows

__all__ = ["TrainingRun", "train_network"]


class TrainingRun(NamedTuple):
    """What a fit's Lightning run reports back: the seconds ``trainer.fit`` took, whether
    this is the process that writes files (the only one without DDP) and Lightning's
    ``current_epoch`` at the end."""

    seconds: float
    primary: bool
    epochs: int


def train_network(
    params: FusionParams, module: Any, pre: Preprocessor, train: pd.DataFrame,
    valid: pd.DataFrame, run_dir: Path, resume: bool,
) -> TrainingRun:
    """Run Lightning on ``module``; keep the best checkpoint's weights (``monitor``) or,
    with ``monitor="last"``, the final ones.

    ``params`` are the estimator's: batch size, sampler, callbacks, trainer settings.
    """
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
    if params.sampler == "balanced" and params.spec.multilabel:
        raise ConfigError("train.sampler=balanced balances classes of a single-label target; "
                          "a multi-label loss is already balanced per label (positives and "
                          "negatives weighted): use train.sampler=shuffle")
    if (params.monitor == "val_auc" and not params.spec.multilabel
            and valid[params.spec.target].nunique() < 2):
        raise ConfigError(
            f"monitor='val_auc' needs both classes among the validation rows, and all "
            f"{len(valid)} are '{valid[params.spec.target].iloc[0]}': monitor val_loss or "
            "val_acc instead, or give the validation split more rows (data.split.valid_size)."
        )
    from medfuse.perf import loader_options, resolve_device

    # workers from the CPU count, pinned memory for a GPU (Lightning moves the batches)
    try:
        device = resolve_device(params.accelerator)
    except ValueError as e:  # a GPU asked for where there is none
        raise ConfigError(str(e)) from None
    loader_kw: dict[str, Any] = dict(batch_size=params.batch_size,
                                     **loader_options(device, params.num_workers))
    from medfuse.perf import tune_malloc

    tune_malloc()  # +20 % per training step: activations reuse memory, no page faults
    # each training / validation image is decoded and resized once (8-bit, on disk)
    decoded = training_cache(pre.image) if params.spec.image else None
    weight = train[SAMPLE_WEIGHT].to_numpy() if SAMPLE_WEIGHT in train else None
    train_ds = MultimodalDataset(train, pre,
                                 augment=params.augment if params.spec.image else False,
                                 decoded=decoded, sample_weight=weight)
    # order, augmentation and dropout follow (seed, epoch): a resumed run repeats the
    # uninterrupted one exactly (see EpochSampler / EpochSeed)
    weights = None
    if params.sampler == "balanced":
        weights = balanced_weights(pre.encode_target(train).numpy())
    sampler = EpochSampler(len(train_ds), params.seed, weights=weights)
    callbacks: list[Any] = [EpochSeed(params.seed, [sampler])]
    if params.ema:
        callbacks.append(ema_callback(params.ema))
    strategy = params.strategy
    encoders = dict(getattr(module.model, "encoders", {}))  # an nn.ModuleDict
    image = encoders.get("image")
    if params.freeze_epochs and image is not None:
        from medfuse.finetuning import BackboneFinetuning

        callbacks.append(BackboneFinetuning(image.backbone, params.freeze_epochs,
                                            params.unfreeze))
        if strategy == "ddp":  # frozen parameters get no gradient for a while
            strategy = "ddp_find_unused_parameters_true"
    trainer, checkpoint = make_trainer(
        run_dir, params.max_epochs, params.patience, params.accelerator, params.devices,
        strategy, params.num_nodes, params.training_precision(), params.progress,
        callbacks=callbacks, monitor=params.monitor,
    )
    train_dl = DataLoader(train_ds, sampler=sampler,
                          drop_last=len(train_ds) > params.batch_size,
                          generator=torch.Generator().manual_seed(params.seed), **loader_kw)
    valid_dl = DataLoader(MultimodalDataset(valid, pre, decoded=decoded), **loader_kw)
    earlier = logged_epochs(run_dir, last) if resume and is_primary() else None
    t0 = time.perf_counter()
    trainer.fit(module, train_dl, valid_dl, ckpt_path=str(last) if resume else None)
    seconds = time.perf_counter() - t0
    # under DDP every process trains; only the first one writes files (run directory)
    primary = bool(trainer.is_global_zero)
    if earlier is not None and primary:
        prepend_log_rows(run_dir, earlier)
    if checkpoint is not None and checkpoint.best_model_path:
        state = torch.load(checkpoint.best_model_path, map_location="cpu", weights_only=True)
        module.load_state_dict(state["state_dict"])
    return TrainingRun(seconds, primary, int(trainer.current_epoch))
