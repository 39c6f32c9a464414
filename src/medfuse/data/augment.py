"""Training-time image augmentation built from an :class:`~medfuse.config.AugmentSpec`.

The pipeline works on resized 8-bit images ``(3, H, W)`` (before normalisation, so
colour jitter sees real intensities) and draws from torch's global generator only:
:class:`~medfuse.data.dataset.MultimodalDataset` seeds it per (seed, epoch, row).

>>> import torch
>>> from medfuse.config import AugmentSpec
>>> aug = build_augmentation(AugmentSpec(vflip=1.0, hflip=0.0, rotate=0, translate=0, scale=0))
>>> x = torch.arange(4, dtype=torch.uint8).reshape(1, 2, 2).expand(3, 2, 2)
>>> aug(x)[0].tolist()
[[2, 3], [0, 1]]
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from medfuse.config import AugmentSpec


def augment_spec(value: bool | Mapping[str, Any] | AugmentSpec | None) -> AugmentSpec:
    """An :class:`AugmentSpec` from ``true`` / ``false`` / a mapping (validated)."""
    if isinstance(value, AugmentSpec):
        return value
    return AugmentSpec.model_validate(bool(value) if value is None else value)


def build_augmentation(
    spec: AugmentSpec, fill: Sequence[int] = (0, 0, 0)
) -> Callable[[torch.Tensor], torch.Tensor]:
    """A ``torchvision.transforms.v2`` pipeline: random resized crop, flips, affine, jitter.

    ``fill`` colours the corners that rotation and shifts uncover (the dataset passes
    the normalisation mean, so they become 0 after normalisation).
    """
    from torchvision.transforms import v2

    steps: list[Any] = []
    if spec.random_resized_crop > 0:
        steps.append(_SameSizeCrop(spec.random_resized_crop))
    if spec.hflip > 0:
        steps.append(v2.RandomHorizontalFlip(spec.hflip))
    if spec.vflip > 0:
        steps.append(v2.RandomVerticalFlip(spec.vflip))
    if spec.rotate > 0 or spec.translate > 0 or spec.scale > 0:
        steps.append(v2.RandomAffine(
            degrees=spec.rotate,
            translate=(spec.translate, spec.translate) if spec.translate > 0 else None,
            scale=(1.0 - spec.scale, 1.0 + spec.scale) if spec.scale > 0 else None,
            fill=list(fill),
        ))
    if spec.color_jitter > 0:
        j = spec.color_jitter
        steps.append(v2.ColorJitter(brightness=j, contrast=j, saturation=j, hue=min(0.5, j / 4)))
    return v2.Compose(steps)


class _SameSizeCrop(torch.nn.Module):
    """A random resized crop (area share in ``[min_area, 1]``) back to the input's size."""

    def __init__(self, min_area: float) -> None:
        super().__init__()
        self.min_area = min_area

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from torchvision.transforms import v2

        crop = v2.RandomResizedCrop(list(x.shape[-2:]), scale=(self.min_area, 1.0),
                                    antialias=True)
        out: torch.Tensor = crop(x)
        return out
