"""One preprocessor per modality, fitted together on training rows, saved as JSON.

This bundle is what a run directory stores as ``preprocess.json``.

>>> from medfuse.config import DataSpec
>>> import pandas as pd
>>> spec = DataSpec(tabular={"age": "continuous"}, text="note", target="y")
>>> df = pd.DataFrame({"age": [50.0, 60.0], "note": ["grown", "stable"], "y": ["0", "1"]})
>>> pre = Preprocessor(spec, min_token_freq=1).fit(df)
>>> pre.classes_
['0', '1']
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torchvision.transforms.v2 import functional as tvf

from medfuse.config import DataSpec
from medfuse.data.labels import check_label_counts, label_names, multi_hot, target_column
from medfuse.data.minilm import MiniLMTokenizer
from medfuse.data.tabular import TabularPreprocessor
from medfuse.data.text import Vocabulary
from medfuse.data.validation import labels_as_str
from medfuse.errors import DataError, NotFittedError, did_you_mean


@dataclass
class ImageTransform:
    """Resize to ``size`` x ``size`` and normalise with ``mean`` / ``std`` (per channel).

    The backbone decides the values (timm's pretrained config); defaults suit
    EfficientNet-Lite (mean = std = 0.5).
    """

    size: int = 224
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    hair_removal: bool = False

    def __call__(self, img: Image.Image) -> torch.Tensor:
        return self.normalize(self.pixels(img))

    def pixels(self, img: Image.Image) -> torch.Tensor:
        """The resized 8-bit image ``(3, size, size)`` (hair removed if ``hair_removal``)."""
        t = tvf.pil_to_tensor(img.convert("RGB"))
        t = tvf.resize(t, [self.size, self.size], antialias=True)
        if self.hair_removal:
            from medfuse.data.hair import remove_hair

            t = torch.from_numpy(remove_hair(t.permute(1, 2, 0).numpy())).permute(2, 0, 1)
        return t

    def normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        """8-bit ``(3, H, W)`` pixels -> the float input of the network."""
        t = tvf.to_dtype(pixels, torch.float32, scale=True)
        return tvf.normalize(t, list(self.mean), list(self.std))

    @property
    def fill(self) -> tuple[int, int, int]:
        """The 8-bit colour that normalises to 0 (for corners uncovered by augmentation)."""
        r, g, b = (round(255 * m) for m in self.mean)
        return r, g, b

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> ImageTransform:
        return cls(int(state["size"]), tuple(state["mean"]), tuple(state["std"]),
                   bool(state.get("hair_removal", False)))


class Preprocessor:
    """Class labels + tabular preprocessing + text vocabulary + image transform.

    ``fit`` must only ever see training rows: it is the single place where
    statistics of the data are learned.
    """

    def __init__(
        self,
        spec: DataSpec,
        max_tokens: int = 128,
        min_token_freq: int = 2,
        max_vocab: int = 20000,
        image: ImageTransform | None = None,
        tokenizer: str = "vocab",
    ) -> None:
        self.spec = spec
        self.tokenizer = tokenizer
        self.max_tokens = max_tokens
        self.min_token_freq = min_token_freq
        self.max_vocab = max_vocab
        self.image = image or ImageTransform()
        if spec.hair_removal and not self.image.hair_removal:  # part of the saved transform
            self.image = replace(self.image, hair_removal=True)

    def fit(self, train: pd.DataFrame) -> Preprocessor:
        spec = self.spec
        if spec.target not in train.columns:
            raise DataError(f"target column '{spec.target}' is missing from the training rows")
        if spec.multilabel:
            self.classes_ = (list(spec.targets) if spec.targets
                             else label_names(train[spec.target], spec.separator))
            check_label_counts(
                multi_hot(train[spec.target], self.classes_, spec.separator, spec.target),
                self.classes_, "training rows of this fit",
                "With cross-validation, use fewer folds (--folds) so each training fold "
                "has the label; otherwise drop the label from data.targets or add rows "
                "that have it.")
        else:
            self.classes_ = sorted(labels_as_str(train[spec.target]).unique().tolist())
        if spec.positive is not None and spec.positive in self.classes_:
            self.classes_.remove(spec.positive)
            self.classes_.append(spec.positive)
        self.tabular_ = TabularPreprocessor(dict(spec.tabular)).fit(train) if spec.tabular else None
        self.vocab_ = (
            Vocabulary(self.min_token_freq, self.max_vocab).fit(train[spec.text].fillna(""))
            if spec.text and "vocab" in self.tokenizers
            else None
        )
        return self

    @property
    def tokenizers(self) -> list[str]:
        """Text views: ``vocab`` (word ids) and / or ``minilm`` (word pieces)."""
        return self.tokenizer.split("+")

    def encode_text(self, texts: pd.Series) -> np.ndarray:
        """Token ids ``(n, max_tokens)``, 0 = padding; ``(n, views, max_tokens)`` for several."""
        self._check_fitted()
        values = texts.fillna("").astype(str).tolist()
        views = []
        for name in self.tokenizers:
            if name == "minilm":
                if not hasattr(self, "_minilm"):
                    self._minilm = MiniLMTokenizer()
                views.append(self._minilm.encode_batch(values, self.max_tokens))
            elif self.vocab_ is not None:
                views.append(self.vocab_.encode_batch(values, self.max_tokens))
            else:
                raise NotFittedError("no text vocabulary: the spec has no text column")
        return views[0] if len(views) == 1 else np.stack(views, axis=1)

    def _check_fitted(self) -> None:
        if not hasattr(self, "classes_"):
            raise NotFittedError("Preprocessor is not fitted yet; call fit(train_df) first")

    @property
    def multilabel(self) -> bool:
        """Several labels per row: ``encode_target`` gives an ``(n, n_labels)`` 0/1 matrix."""
        return self.spec.multilabel

    def encode_target(self, values: pd.Series | pd.DataFrame) -> torch.Tensor:
        """Class indices (a float ``(n, n_labels)`` 0/1 matrix for a multi-label target)
        of the target column, or of a table's target (:func:`target_column`); a label
        unseen in training is an error naming it."""
        self._check_fitted()
        if isinstance(values, pd.DataFrame):
            values = target_column(values, self.spec)
        if self.multilabel:
            hot = multi_hot(values, self.classes_, self.spec.separator, self.spec.target)
            return torch.tensor(hot, dtype=torch.float32)
        lookup = {c: i for i, c in enumerate(self.classes_)}
        labels = labels_as_str(values)
        unknown = sorted(set(labels) - set(lookup))
        if unknown:
            counts = labels.value_counts()
            rows = ", ".join(f"{v!r}: {counts[v]} row(s)" for v in unknown[:5])
            raise DataError(
                f"target column '{self.spec.target}' has label(s) {unknown} not seen in "
                f"training ({rows}); known classes: {self.classes_}."
                f"{did_you_mean(unknown[0], self.classes_)} Fix or drop those rows, or use "
                "`medfuse predict`, which needs no labels"
            )
        return torch.tensor([lookup[v] for v in labels], dtype=torch.long)

    def to_dict(self) -> dict[str, Any]:
        self._check_fitted()
        return {
            "spec": self.spec.model_dump(mode="json"),
            "tokenizer": self.tokenizer,
            "classes": self.classes_,
            "max_tokens": self.max_tokens,
            "min_token_freq": self.min_token_freq,
            "max_vocab": self.max_vocab,
            "image": self.image.to_dict(),
            "tabular": self.tabular_.to_dict() if self.tabular_ else None,
            "vocab": self.vocab_.to_dict() if self.vocab_ else None,
        }

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> Preprocessor:
        obj = cls(
            DataSpec.model_validate(state["spec"]),
            max_tokens=int(state["max_tokens"]),
            min_token_freq=int(state["min_token_freq"]),
            max_vocab=int(state["max_vocab"]),
            image=ImageTransform.from_dict(state["image"]),
            tokenizer=state.get("tokenizer", "vocab"),
        )
        obj.classes_ = list(state["classes"])
        tab, vocab = state.get("tabular"), state.get("vocab")
        obj.tabular_ = TabularPreprocessor.from_dict(tab) if tab else None
        obj.vocab_ = Vocabulary.from_dict(vocab) if vocab else None
        return obj

    def save(self, path: str | Path) -> None:
        from medfuse.io import atomic_write_json

        atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> Preprocessor:
        return cls.from_dict(json.loads(Path(path).read_text()))
