"""Training-time image augmentation built from an :class:`~medfuse.config.AugmentSpec`,
and the fixed symmetric views of an image averaged by ``image_views`` / ``tta``.

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
from medfuse.errors import check_option

#: the view sets of ``model.image_views`` / ``model.tta``
VIEWS = ("none", "hflip", "dihedral")


def augment_spec(value: bool | Mapping[str, Any] | AugmentSpec | None) -> AugmentSpec:
    """An :class:`AugmentSpec` from ``true`` / ``false`` / a mapping (validated)."""
    if isinstance(value, AugmentSpec):
        return value
    return AugmentSpec.model_validate(bool(value) if value is None else value)


def build_augmentation(
    spec: AugmentSpec, fill: Sequence[int] = (0, 0, 0)
) -> Callable[[torch.Tensor], torch.Tensor]:
    """A ``torchvision.transforms.v2`` pipeline: random resized crop, flips, quarter turns,
    affine, jitter.

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
    if spec.rot90 > 0:
        steps.append(v2.RandomApply([_QuarterTurn()], p=spec.rot90))
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


def symmetric_views(x: torch.Tensor, views: str) -> list[torch.Tensor]:
    """The views of a square image batch ``(..., H, W)`` named by ``views``, itself first.

    ``"none"``: the image; ``"hflip"``: it and its mirror image; ``"dihedral"``: the
    eight flips / quarter turns of the square (slices and dermoscopy images have no
    canonical orientation).

    >>> x = torch.arange(4.0).reshape(1, 2, 2)
    >>> [v[0].tolist() for v in symmetric_views(x, "hflip")]
    [[[0.0, 1.0], [2.0, 3.0]], [[1.0, 0.0], [3.0, 2.0]]]
    >>> len({tuple(v.flatten().tolist()) for v in symmetric_views(x, "dihedral")})
    8
    """
    check_option("views", views, VIEWS, "symmetric_views")
    if views == "none":
        return [x]
    if views == "hflip":
        return [x, torch.flip(x, dims=[-1])]
    # flips and a transpose only (both export to ONNX; torch.rot90 does not)
    flips = [x, torch.flip(x, dims=[-1]), torch.flip(x, dims=[-2]), torch.flip(x, dims=[-2, -1])]
    return flips + [v.transpose(-2, -1) for v in flips]


class _QuarterTurn(torch.nn.Module):
    """A 90-degree counter-clockwise rotation of a square image (no corners uncovered)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.rot90(x, 1, dims=(-2, -1))


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
