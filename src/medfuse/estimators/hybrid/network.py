"""The in-fold network of ``extractor="trained"``: a fused network trained on the training
rows only, then cut before its head so its encoders' outputs become features."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from medfuse.data.dataset import MultimodalDataset
from medfuse.errors import ConfigError
from medfuse.estimators.fused import FusionClassifier
from medfuse.estimators.hybrid.storage import EXTRACTOR_DIR


def train_extractor(clf: Any, train: pd.DataFrame, valid: pd.DataFrame | None,
                    run_dir: str | Path | None) -> FusionClassifier:
    """Train a network on the image / text inputs of the training rows only.

    Its encoders' outputs (the fusion layer's input, i.e. the network cut before
    its head) become features; tabular columns go to the head directly (and, with
    ``extractor_tabular``, also train the network, whose tabular embedding is kept).
    ``clf`` is the :class:`~medfuse.estimators.hybrid.HybridClassifier` whose parameters
    the network takes.
    """
    if not (clf.spec.image or clf.spec.text):
        raise ConfigError(
            "extractor='trained' trains a network on the image and / or text column, "
            "and this spec has neither; use extractor='frozen' (tabular features only)."
        )
    deep_spec = (clf.spec if clf.extractor_tabular
                 else clf.spec.model_copy(update={"tabular": {}}))
    net = FusionClassifier(
        deep_spec, image_backbone=clf.backbone_, pretrained=clf.weights_,
        image_size=clf.image_size, text_encoder=clf.text_encoder,
        finetune_text=clf.finetune_text, encoder_lr=clf.encoder_lr, embed_dim=clf.embed_dim,
        min_token_freq=clf.min_token_freq, max_tokens=clf.max_tokens,
        max_epochs=clf.max_epochs, lr=clf.lr, batch_size=min(clf.batch_size, 32),
        seed=clf.seed, progress=clf.progress, precision=clf.precision,
    )
    net.fit(train, valid, run_dir=Path(run_dir) / EXTRACTOR_DIR if run_dir else None)
    return net


def deep_features(net: FusionClassifier, df: pd.DataFrame, batch_size: int) -> np.ndarray:
    """Outputs of the trained network's encoders (image / text), concatenated."""
    ds = MultimodalDataset(df, net.pre_, with_target=False)
    out = []
    net.model_.eval()
    with torch.inference_mode():
        for batch in torch.utils.data.DataLoader(ds, batch_size=batch_size):
            out.append(torch.cat(list(net.model_.encode(batch).values()), dim=1).float())
    return torch.cat(out).numpy()
