"""Transfer-learning schedule: train the head on a frozen backbone, then unfreeze it.

:class:`BackboneFinetuning` freezes the image backbone for the first
``freeze_epochs`` epochs and then unfreezes it at once (``all``) or one stage per
epoch from the top (``gradual``, the ULMFiT / fastai recipe). Frozen stages get no
gradients (so no updates, no weight decay) and keep their BatchNorm statistics.

Unlike Lightning's ``BaseFinetuning``, which adds the unfrozen parameters to the
optimiser as new parameter groups, the backbone's parameters are in the optimiser
from the start, in their own group at ``encoder_lr``: the LR schedulers
(one-cycle, cosine, plateau) see every group from step 0, a checkpoint's optimiser
state always fits, and the frozen / trainable state is a function of the epoch
number only, so a resumed run is the uninterrupted one. Under DDP the frozen
parameters are "unused" for a while: use ``ddp_find_unused_parameters_true``
(medfuse switches ``ddp`` to it when ``freeze_epochs > 0``).

>>> import torch
>>> from torch import nn
>>> net = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2), nn.Linear(2, 2))
>>> cb = BackboneFinetuning(net, freeze_epochs=1, unfreeze="gradual")
>>> [cb.trainable_stages(e) for e in range(5)], len(cb.stages)
([0, 1, 2, 3, 3], 3)
"""

from __future__ import annotations

from lightning import LightningModule, Trainer
from lightning.pytorch.callbacks import Callback
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from medfuse.errors import check_option

UNFREEZE = ("all", "gradual")


def backbone_stages(backbone: nn.Module) -> list[list[nn.Parameter]]:
    """The backbone's parameters in stages, from the input to the output.

    timm models: their own coarse grouping (``group_matcher``: stem, then each block
    stage; the same one timm uses for layer-wise LR decay). Other modules: their
    direct children that hold parameters (``small_cnn``: one stage per conv block).
    """
    params = dict(backbone.named_parameters())
    matcher = getattr(backbone, "group_matcher", None)
    if callable(matcher):
        from timm.models import group_parameters

        groups = group_parameters(backbone, matcher(coarse=True))
        stages = [[params[n] for n in names if n in params] for names in groups.values()]
    else:
        children = [c for c in backbone.children() if any(True for _ in c.parameters())]
        while len(children) == 1 and isinstance(children[0], nn.Sequential):
            children = [c for c in children[0].children() if any(True for _ in c.parameters())]
        stages = [list(c.parameters()) for c in children]
        seen = {id(p) for stage in stages for p in stage}
        rest = [p for p in backbone.parameters() if id(p) not in seen]
        if rest:
            stages.append(rest)
    return [s for s in stages if s]


class BackboneFinetuning(Callback):
    """Freeze ``backbone`` for ``freeze_epochs`` epochs, then unfreeze it (``all`` / ``gradual``).

    Parameters
    ----------
    backbone:
        The pretrained network (e.g. ``ImageEncoder.backbone``).
    freeze_epochs:
        Epochs trained with the backbone frozen (only the rest of the model learns).
    unfreeze:
        ``all``: every stage trainable from epoch ``freeze_epochs``; ``gradual``: the top
        stage at ``freeze_epochs``, one more stage (downwards) every epoch after.
    """

    def __init__(self, backbone: nn.Module, freeze_epochs: int, unfreeze: str = "all") -> None:
        check_option("unfreeze", unfreeze, UNFREEZE)
        self.backbone, self.freeze_epochs, self.unfreeze = backbone, int(freeze_epochs), unfreeze
        self.stages = backbone_stages(backbone)

    def trainable_stages(self, epoch: int) -> int:
        """How many stages (counted from the top) train in ``epoch``."""
        if epoch < self.freeze_epochs:
            return 0
        if self.unfreeze == "all":
            return len(self.stages)
        return min(len(self.stages), epoch - self.freeze_epochs + 1)

    def apply(self, epoch: int, training: bool = True) -> None:
        """Set ``requires_grad`` (and BatchNorm train / eval mode) for ``epoch``."""
        k = self.trainable_stages(epoch)
        first_trainable = len(self.stages) - k
        for i, stage in enumerate(self.stages):
            for p in stage:
                p.requires_grad_(i >= first_trainable)
        for module in self.backbone.modules():
            if isinstance(module, _BatchNorm):
                own = list(module.parameters(recurse=False))
                frozen = bool(own) and not any(p.requires_grad for p in own)
                module.train(training and not frozen)

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.apply(trainer.current_epoch, training=pl_module.training)
