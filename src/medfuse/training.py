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
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning import LightningModule, Trainer
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.loggers import CSVLogger
from torch import nn
from torch.utils.data import Sampler

from medfuse.fusion import logits_to_proba
from medfuse.losses import make_loss
from medfuse.scoring.metrics import classification_metrics, multilabel_metrics

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
        loss: str = "ce",
        focal_gamma: float = 2.0,
    ) -> None:
        super().__init__()
        self.model = model
        self.encoder_lr = encoder_lr
        self.pretrained = pretrained
        self.multilabel = bool(getattr(model, "multilabel", False))
        self.loss = make_loss(loss, weights, focal_gamma, multilabel=self.multilabel)
        self.optimizer_name = optimizer
        self.lr, self.weight_decay, self.momentum = lr, weight_decay, momentum
        self.patience = patience
        self.scheduler, self.warmup = scheduler, warmup
        self._val: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._val_loss: list[tuple[float, int]] = []
        # ReduceLROnPlateau is stepped here, at the end of validation, so the epoch's step
        # is in the checkpoint written right after (Lightning would step it later, at the
        # epoch's end, and skip that step when resuming from that checkpoint)
        self.plateau: torch.optim.lr_scheduler.ReduceLROnPlateau | None = None
        self._plateau_state: dict[str, Any] | None = None

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.model(batch)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        forward_train = getattr(self.model, "forward_train", None)
        extra = {"sample_weight": batch["sample_weight"]} if "sample_weight" in batch else {}
        if forward_train is None:
            loss = self.loss(self(batch), batch["target"], **extra)
        else:
            logits, aux, _ = forward_train(batch)
            loss = self.loss(logits, batch["target"], **extra)
            if aux:
                weight = float(getattr(self.model, "aux_loss", 0.0))
                loss = loss + weight * self._aux_loss(aux, batch)
        self.log("train_loss", loss, on_step=False, on_epoch=True, prog_bar=True,
                 batch_size=len(batch["target"]), sync_dist=True)
        return loss

    def _aux_loss(self, aux: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]
                  ) -> torch.Tensor:
        """Mean over modalities of each auxiliary head's loss on the rows that have it."""
        from medfuse.fusion import PRESENT

        target = batch["target"]
        present = batch.get(PRESENT) if getattr(self.model, "missing", False) else None
        parts = []
        for i, logits in enumerate(aux.values()):
            rows = None if present is None else present[:, i] > 0
            weight = batch.get("sample_weight")
            if rows is None:
                parts.append(self.loss(logits, target, **(
                    {} if weight is None else {"sample_weight": weight})))
            elif bool(rows.any()):
                parts.append(self.loss(logits[rows], target[rows], **(
                    {} if weight is None else {"sample_weight": weight[rows]})))
            else:  # no row has it: no loss, but the head stays in the graph (DDP)
                parts.append(logits.sum() * 0.0)
        return torch.stack(parts).mean()

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        logits = self(batch)
        loss = self.loss(logits, batch["target"])
        self.log("val_loss", loss, on_epoch=True, prog_bar=True, batch_size=len(batch["target"]),
                 sync_dist=True)  # one value in every DDP process (early stopping, checkpoints)
        self._val_loss.append((float(loss) * len(batch["target"]), len(batch["target"])))
        self._val.append((logits_to_proba(self.model, logits).cpu(), batch["target"].cpu()))

    def on_validation_epoch_end(self) -> None:
        distributed = self.trainer.world_size > 1
        if self._val_loss:
            total = torch.tensor([sum(s for s, _ in self._val_loss),
                                  float(sum(n for _, n in self._val_loss))], dtype=torch.float64)
            self._val_loss.clear()
            if distributed:  # every process steps its scheduler with the same loss
                total = self.trainer.strategy.reduce(total, reduce_op="sum")
            val_loss = float(total[0] / total[1].clamp_min(1))
            if self.plateau is not None and not self.trainer.sanity_checking:
                self.plateau.step(val_loss)
        if not self._val or self.trainer.sanity_checking:
            # Lightning's sanity check runs two batches, often one class: no scores from it
            self._val.clear()
            return
        proba_t = torch.cat([p for p, _ in self._val])
        target_t = torch.cat([t for _, t in self._val])
        self._val.clear()
        if distributed:  # the validation rows are spread over the processes (padded equally)
            proba_t, target_t = (_gather(t) for t in (proba_t, target_t))
        proba, target = proba_t.numpy(), target_t.numpy()
        m = (multilabel_metrics(target, proba) if self.multilabel
             else classification_metrics(target, proba))
        # the same values in every process (gathered): sync_dist only quiets Lightning's warning
        self.log("val_acc", m["accuracy"], prog_bar=True, sync_dist=distributed)
        if m["roc_auc"] is not None:
            self.log("val_auc", m["roc_auc"], prog_bar=True, sync_dist=distributed)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.plateau is not None:
            checkpoint["plateau_scheduler"] = self.plateau.state_dict()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("plateau_scheduler")
        if state is not None and self.plateau is not None:
            self.plateau.load_state_dict(state)
        else:  # optimisers are usually configured after the checkpoint is read
            self._plateau_state = state

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
            self.plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
                opt, mode="min", factor=0.3, patience=max(1, self.patience // 2)
            )
            if self._plateau_state is not None:
                self.plateau.load_state_dict(self._plateau_state)
                self._plateau_state = None
            return {"optimizer": opt}  # stepped in on_validation_epoch_end
        total = max(1, int(self.trainer.estimated_stepping_batches))
        step_sched: torch.optim.lr_scheduler.LRScheduler
        if self.scheduler == "onecycle":
            # each of its two phases needs a step or more: 3 steps at least (a schedule longer
            # than the run is harmless; a shorter one raises)
            cycle = max(3, total)
            step_sched = torch.optim.lr_scheduler.OneCycleLR(
                opt, max_lr=[g["lr"] for g in groups], total_steps=cycle,
                pct_start=min(0.5, max(self.warmup, 1.5 / cycle)),
            )
        else:
            step_sched = torch.optim.lr_scheduler.LambdaLR(
                opt, partial(warmup_cosine, warmup=int(self.warmup * total), total=total)
            )
        return {"optimizer": opt, "lr_scheduler": {"scheduler": step_sched, "interval": "step"}}


def _gather(t: torch.Tensor) -> torch.Tensor:
    """``t`` of every DDP process (same shape in each), concatenated along dim 0."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return t
    parts = [torch.empty_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, t.contiguous())
    return torch.cat(parts)


def epoch_seed(seed: int, *keys: int) -> int:
    """A 32-bit seed derived from ``(seed, *keys)``, the same in every process and run.

    >>> epoch_seed(0, 1) == epoch_seed(0, 1) != epoch_seed(0, 2)
    True
    """
    entropy = [int(seed) & 0xFFFFFFFF, *(int(k) for k in keys)]
    return int(np.random.SeedSequence(entropy).generate_state(1)[0])


class EpochSampler(Sampler[tuple[int, int]]):
    """Shuffled ``(row, sample_seed)`` pairs drawn from ``(seed, epoch)`` only.

    The order and each row's augmentation seed (see
    :class:`~medfuse.data.dataset.MultimodalDataset`) depend on the epoch number, never
    on generator state left by earlier epochs or by Lightning's prefetching, so epoch
    ``k`` yields the same batches in an uninterrupted run and in one resumed at ``k``.
    Lightning calls :meth:`set_epoch`; :class:`EpochSeed` sets it on resume.

    With ``weights`` (one per row), each epoch draws ``n`` rows with replacement,
    row ``i`` with probability proportional to ``weights[i]`` (see
    :func:`balanced_weights`), from the same ``(seed, epoch)`` generator.

    >>> s = EpochSampler(4, seed=0)
    >>> first = list(s); s.set_epoch(1); second = list(s); s.set_epoch(0)
    >>> list(s) == first != second and sorted(i for i, _ in first) == [0, 1, 2, 3]
    True
    """

    def __init__(self, n: int, seed: int, shuffle: bool = True,
                 weights: np.ndarray | None = None) -> None:
        self.n, self.seed, self.shuffle = n, seed, shuffle
        self.p = None if weights is None else np.asarray(weights, float) / np.sum(weights)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[tuple[int, int]]:
        rng = np.random.default_rng(epoch_seed(self.seed, self.epoch))
        if self.p is not None:
            order = rng.choice(self.n, size=self.n, replace=True, p=self.p)
        else:
            order = rng.permutation(self.n) if self.shuffle else np.arange(self.n)
        seeds = rng.integers(0, 2**31 - 1, size=self.n)
        return iter([(int(i), int(s)) for i, s in zip(order, seeds, strict=True)])


def balanced_weights(targets: np.ndarray) -> np.ndarray:
    """Row weights ``1 / count(class of the row)``: every class is drawn equally often.

    >>> balanced_weights(np.array([0, 0, 0, 1])).tolist()
    [0.3333333333333333, 0.3333333333333333, 0.3333333333333333, 1.0]
    """
    counts = np.bincount(targets)
    return 1.0 / counts[targets]


class EpochSeed(Callback):
    """Re-seed the global generators at each training epoch's start from ``(seed, epoch)``.

    Dropout (and anything else drawing from torch / numpy / ``random`` during the
    training steps) then depends on the epoch number only, and ``samplers``
    (:class:`EpochSampler`) are moved to the epoch a resumed run starts at before
    Lightning prefetches its first batch: a run resumed from ``last.ckpt`` trains its
    remaining epochs exactly as the uninterrupted run does.
    """

    def __init__(self, seed: int, samplers: Sequence[EpochSampler] = ()) -> None:
        self.seed = seed
        self.samplers = list(samplers)

    def on_load_checkpoint(
        self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        # our checkpoints are written once an epoch's training batches are done
        for sampler in self.samplers:
            sampler.set_epoch(int(checkpoint.get("epoch", -1)) + 1)

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        import random

        epoch = trainer.current_epoch
        seed = epoch_seed(self.seed, epoch)
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)  # also seeds CUDA / MPS devices
        for sampler in self.samplers:
            sampler.set_epoch(epoch)


def ema_update(decay: float) -> Callable[[torch.Tensor, torch.Tensor, Any], torch.Tensor]:
    """``AveragedModel``'s ``avg_fn`` for an EMA of decay ``decay``, warmed up as timm's.

    Update ``n`` (the first is a plain copy) moves the average by ``1 - d`` towards the
    current weights, ``d = min(decay, (1 + n) / (10 + n))``: early averages follow the
    weights closely instead of holding on to the pretrained start for hundreds of steps.
    """

    def update(average: torch.Tensor, current: torch.Tensor, n: Any) -> torch.Tensor:
        d = min(decay, (1 + int(n)) / (10 + int(n)))
        return d * average + (1 - d) * current

    return update


def ema_callback(decay: float) -> Callback:
    """Lightning's weight averaging with :func:`ema_update`: validation, checkpoints and the
    weights left after ``fit`` are the average (parameters and batch-norm statistics)."""
    from lightning.pytorch.callbacks import WeightAveraging

    return WeightAveraging(avg_fn=ema_update(decay))


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
    callbacks: Sequence[Callback] = (),
    monitor: str = "val_loss",
) -> tuple[Trainer, ModelCheckpoint | None]:
    """A Trainer writing ``run_dir/logs`` (CSV) and ``run_dir/checkpoints`` (best + last).

    ``monitor`` (``val_loss``, lowest; ``val_auc`` / ``val_acc``, highest) picks
    ``best.ckpt`` and stops training after ``patience`` epochs without improving;
    ``"last"`` runs every epoch and returns no best checkpoint (the final weights stand).
    ``last.ckpt`` is written after every epoch (model, optimiser, scheduler, early
    stopping and checkpoint state), so ``ckpt_path=last.ckpt`` resumes where a killed run
    stopped; ``callbacks`` are added (e.g. :class:`EpochSeed`, which makes the resumed
    epochs identical to those of an uninterrupted run).
    """
    # Lightning's save_last only writes last.ckpt on epochs that improve the monitored
    # metric; this unmonitored checkpoint writes it after every epoch's validation
    last = ModelCheckpoint(
        dirpath=run_dir / "checkpoints", filename="last", save_top_k=1, every_n_epochs=1,
        enable_version_counter=False,
    )
    checkpoint, every = None, [last, *callbacks]
    if monitor != "last":  # a best checkpoint and early stopping, both on the monitored score
        mode = "min" if monitor == "val_loss" else "max"
        checkpoint = ModelCheckpoint(
            dirpath=run_dir / "checkpoints", filename="best", monitor=monitor, mode=mode,
            save_top_k=1,
        )
        every += [checkpoint, EarlyStopping(monitor=monitor, mode=mode, patience=patience)]
    if progress:
        every.append(TQDMProgressBar(refresh_rate=10))
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
        callbacks=every,
        logger=CSVLogger(save_dir=run_dir, name="logs", version=""),
        enable_progress_bar=progress,
        enable_model_summary=False,
        log_every_n_steps=1,
    )
    # deterministic=True also makes torch fill every new tensor with NaN (a guard against
    # kernels reading uninitialised memory): ~13 % of a CPU training step, and nothing
    # medfuse runs reads memory it did not write, so results stay bit-identical without it
    torch.utils.deterministic.fill_uninitialized_memory = False  # type: ignore[attr-defined]
    return trainer, checkpoint
