"""One image-classifier view of any fitted medfuse estimator, for image explanations.

:func:`image_forward` turns a fitted estimator (any
:class:`~medfuse.estimators.base.Classifier`, fused or hybrid) and one row into
``f(images) -> probabilities`` with the row's other modalities held fixed, plus the row's
preprocessed image.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from scipy import sparse

from medfuse.errors import ConfigError
from medfuse.explain._common import BatchForward, ProbaFn, fused_batch, split_batch

if TYPE_CHECKING:
    from medfuse.estimators.base import Classifier


@dataclass
class ImageAdapter:
    """A row's image and ``fn(images (n, 3, H, W)) -> probabilities (n, n_classes)``.

    ``differentiable``: gradients flow from ``fn``'s output to its input (fused models
    and hybrid models with a linear head); otherwise use occlusion or LIME.
    """

    image: torch.Tensor
    fn: ProbaFn
    differentiable: bool
    predicted: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    path: str

    def to_rgb(self, images: torch.Tensor) -> np.ndarray:
        """Normalised ``(n, 3, H, W)`` -> ``(n, H, W, 3)`` floats in [0, 1]."""
        mean = torch.as_tensor(self.mean).view(1, -1, 1, 1)
        std = torch.as_tensor(self.std).view(1, -1, 1, 1)
        rgb = (images.detach().float().cpu() * std + mean).clamp(0, 1)
        return rgb.permute(0, 2, 3, 1).numpy().astype(np.float64)


def _check_image(clf: Any) -> None:
    if not getattr(clf.spec, "image", None):
        raise ConfigError(f"this {type(clf).__name__} has no image column: image "
                          "explanations need a model trained with spec.image set.")


def _predicted(clf: Any, frame: pd.DataFrame) -> int:
    label = clf.predict(frame)[0]
    return list(clf.classes_).index(label)


def image_forward(clf: Classifier, frame: pd.DataFrame,
                  predicted: int | None = None) -> ImageAdapter:
    """The :class:`ImageAdapter` of the first row of ``frame`` for a fitted estimator.

    ``clf.kind`` picks the view: ``"hybrid"`` runs the image encoder and the head,
    ``"fused"`` the fused network with the row's other inputs held fixed.
    """
    fitted: Any = clf  # beyond the protocol: the family's own fitted parts (pre_, model_)
    _check_image(fitted)
    fitted._check_fitted()
    frame = frame.iloc[:1]
    if clf.kind == "hybrid":
        return _hybrid_forward(fitted, frame, predicted)
    return _fused_forward(fitted, frame, predicted)


def _fused_forward(clf: Any, frame: pd.DataFrame, predicted: int | None) -> ImageAdapter:
    clean, batch = fused_batch(clf, frame)
    model = clf.model_.eval()
    keys, (image,), rest = split_batch(batch, ("image",))
    fwd = BatchForward(model, keys)

    def fn(images: torch.Tensor) -> torch.Tensor:
        return fwd(images, *rest)

    t = clf.pre_.image
    return ImageAdapter(image, fn, True,
                        _predicted(clf, frame) if predicted is None else predicted,
                        tuple(t.mean), tuple(t.std), str(clean[clf.spec.image].iloc[0]))


def _hybrid_forward(clf: Any, frame: pd.DataFrame, predicted: int | None) -> ImageAdapter:
    from medfuse.data.images import read_image
    from medfuse.data.validation import validate_table
    from medfuse.explain.hybrid import (
        HeadExplainer,
        feature_layout,
        image_extractor,
        numpy_proba,
        replace_columns,
        torch_linear_proba,
    )

    clean, _ = validate_table(frame, clf.input_spec(), table="explain",
                              check_images="exists", require_target=False, training=False)
    encoder, transform = image_extractor(clf)
    if encoder is None:
        raise ConfigError("this HybridClassifier has no image feature extractor.")
    encoder.eval()
    path = str(clean[clf.spec.image].iloc[0])
    image = transform(read_image(path)).unsqueeze(0)
    X = clf.transform(clean)
    layout = feature_layout(clf, X.shape[1])
    assert layout.image is not None
    cols = layout.image
    # a multi-label head's per-label estimators have no torch twin: occlusion through numpy
    linear = not clf.multilabel and HeadExplainer(clf).kind == "linear"

    def fn(images: torch.Tensor) -> torch.Tensor:
        if linear:
            return torch_linear_proba(clf, replace_columns(X, images.shape[0], cols,
                                                           encoder(images)))
        with torch.no_grad():
            rows = replace_columns(X, images.shape[0], cols, encoder(images)).numpy()
        return numpy_proba(clf, sparse.csr_matrix(rows) if sparse.issparse(X) else rows)

    return ImageAdapter(image, fn, linear,
                        _predicted(clf, frame) if predicted is None else predicted,
                        tuple(transform.mean), tuple(transform.std), path)
