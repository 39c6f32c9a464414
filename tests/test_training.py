from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import Callback
from torch import nn

from medfuse.config import DataSpec
from medfuse.data import load_table
from medfuse.encoders.tabular import TabularEncoder
from medfuse.errors import ConfigError
from medfuse.estimators import FusionClassifier
from medfuse.fusion import FusionModel, output_dim
from medfuse.training import FusionModule, class_weights


def test_class_weights_balanced() -> None:
    w = class_weights(np.array([0, 0, 0, 1]), 2)
    assert w.tolist() == pytest.approx([4 / (2 * 3), 4 / (2 * 1)])
    assert class_weights(np.array([0, 0]), 2)[1] == pytest.approx(1.0)  # absent class: no inf


def _model() -> FusionModel:
    return FusionModel({"tabular": TabularEncoder([3], 2, (4,))}, n_classes=2, hidden_dims=(4,))


def test_pretrained_encoders_get_their_own_learning_rate() -> None:
    model = _model()
    module = FusionModule(model, torch.ones(2), lr=1e-3, encoder_lr=1e-5,
                          pretrained=(model.encoders["tabular"],))
    opt = module.configure_optimizers()["optimizer"]
    lrs = sorted(g["lr"] for g in opt.param_groups)
    assert lrs == [1e-5, 1e-3]
    n_enc = sum(p.numel() for p in model.encoders["tabular"].parameters())
    slow = next(g for g in opt.param_groups if g["lr"] == 1e-5)
    assert sum(p.numel() for p in slow["params"]) == n_enc


@pytest.mark.parametrize("scheduler", ["cosine", "onecycle"])
def test_step_schedulers_warm_up_then_decay_every_group(scheduler: str) -> None:
    model = _model()
    module = FusionModule(model, torch.ones(2), lr=1e-2, encoder_lr=1e-3, scheduler=scheduler,
                          warmup=0.1, pretrained=(model.encoders["tabular"],))
    module.trainer = type("T", (), {"estimated_stepping_batches": 100})()  # type: ignore[assignment]
    conf = module.configure_optimizers()
    opt, sched = conf["optimizer"], conf["lr_scheduler"]["scheduler"]
    assert conf["lr_scheduler"]["interval"] == "step"
    history = []
    for _ in range(100):
        history.append([g["lr"] for g in opt.param_groups])
        opt.step()
        sched.step()
    lrs = np.array(history)
    peak = lrs.argmax(axis=0)
    assert (peak >= 5).all() and (peak <= 15).all()  # warm-up of ~10% of the steps
    assert lrs.max(axis=0) == pytest.approx([1e-2, 1e-3], rel=1e-3)  # each group its own peak
    assert (lrs[-1] < 0.01 * lrs.max(axis=0)).all()  # decays to ~0 by the last step


def test_sgd_and_single_group() -> None:
    module = FusionModule(_model(), torch.ones(2), optimizer="sgd", lr=0.1)
    conf = module.configure_optimizers()
    assert isinstance(conf["optimizer"], torch.optim.SGD)
    assert len(conf["optimizer"].param_groups) == 1
    # ReduceLROnPlateau is stepped by the module after validation (so it is in the
    # checkpoint written then), not by Lightning
    assert "lr_scheduler" not in conf
    assert isinstance(module.plateau, torch.optim.lr_scheduler.ReduceLROnPlateau)
    assert module.plateau.optimizer is conf["optimizer"]


@pytest.mark.parametrize("fusion", ["concat", "gated", "late"])
def test_every_fusion_trains_every_encoder(fusion: str) -> None:
    from medfuse.encoders.image import ImageEncoder
    from medfuse.encoders.text import WordCNNEncoder

    encoders = {
        "image": ImageEncoder("small_cnn", pretrained="none", image_size=16),
        "tabular": TabularEncoder([3], 2, (4,)),
        # 8 channels: with 3, about 1 seed in 200 starts with every text ReLU dead (no gradient)
        "text": WordCNNEncoder(vocab_size=9, embed_dim=4, kernel_sizes=(2,), channels=8),
    }
    model = FusionModel(encoders, n_classes=3, hidden_dims=(8,), fusion=fusion)
    batch = {
        "image": torch.randn(4, 3, 16, 16),
        "tabular_cat": torch.tensor([[0], [1], [2], [1]]),
        "tabular_cont": torch.randn(4, 2),
        "text": torch.tensor([[3, 4, 0], [5, 0, 0], [8, 7, 6], [0, 0, 0]]),
    }
    logits = model(batch)
    assert logits.shape == (4, 3)
    logits.sum().backward()
    for name, enc in model.encoders.items():
        grads = [p.grad for p in enc.parameters() if p.requires_grad]
        assert any(g is not None and g.abs().sum() > 0 for g in grads), name


def test_output_dim_contract() -> None:
    with pytest.raises(TypeError, match="output_dim"):
        output_dim(nn.Linear(2, 2))


@pytest.mark.parametrize("monitor", ["val_loss", "val_acc", "val_auc", "last"])
def test_monitor_picks_the_weights_kept(
    monitor: str, tiny_dir: Any, tmp_path: Any, add_callbacks: Any
) -> None:
    """The fitted weights are those of the epoch the monitored score ranks best (``last``:
    the final epoch, every epoch run even though patience=1 would have stopped it)."""
    scores: list[float] = []
    snapshots: list[dict[str, torch.Tensor]] = []

    class Spy(Callback):  # after each epoch's validation, before the next epoch trains
        def on_validation_end(self, trainer: Any, module: Any) -> None:
            if trainer.sanity_checking:
                return
            key = "val_loss" if monitor == "last" else monitor
            scores.append(float(trainer.callback_metrics[key]))
            snapshots.append({k: v.clone() for k, v in module.model.state_dict().items()})

    add_callbacks(Spy())
    spec = DataSpec(tabular={"age": "continuous"}, text="note", target="label",
                    group="patient")
    df, _ = load_table(tiny_dir / "data.csv", spec)
    clf = FusionClassifier(spec, max_epochs=5, lr=3e-2, patience=1 if monitor == "last" else 10,
                           monitor=monitor, embed_dim=8, hidden_dims=(4,), batch_size=4,
                           progress=False)
    clf.fit(df.iloc[:17], df.iloc[17:], run_dir=tmp_path)
    assert len(scores) == 5  # no early stop within 5 epochs
    if monitor == "last":
        assert len(set(scores)) > 1  # the weights moved, so "last" differs from "best"
        chosen = 4
        assert not (tmp_path / "checkpoints" / "best.ckpt").exists()
    else:
        order = np.array(scores) if monitor == "val_loss" else -np.array(scores)
        chosen = int(np.argmin(order))  # the first epoch reaching the best score
    kept = clf.model_.state_dict()
    for k, v in snapshots[chosen].items():
        assert torch.equal(kept[k], v), (k, chosen, scores)
    others = [i for i, s in enumerate(snapshots) if i != chosen]
    assert any(not torch.equal(kept[k], snapshots[i][k]) for i in others for k in kept)


def test_monitor_val_auc_needs_both_classes_in_validation(tiny_dir: Any) -> None:

    spec = DataSpec(tabular={"age": "continuous"}, target="label", group="patient")
    df, _ = load_table(tiny_dir / "data.csv", spec)
    one_class = df[df["label"] == "benign"].iloc[-3:]
    with pytest.raises(ConfigError, match="monitor='val_auc' needs both classes"):
        FusionClassifier(spec, max_epochs=1, monitor="val_auc", progress=False).fit(
            df.iloc[:17], one_class)
    with pytest.raises(ConfigError, match="monitor"):
        FusionClassifier(spec, monitor="val_f1").fit(df.iloc[:17], df.iloc[17:])


def test_ema_fits_the_warmed_up_average_of_every_step(
    tiny_dir: Any, tmp_path: Any, add_callbacks: Any
) -> None:
    """``ema``: the fitted weights (parameters and batch-norm statistics) are the warmed-up
    exponential average of the weights after every optimiser step, not the last step's."""
    steps: list[dict[str, torch.Tensor]] = []

    class Spy(Callback):
        def on_train_batch_end(self, trainer: Any, module: Any, *args: Any) -> None:
            steps.append({k: v.detach().clone() for k, v in module.model.state_dict().items()})

    add_callbacks(Spy())
    spec = DataSpec(tabular={"age": "continuous", "sex": "categorical"}, target="label",
                    group="patient")
    df, _ = load_table(tiny_dir / "data.csv", spec)
    clf = FusionClassifier(spec, max_epochs=3, lr=3e-2, monitor="last", ema=0.5,
                           hidden_dims=(4,), batch_size=4, progress=False)
    clf.fit(df.iloc[:17], df.iloc[17:], run_dir=tmp_path)
    assert len(steps) == 3 * 4  # 17 rows, batches of 4, the last partial one dropped
    expected = {k: v.double() for k, v in steps[0].items()}
    for n, weights in enumerate(steps[1:], start=1):
        d = min(0.5, (1 + n) / (10 + n))
        expected = {k: d * expected[k] + (1 - d) * weights[k].double() for k in expected}
    kept = clf.model_.state_dict()
    for k, v in kept.items():
        if v.is_floating_point():
            torch.testing.assert_close(v.double(), expected[k], rtol=1e-5, atol=1e-6)
    assert any(not torch.equal(kept[k], steps[-1][k]) for k in kept)  # not the raw weights
