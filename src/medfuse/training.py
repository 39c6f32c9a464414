"""Training on Lightning: the module (loss, optimiser, LR schedule) and the Trainer factory.

Class-weighted cross-entropy (weights from the training labels), AdamW or SGD
with momentum, ReduceLROnPlateau and early stopping on the validation loss,
best-checkpoint restore, a progress bar and CSV logs. ``devices``,
``strategy`` and ``num_nodes`` go to Lightning untouched, so the same config
runs DDP on many GPUs.
"""

from __future__ import annotations

import logging
import math
import warnings
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning import LightningModule, Trainer
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.loggers import CSVLogger
from torch import nn

from medfuse.evaluation.metrics import classification_metrics

log = logging.getLogger(__name__)


def class_weights(targets: np.ndarray, n_classes: int) -> torch.Tensor:
    """Inverse-frequency weights ``n / (k * count)`` (sklearn's "balanced")."""
    counts = np.bincount(targets, minlength=n_classes).astype(float)
    counts[counts == 0] = 1.0
    return torch.tensor(len(targets) / (n_classes * counts), dtype=torch.float32)


def warmup_cosine(step: int, warmup: int, total: int) -> float:
    """LR factor: linear warm-up over ``warmup`` steps, then cosine decay to 0 at ``total``.

    >>> [round(warmup_cosine(s, 2, 10), 2) for s in (0, 1, 2, 6, 10)]
    [0.33, 0.67, 1.0, 0.5, 0.0]
    """
    if step < warmup:
        return (step + 1) / (warmup + 1)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))


class FusionModule(LightningModule):
    """Wraps a :class:`~medfuse.fusion.FusionModel` for Lightning."""

    def __init__(
        self,
        model: nn.Module,
        weights: torch.Tensor,
        optimizer: str = "adamw",
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        momentum: float = 0.9,
        patience: int = 3,
        encoder_lr: float | None = None,
        pretrained: tuple[nn.Module, ...] = (),
        scheduler: str = "plateau",
        warmup: float = 0.05,
    ) -> None:
        super().__init__()
        self.model = model
        self.encoder_lr = encoder_lr
        self.pretrained = pretrained
        self.loss = nn.CrossEntropyLoss(weight=weights)
        self.optimizer_name = optimizer
        self.lr, self.weight_decay, self.momentum = lr, weight_decay, momentum
        self.patience = patience
        self.scheduler, self.warmup = scheduler, warmup
        self._val: list[tuple[torch.Tensor, torch.Tensor]] = []

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.model(batch)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self.loss(self(batch), batch["target"])
        self.log("train_loss", loss, on_step=False, on_epoch=True, prog_bar=True,
                 batch_size=len(batch["target"]))
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        logits = self(batch)
        self.log("val_loss", self.loss(logits, batch["target"]), on_epoch=True, prog_bar=True,
                 batch_size=len(batch["target"]))
        self._val.append((torch.softmax(logits.float(), 1).cpu(), batch["target"].cpu()))

    def on_validation_epoch_end(self) -> None:
        if not self._val:
            return
        proba = torch.cat([p for p, _ in self._val]).numpy()
        target = torch.cat([t for _, t in self._val]).numpy()
        self._val.clear()
        m = classification_metrics(target, proba)
        self.log("val_acc", m["accuracy"], prog_bar=True)
        if m["roc_auc"] is not None:
            self.log("val_auc", m["roc_auc"], prog_bar=True)

    def configure_optimizers(self) -> Any:
        slow = {id(p) for m in self.pretrained for p in m.parameters()}
        trainable = [p for p in self.parameters() if p.requires_grad]
        groups: list[dict[str, Any]] = [
            {"params": [p for p in trainable if id(p) not in slow], "lr": self.lr}
        ]
        pretrained = [p for p in trainable if id(p) in slow]
        if pretrained:
            groups.append({"params": pretrained, "lr": self.encoder_lr or self.lr})
        opt: torch.optim.Optimizer
        if self.optimizer_name == "sgd":
            opt = torch.optim.SGD(groups, lr=self.lr, momentum=self.momentum,
                                  weight_decay=self.weight_decay, nesterov=True)
        else:
            opt = torch.optim.AdamW(groups, lr=self.lr, weight_decay=self.weight_decay)
        if self.scheduler == "plateau":
            sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
                opt, mode="min", factor=0.3, patience=max(1, self.patience // 2)
            )
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "monitor": "val_loss"}}
        total = max(1, int(self.trainer.estimated_stepping_batches))
        step_sched: torch.optim.lr_scheduler.LRScheduler
        if self.scheduler == "onecycle":
            step_sched = torch.optim.lr_scheduler.OneCycleLR(
                opt, max_lr=[g["lr"] for g in groups], total_steps=total,
                pct_start=max(self.warmup, 1.0 / total),
            )
        else:
            step_sched = torch.optim.lr_scheduler.LambdaLR(
                opt, partial(warmup_cosine, warmup=int(self.warmup * total), total=total)
            )
        return {"optimizer": opt, "lr_scheduler": {"scheduler": step_sched, "interval": "step"}}


def make_trainer(
    run_dir: Path,
    max_epochs: int,
    patience: int,
    accelerator: str = "auto",
    devices: int | str | list[int] = "auto",
    strategy: str = "auto",
    num_nodes: int = 1,
    precision: str = "32-true",
    progress: bool = True,
) -> tuple[Trainer, ModelCheckpoint]:
    """A Trainer writing ``run_dir/logs`` (CSV) and ``run_dir/checkpoints`` (best + last)."""
    checkpoint = ModelCheckpoint(
        dirpath=run_dir / "checkpoints", filename="best", monitor="val_loss", mode="min",
        save_top_k=1, save_last=True,
    )
    callbacks: list[Any] = [
        checkpoint,
        EarlyStopping(monitor="val_loss", mode="min", patience=patience),
    ]
    if progress:
        callbacks.append(TQDMProgressBar(refresh_rate=10))
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*srun.*")
    warnings.filterwarnings("ignore", r".*isinstance\(treespec, LeafSpec\).*")
    warnings.filterwarnings("ignore", r".*module\(s\) in eval mode.*")
    logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)
    trainer = Trainer(
        default_root_dir=run_dir,
        max_epochs=max_epochs,
        accelerator=accelerator,
        devices=devices,
        strategy=strategy,
        num_nodes=num_nodes,
        precision=precision,  # type: ignore[arg-type]
        deterministic=True,
        callbacks=callbacks,
        logger=CSVLogger(save_dir=run_dir, name="logs", version=""),
        enable_progress_bar=progress,
        enable_model_summary=False,
        log_every_n_steps=1,
    )
    return trainer, checkpoint
