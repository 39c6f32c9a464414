"""A torch ``Dataset`` of dict samples with only the modalities present.

Keys: ``image`` (float ``3xHxW``), ``tabular_cat`` (int64 codes),
``tabular_cont`` (float32), ``text`` (int64 token ids), ``present`` (float32, one
entry per modality of the spec, in ``spec.modalities`` order: 1 where the row has it),
``target`` (int64). A row lacks its image when the path is empty (kept by
``data.policy.missing_image: keep``), its text when the text is empty, its tabular
values when every tabular column is missing; a missing image is all zeros (the
normalised mean colour). Tabular and text arrays are computed once up front; images
are decoded lazily.

>>> import pandas as pd
>>> from medfuse.config import DataSpec
>>> from medfuse.data.preprocess import Preprocessor
>>> spec = DataSpec(tabular={"age": "continuous"}, text="note", target="y")
>>> df = pd.DataFrame({"age": [50.0, 60.0], "note": ["grown", "stable"], "y": ["0", "1"]})
>>> ds = MultimodalDataset(df, Preprocessor(spec, max_tokens=4, min_token_freq=1).fit(df))
>>> sorted(ds[0]), ds[0]["text"].tolist()
(['present', 'tabular_cat', 'tabular_cont', 'target', 'text'], [2, 0, 0, 0])
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from medfuse.config import AugmentSpec, DataSpec
from medfuse.data.augment import augment_spec, build_augmentation
from medfuse.data.decoded import DecodedImages
from medfuse.data.images import read_image
from medfuse.data.preprocess import Preprocessor

#: the column of a training table that carries ``FusionClassifier.fit``'s ``sample_weight``
SAMPLE_WEIGHT = "_medfuse_sample_weight"


class MultimodalDataset(Dataset[dict[str, torch.Tensor]]):
    """Rows of a validated table, preprocessed by a fitted :class:`Preprocessor`.

    Parameters
    ----------
    df:
        A validated table (see :func:`medfuse.data.validate_table`): image paths
        absolute, numbers numeric.
    pre:
        A preprocessor fitted on the training rows.
    with_target:
        Include ``target``; default: when the target column is present.
    augment:
        Augmentation of images: ``True`` / ``False`` or an
        :class:`~medfuse.config.AugmentSpec` (or its mapping); rows fetched as
        ``(row, seed)`` are augmented reproducibly.
    decoded:
        A :class:`~medfuse.data.decoded.DecodedImages` cache: each image is decoded and
        resized once, later epochs read its 8-bit pixels from disk (same values).
    sample_weight:
        Per-row loss weights ``(n,)``, yielded as ``sample_weight`` (training rows only).
    """

    def __init__(
        self,
        df: pd.DataFrame,
        pre: Preprocessor,
        with_target: bool | None = None,
        augment: bool | Mapping[str, Any] | AugmentSpec = False,
        decoded: DecodedImages | None = None,
        sample_weight: np.ndarray | None = None,
    ) -> None:
        pre._check_fitted()
        self.decoded = decoded
        spec_aug = augment_spec(augment)
        self.augment = build_augmentation(spec_aug, pre.image.fill) if spec_aug.active else None
        spec = pre.spec
        self.pre = pre
        self.paths: list[str] = df[spec.image].astype(str).tolist() if spec.image else []
        self.tensors: dict[str, torch.Tensor] = {}
        if pre.tabular_ is not None:
            codes, values = pre.tabular_.transform(df)
            self.tensors["tabular_cat"] = torch.from_numpy(codes)
            self.tensors["tabular_cont"] = torch.from_numpy(values)
        if spec.text:
            self.tensors["text"] = torch.from_numpy(pre.encode_text(df[spec.text]))
        self.tensors["present"] = torch.from_numpy(presence(df, spec))
        if with_target is None:
            with_target = spec.target in df.columns or bool(
                spec.targets and all(c in df.columns for c in spec.targets))
        if with_target:
            self.tensors["target"] = pre.encode_target(df)
        if sample_weight is not None:  # per-row loss weights (training only)
            self.tensors["sample_weight"] = torch.as_tensor(
                np.asarray(sample_weight, dtype=np.float32))
        self.n = len(df)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, torch.Tensor]:
        """Row ``key``; or ``(row, seed)``: the row augmented with a generator seeded by ``seed``.

        Seeded rows (see :class:`medfuse.training.EpochSampler`) are augmented the same
        way in any process, worker or resumed run.
        """
        i, seed = key if isinstance(key, tuple) else (key, None)
        sample = {k: v[i] for k, v in self.tensors.items()}
        if self.paths:
            transform = self.pre.image
            if not self.paths[i]:  # no image for this row (see ``present``)
                sample["image"] = torch.zeros(3, transform.size, transform.size)
                return sample
            if self.augment is None:
                sample["image"] = transform.normalize(self.pixels(i))
                return sample
            pixels = self.pixels(i)  # augmented before normalising
            if seed is None:
                pixels = self.augment(pixels)
            else:
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(seed)
                    pixels = self.augment(pixels)
            sample["image"] = transform.normalize(pixels)
        return sample

    def pixels(self, i: int) -> torch.Tensor:
        """Row ``i``'s resized 8-bit image (from the decoded-image cache when there is one)."""
        if self.decoded is not None:
            return self.decoded.pixels(self.paths[i])
        return self.pre.image.pixels(read_image(self.paths[i]))


def presence(df: pd.DataFrame, spec: DataSpec) -> np.ndarray:
    """``(n, M)`` float32: 1 where a row of a validated table has modality ``m``.

    Columns follow ``spec.modalities``. A modality whose columns are absent from ``df``
    is missing in every row.

    >>> spec = DataSpec(tabular={"age": "continuous"}, text="note", target="y")
    >>> presence(pd.DataFrame({"age": [50.0, None], "note": ["", "ok"]}), spec).tolist()
    [[1.0, 0.0], [0.0, 1.0]]
    """
    none = np.zeros(len(df), bool)

    def filled(col: str | None) -> np.ndarray:  # a non-blank path / text
        if col not in df.columns:
            return none
        return (df[col].fillna("").astype(str).str.strip() != "").to_numpy()

    cols = []
    for modality in spec.modalities:
        if modality == "tabular":
            names = [c for c in spec.tabular if c in df.columns]
            cols.append(df[names].notna().any(axis=1).to_numpy() if names else none)
        else:
            cols.append(filled(spec.image if modality == "image" else spec.text))
    return np.stack(cols, axis=1).astype(np.float32)
