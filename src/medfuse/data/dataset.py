"""A torch ``Dataset`` of dict samples with only the modalities present.

Keys: ``image`` (float ``3xHxW``), ``tabular_cat`` (int64 codes),
``tabular_cont`` (float32), ``text`` (int64 token ids), ``target`` (int64).
Tabular and text arrays are computed once up front; images are decoded lazily.

>>> import pandas as pd
>>> from medfuse.config import DataSpec
>>> from medfuse.data.preprocess import Preprocessor
>>> spec = DataSpec(tabular={"age": "continuous"}, text="note", target="y")
>>> df = pd.DataFrame({"age": [50.0, 60.0], "note": ["grown", "stable"], "y": ["0", "1"]})
>>> ds = MultimodalDataset(df, Preprocessor(spec, max_tokens=4, min_token_freq=1).fit(df))
>>> sorted(ds[0]), ds[0]["text"].tolist()
(['tabular_cat', 'tabular_cont', 'target', 'text'], [2, 0, 0, 0])
"""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd
import torch
from torch.utils.data import Dataset

from medfuse.data.images import read_image
from medfuse.data.preprocess import Preprocessor


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
    """

    def __init__(
        self,
        df: pd.DataFrame,
        pre: Preprocessor,
        with_target: bool | None = None,
        augment: bool = False,
    ) -> None:
        pre._check_fitted()
        self.augment = _augmentation() if augment else None
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
        if with_target is None:
            with_target = spec.target in df.columns
        if with_target:
            self.tensors["target"] = pre.encode_target(df[spec.target])
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
            image = self.pre.image(read_image(self.paths[i]))
            if self.augment is not None:
                if seed is None:
                    image = self.augment(image)
                else:
                    with torch.random.fork_rng(devices=[]):
                        torch.manual_seed(seed)
                        image = self.augment(image)
            sample["image"] = image
        return sample


def _augmentation() -> Callable[[torch.Tensor], torch.Tensor]:
    """Mild geometric augmentation for training images (flip, small affine)."""
    from torchvision.transforms import v2

    return v2.Compose(
        [
            v2.RandomHorizontalFlip(),
            v2.RandomAffine(degrees=10, translate=(0.05, 0.05), scale=(0.9, 1.1)),
        ]
    )
