"""Text normalisation, tokenisation and a vocabulary fitted on training texts.

>>> vocab = Vocabulary(min_freq=1).fit(["No acute disease.", "Acute effusion"])
>>> vocab.encode("acute pneumonia", max_len=4)
[2, 1, 0, 0]
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Iterable
from typing import Any

import numpy as np

from medfuse.errors import NotFittedError

PAD, UNK = "<pad>", "<unk>"
_TOKEN = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def normalize_text(text: str) -> str:
    """Unicode NFKC, lower case, collapsed whitespace.

    >>> normalize_text("  Heart  SIZE\\tnormal. ")
    'heart size normal.'
    """
    text = unicodedata.normalize("NFKC", str(text)).lower()
    return " ".join(text.split())


def tokenize(text: str) -> list[str]:
    """Split normalised text into word tokens (letters / digits, inner apostrophes).

    >>> tokenize("No pleural effusion; heart size is normal (2x).")
    ['no', 'pleural', 'effusion', 'heart', 'size', 'is', 'normal', '2x']
    """
    return _TOKEN.findall(normalize_text(text))


class Vocabulary:
    """Token <-> id map; id 0 is padding, id 1 the unknown token.

    Parameters
    ----------
    min_freq:
        Tokens seen fewer times in training are mapped to ``<unk>``.
    max_size:
        Keep at most this many tokens (most frequent first; ties alphabetical).
    """

    def __init__(self, min_freq: int = 2, max_size: int = 20000) -> None:
        self.min_freq = min_freq
        self.max_size = max_size

    def fit(self, texts: Iterable[str]) -> Vocabulary:
        counts: Counter[str] = Counter()
        for t in texts:
            counts.update(tokenize(t))
        kept = sorted(
            (tok for tok, c in counts.items() if c >= self.min_freq),
            key=lambda tok: (-counts[tok], tok),
        )[: self.max_size]
        self.itos_: list[str] = [PAD, UNK, *kept]
        self.stoi_: dict[str, int] = {tok: i for i, tok in enumerate(self.itos_)}
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "itos_"):
            raise NotFittedError("Vocabulary is not fitted yet; call fit(train_texts) first")

    def __len__(self) -> int:
        self._check_fitted()
        return len(self.itos_)

    def encode(self, text: str, max_len: int) -> list[int]:
        """Token ids of ``text``, truncated / padded to ``max_len``."""
        self._check_fitted()
        ids = [self.stoi_.get(tok, 1) for tok in tokenize(text)][:max_len]
        return ids + [0] * (max_len - len(ids))

    def encode_batch(self, texts: Iterable[str], max_len: int) -> np.ndarray:
        """``(n, max_len)`` int64 array of token ids."""
        rows = [self.encode(t, max_len) for t in texts]
        return np.asarray(rows, dtype=np.int64).reshape(len(rows), max_len)

    def decode(self, ids: Iterable[int]) -> list[str]:
        self._check_fitted()
        return [self.itos_[i] for i in ids if i != 0]

    def to_dict(self) -> dict[str, Any]:
        self._check_fitted()
        return {"min_freq": self.min_freq, "max_size": self.max_size, "itos": self.itos_}

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> Vocabulary:
        obj = cls(min_freq=int(state["min_freq"]), max_size=int(state["max_size"]))
        obj.itos_ = list(state["itos"])
        obj.stoi_ = {tok: i for i, tok in enumerate(obj.itos_)}
        return obj
