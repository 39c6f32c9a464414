"""Freeze the backbone, train the head, then unfreeze it (all at once or gradually)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch

from medfuse.config import DataSpec
from medfuse.encoders.image import ImageEncoder
from medfuse.errors import ConfigError
from medfuse.finetuning import BackboneFinetuning, backbone_stages
from medfuse.fusion import FusionModel
from medfuse.training import FusionModule


def _trainable(stage: list[torch.nn.Parameter]) -> bool:
    flags = {p.requires_grad for p in stage}
    assert len(flags) == 1, "a stage is frozen or trainable as a whole"
    return flags.pop()


def test_stages_follow_the_network_from_input_to_output() -> None:
    r18 = ImageEncoder("resnet18", pretrained="none").backbone
    stages = backbone_stages(r18)
    assert len(stages) == 5  # stem, layer1..4
    assert stages[0][0] is r18.conv1.weight and stages[-1][0] is r18.layer4[0].conv1.weight
    n = sum(len(s) for s in stages)
    assert n == len(list(r18.parameters()))
    cnn = ImageEncoder("small_cnn", pretrained="none").backbone
    assert len(backbone_stages(cnn)) == 4  # one per conv block


@pytest.mark.parametrize("unfreeze", ["all", "gradual"])
def test_callback_freezes_then_unfreezes_from_the_top(unfreeze: str) -> None:
    enc = ImageEncoder("resnet18", pretrained="none").train()
    cb = BackboneFinetuning(enc.backbone, freeze_epochs=2, unfreeze=unfreeze)
    for epoch in range(8):
        cb.apply(epoch)
        flags = [_trainable(s) for s in cb.stages]
        k = cb.trainable_stages(epoch)
        assert flags == [False] * (5 - k) + [True] * k  # the top k stages train
        if epoch < 2:
            assert k == 0 and not enc.backbone.bn1.training
            assert not enc.backbone.layer4[1].bn2.training
        else:
            assert k == (5 if unfreeze == "all" else min(5, epoch - 1))
            assert enc.backbone.layer4[1].bn2.training  # top stage: BatchNorm learns again
            assert enc.backbone.bn1.training == (k == 5)


def test_backbone_group_is_in_the_optimizer_at_encoder_lr_from_the_start() -> None:
    enc = ImageEncoder("resnet18", pretrained="none")
    model = FusionModel({"image": enc}, n_classes=2, hidden_dims=(4,))
    module = FusionModule(model, torch.ones(2), lr=1e-3, encoder_lr=1e-5, pretrained=(enc,),
                          scheduler="plateau")
    opt = module.configure_optimizers()["optimizer"]
    BackboneFinetuning(enc.backbone, freeze_epochs=1).apply(0)  # frozen after configuring
    slow = next(g for g in opt.param_groups if g["lr"] == 1e-5)
    assert {id(p) for p in slow["params"]} == {id(p) for p in enc.backbone.parameters()}
    assert not any(p.requires_grad for p in slow["params"])


def _fit(tiny_dir: Path, tmp_path: Path, add_callbacks: Any,
         **params: Any) -> list[dict[str, Any]]:
    """Fit on the tiny fixture; per-epoch snapshots of the backbone taken by a spy callback."""
    from lightning.pytorch.callbacks import Callback

    from medfuse.data import load_table
    from medfuse.estimators import FusionClassifier

    seen: list[dict[str, Any]] = []

    class Spy(Callback):
        def on_train_epoch_start(self, trainer: Any, module: Any) -> None:
            enc = module.model.encoders["image"]
            seen.append({
                "trainable": [_trainable(s) for s in backbone_stages(enc.backbone)],
                "weights": {k: v.clone() for k, v in enc.backbone.state_dict().items()},
                "lrs": sorted(g["lr"] for g in trainer.optimizers[0].param_groups),
            })

    add_callbacks(Spy())
    spec = DataSpec(image="image", tabular={"age": "continuous"}, target="label",
                    group="patient")
    df, _ = load_table(tiny_dir / "data.csv", spec)
    clf = FusionClassifier(spec, image_backbone="tf_efficientnet_lite0", pretrained="builtin",
                           image_size=32, hidden_dims=(8,), batch_size=8, patience=10,
                           lr=1e-2, encoder_lr=1e-3, scheduler="plateau", progress=False,
                           **params)
    clf.fit(df.iloc[:18], df.iloc[18:], run_dir=tmp_path)
    return seen


def test_fit_trains_the_head_first_then_the_backbone_gradually(
    tiny_dir: Path, tmp_path: Path, add_callbacks: Any
) -> None:
    seen = _fit(tiny_dir, tmp_path, add_callbacks, freeze_epochs=1, unfreeze="gradual",
                max_epochs=3)
    assert [s["trainable"][-2:] for s in seen] == [[False, False], [False, True], [True, True]]
    assert not any(seen[2]["trainable"][:-2])  # the stem and lower stages stay frozen
    assert seen[0]["lrs"] == [1e-3, 1e-2]  # backbone group at encoder_lr, head at lr

    def changed(a: int, b: int, prefix: str) -> bool:
        return any(not torch.equal(seen[a]["weights"][k], seen[b]["weights"][k])
                   for k in seen[a]["weights"] if k.startswith(prefix))

    assert not changed(0, 1, "")  # frozen epoch: weights and BatchNorm statistics untouched
    assert changed(1, 2, "blocks.6.") and changed(1, 2, "conv_head.")
    assert not changed(1, 2, "blocks.5.") and not changed(1, 2, "conv_stem.")


def test_freeze_parameters_are_validated(tiny_df: pd.DataFrame) -> None:
    from medfuse.estimators import FusionClassifier

    spec = DataSpec(image="image", target="label")
    with pytest.raises(ConfigError, match="freeze_image=True keeps it frozen"):
        FusionClassifier(spec, freeze_epochs=2, freeze_image=True).fit(tiny_df)
    with pytest.raises(ConfigError, match=r"'unfreeze'.*'all', 'gradual'"):
        FusionClassifier(spec, freeze_epochs=2, unfreeze="slowly").fit(tiny_df)
    with pytest.raises(ConfigError, match="no image column"):
        FusionClassifier(DataSpec(tabular={"age": "continuous"}, target="label"),
                         freeze_epochs=1).fit(tiny_df)
