"""Perturbation image attributions: occlusion and LIME (no gradients needed).

Both paint hidden pixels with :func:`fill_baseline` and measure how the class
probability changes, so they explain any image classifier, differentiable or not
(hybrid models with tree heads included). :func:`occlusion` works on
``f(images) -> probabilities``; :func:`lime_image` on a fitted estimator and one row,
through :func:`medfuse.explain.adapters.image_forward`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from medfuse.errors import ConfigError, DataError
from medfuse.explain._common import ProbaFn, targets

if TYPE_CHECKING:
    import pandas as pd

    from medfuse.estimators.base import Classifier

FILLS = ("median", "zero")


def fill_baseline(images: torch.Tensor, fill: str = "median") -> torch.Tensor:
    """What perturbation methods paint over hidden pixels, same shape as ``images``.

    ``median``: each image's per-channel median colour (its background, e.g. skin, so
    hiding a lesion removes it instead of painting a grey blob); ``zero``: the normalised
    mean colour (mid-grey).
    """
    if fill not in FILLS:
        raise ConfigError(f"The 'fill' parameter must be one of {FILLS}. Got {fill!r}.")
    if fill == "zero":
        return torch.zeros_like(images, dtype=torch.float32)
    med = images.float().flatten(2).median(dim=2).values
    return med[:, :, None, None].expand_as(images).contiguous()


def occlusion(
    fn: ProbaFn,
    images: torch.Tensor,
    target: int | Sequence[int] | torch.Tensor,
    grid: int = 8,
    batch_size: int = 32,
    fill: str = "median",
) -> np.ndarray:
    """Occlusion sensitivity maps ``(B, H, W)``: positive part of the probability drop.

    Squares of side ``ceil(size / grid)`` painted with :func:`fill_baseline` slide with
    half that stride (captum ``Occlusion``); each pixel gets the mean drop of the
    windows covering it.
    """
    from captum.attr import Occlusion

    h, w = images.shape[-2:]
    win = (max(1, math.ceil(h / grid)), max(1, math.ceil(w / grid)))
    stride = (max(1, win[0] // 2), max(1, win[1] // 2))
    with torch.no_grad():
        attr = Occlusion(fn).attribute(
            images.float(), sliding_window_shapes=(images.shape[1], *win),
            strides=(images.shape[1], *stride), baselines=fill_baseline(images, fill),
            target=targets(target, images.shape[0]), perturbations_per_eval=batch_size,
        )
    return np.clip(attr[:, 0].detach().cpu().numpy().astype(np.float64), 0.0, None)


def lime_image(
    clf: Classifier,
    df_row: pd.DataFrame | pd.Series,
    n_samples: int = 200,
    n_segments: int = 50,
    target: int | None = None,
    seed: int = 0,
    fill: str = "median",
) -> np.ndarray:
    """LIME over SLIC superpixels of one row's image -> ``(H, W)`` map at the input size.

    Superpixels switched off are painted with :func:`fill_baseline`; a ridge
    model fitted on ``n_samples`` random on / off patterns (captum ``Lime``, cosine
    exponential kernel) gives each superpixel a weight, painted on its pixels. Other
    modalities are held at the row's values, so this works for image-only models and
    for multimodal ones alike (fused or hybrid, any head: no gradients are needed).

    Parameters
    ----------
    clf:
        A fitted estimator (:class:`~medfuse.estimators.base.Classifier`: a
        :class:`~medfuse.FusionClassifier` or :class:`~medfuse.HybridClassifier`) with an
        image column.
    df_row:
        One row (a one-row DataFrame or a Series).
    target:
        Class index explained; default: the predicted class.
    """
    import pandas as pd
    from captum._utils.models.linear_model import SkLearnRidge
    from captum.attr import Lime
    from skimage.segmentation import slic

    from medfuse.explain.adapters import image_forward

    frame = df_row.to_frame().T if isinstance(df_row, pd.Series) else df_row
    if len(frame) != 1:
        raise DataError(f"lime_image explains one row; got {len(frame)} rows.")
    adapter = image_forward(clf, frame)
    image = adapter.image
    rgb = adapter.to_rgb(image)[0]
    segments = slic(rgb, n_segments=n_segments, compactness=10.0, start_label=0,
                    channel_axis=-1)
    mask = torch.as_tensor(segments, dtype=torch.long)[None, None].expand_as(image)
    cls = adapter.predicted if target is None else int(target)
    lime = Lime(adapter.fn, interpretable_model=SkLearnRidge(alpha=1.0))
    with torch.random.fork_rng(), torch.no_grad():
        torch.manual_seed(seed)
        attr = lime.attribute(image.float(), baselines=fill_baseline(image, fill), target=cls,
                              feature_mask=mask.contiguous(), n_samples=n_samples,
                              perturbations_per_eval=16)
    return attr[0, 0].detach().cpu().numpy().astype(np.float64)

