"""Text features of a hybrid model, fitted on the training texts only.

* ``tfidf``: word 1-2-grams, then ``text_components`` SVD components (0 keeps the sparse
  TF-IDF);
* ``word2vec``: the mean of word vectors trained on the training texts;
* ``minilm``: frozen MiniLM sentence embeddings, cached on disk by text content.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from medfuse.encoders.text import MiniLMEncoder, MiniLMTokenizer, train_word2vec
from medfuse.estimators.hybrid.features import FeatureCache


def fit_text_views(texts: list[str], views: Sequence[str], vocab: Any, min_token_freq: int,
                   text_components: int, embed_dim: int, seed: int
                   ) -> tuple[Any, np.ndarray | None]:
    """The fitted TF-IDF(+SVD) pipeline and word2vec vectors of the ``views`` asked for
    (``None`` for a view not asked for); MiniLM has nothing to fit."""
    text_model, word_vectors = None, None
    if "tfidf" in views:
        from sklearn.decomposition import TruncatedSVD
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.pipeline import Pipeline

        tfidf = TfidfVectorizer(ngram_range=(1, 2), min_df=min(min_token_freq, 2),
                                sublinear_tf=True, max_features=50000)
        steps: list[tuple[str, Any]] = [("tfidf", tfidf)]
        if text_components:
            n_terms = len(tfidf.fit(texts).vocabulary_)
            k = max(1, min(text_components, n_terms - 1, len(texts) - 1))
            steps.append(("svd", TruncatedSVD(k, random_state=seed)))
        text_model = Pipeline(steps).fit(texts)
    if "word2vec" in views:
        word_vectors = train_word2vec(texts, vocab, dim=embed_dim, seed=seed)
    return text_model, word_vectors


class MiniLMViews:
    """Frozen MiniLM sentence embeddings ``(n, 384)``; the network loads on first use."""

    def __init__(self, max_tokens: int) -> None:
        self.max_tokens = max_tokens
        self.key = {"text_encoder": "all-MiniLM-L6-v2", "max_tokens": max_tokens,
                    "torch": torch.__version__.split("+")[0]}
        self._net: tuple[MiniLMTokenizer, MiniLMEncoder] | None = None

    def __call__(self, texts: list[str], cache: FeatureCache | None = None) -> np.ndarray:
        digests = [hashlib.sha1(t.encode(), usedforsecurity=False).hexdigest() for t in texts]
        found = {d: v for d in set(digests) if cache and (v := cache.get(d)) is not None}
        todo = list({d: t for d, t in zip(digests, texts, strict=True) if d not in found}.items())
        if todo:
            if self._net is None:
                self._net = (MiniLMTokenizer(self.max_tokens), MiniLMEncoder().eval())
            tok, enc = self._net
            with torch.inference_mode():
                for i in range(0, len(todo), 128):
                    chunk = todo[i:i + 128]
                    ids = torch.from_numpy(tok.encode_batch([t for _, t in chunk]))
                    for (d, _), v in zip(chunk, enc(ids).float().numpy(), strict=True):
                        found[d] = v
                        if cache is not None:
                            cache.put(d, v)
        return np.stack([found[d] for d in digests]).astype(np.float32)
