"""Token attributions of a fused model's text input, and their HTML / PNG views.

Method: captum ``LayerIntegratedGradients`` on the text encoder's embedding layer
(:class:`~medfuse.encoders.text.WordCNNEncoder` ``.embedding``, or
:class:`~medfuse.encoders.text.MiniLMEncoder` ``.embeddings_layer``), the other modalities
held at their values, explaining the class probability. Baseline: padding ids (id 0) for
the word-CNN, whose padding embedding is the zero vector; for MiniLM every word piece is
replaced by ``[PAD]`` but ``[CLS]`` / ``[SEP]`` are kept (the usual BERT baseline; it
also keeps the sequence length the encoder trims to). A token's score is its
attribution summed over the embedding dimensions; the ``(tokens x dims)`` matrix is kept
for :func:`heatmap_html` / :func:`heatmap_png`. Several text views (``wordcnn+minilm``)
are explained one at a time.

>>> html = words_html([{"token": "grown", "score": 0.4}, {"token": "stable", "score": -0.2}])
>>> "grown" in html and html.startswith("<!DOCTYPE html>")
True
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from medfuse.data.text import tokenize
from medfuse.errors import ConfigError
from medfuse.explain._common import BatchForward, split_batch, targets
from medfuse.explain.pages import render


@dataclass
class TokenAttribution:
    """One row's attributions for one text view.

    Attributes
    ----------
    view:
        ``vocab`` (word ids of the word-CNN) or ``minilm`` (word pieces).
    tokens:
        The row's non-padding tokens (special tokens such as ``[CLS]`` left out).
    scores:
        ``(n_tokens,)`` attribution per token (sum over the embedding dimensions).
    matrix:
        ``(n_tokens, embed_dim)`` attributions per embedding dimension.
    """

    view: str
    tokens: list[str]
    scores: np.ndarray
    matrix: np.ndarray

    def words(self) -> list[dict[str, Any]]:
        """``[{"token", "score"}]`` in text order."""
        return [{"token": t, "score": float(s)} for t, s in zip(self.tokens, self.scores,
                                                                 strict=True)]


def text_views(model: nn.Module) -> list[tuple[int | None, nn.Module, str]]:
    """``(view index or None, embedding layer, tokenizer kind)`` of a model's text encoder."""
    from medfuse.encoders.text import MiniLMEncoder, MultiViewTextEncoder, WordCNNEncoder

    encoders = getattr(model, "encoders", {})
    if "text" not in encoders:
        raise ConfigError("this model has no text input: text explanations need a model "
                          "trained with a text column (spec.text).")
    enc = encoders["text"]
    views: list[tuple[int | None, nn.Module]] = (
        list(enumerate(enc.views)) if isinstance(enc, MultiViewTextEncoder) else [(None, enc)]
    )
    out: list[tuple[int | None, nn.Module, str]] = []
    for i, view in views:
        if isinstance(view, WordCNNEncoder):
            out.append((i, view.embedding, "vocab"))
        elif isinstance(view, MiniLMEncoder):
            out.append((i, view.embeddings_layer, "minilm"))
        else:
            raise ConfigError(f"cannot explain text encoder {type(view).__name__}: it has no "
                              "known embedding layer (WordCNNEncoder or MiniLMEncoder).")
    return out


def _minilm_tokenizer(pre: Any) -> Any:
    tok = getattr(pre, "_minilm", None)
    if tok is None:
        from medfuse.encoders.text import MiniLMTokenizer

        tok = MiniLMTokenizer(max_len=getattr(pre, "max_tokens", 128))
    return tok.tokenizer


def token_attributions(
    model: nn.Module,
    batch: dict[str, torch.Tensor],
    target: int | Sequence[int] | torch.Tensor,
    pre: Any,
    steps: int = 32,
    internal_batch_size: int = 8,
    texts: Sequence[str] | None = None,
) -> list[list[TokenAttribution]]:
    """Layer integrated gradients per row and text view (see the module docstring).

    Parameters
    ----------
    model:
        A :class:`~medfuse.fusion.FusionModel` with a ``text`` encoder.
    batch:
        Its input batch; ``text`` holds token ids (``(B, L)``, or ``(B, views, L)``).
    target:
        Class index explained (one, or one per row).
    pre:
        The fitted :class:`~medfuse.data.preprocess.Preprocessor` (``vocab_.itos_`` names
        word ids; the MiniLM tokenizer names word pieces).
    steps, internal_batch_size:
        Interpolation steps, and how many are forwarded at once.
    texts:
        The rows' raw texts: word-id tokens are then named by the words of the text
        (a word outside the vocabulary keeps its own name, not ``<unk>``, though the model
        saw ``<unk>``).

    Returns
    -------
    list of list of TokenAttribution
        ``out[row][view]``.
    """
    from captum.attr import LayerIntegratedGradients

    model.eval()
    keys, (text,), rest = split_batch(batch, ("text",))
    fwd = BatchForward(model, keys)
    tgt = targets(target, text.shape[0])
    out: list[list[TokenAttribution]] = [[] for _ in range(text.shape[0])]
    for view, layer, kind in text_views(model):
        ids = text if view is None else text[:, view]
        tok = _minilm_tokenizer(pre) if kind == "minilm" else None
        special = set(tok.all_special_ids) - {0} if tok is not None else set()
        base_ids = torch.where(torch.isin(ids, torch.tensor(sorted(special), dtype=ids.dtype)),
                               ids, torch.zeros_like(ids))
        baseline = base_ids if view is None else text.clone()
        if view is not None:
            baseline[:, view] = base_ids
        lig = LayerIntegratedGradients(fwd, layer)
        attr = lig.attribute(text, baselines=baseline, target=tgt, n_steps=steps,
                             internal_batch_size=internal_batch_size,
                             additional_forward_args=rest or None)
        attr = attr.detach().float().cpu().numpy().astype(np.float64)  # (B, L', E)
        for r in range(text.shape[0]):
            row_ids = ids[r, : attr.shape[1]].tolist()
            pos = [p for p, i in enumerate(row_ids) if i != 0 and i not in special]
            sel = [row_ids[p] for p in pos]
            if tok is None and texts is not None:
                words = tokenize(str(texts[r]))
                tokens = [words[p] if p < len(words) else pre.vocab_.itos_[i]
                          for p, i in zip(pos, sel, strict=True)]
            elif tok is None:
                tokens = [pre.vocab_.itos_[i] for i in sel]
            else:
                tokens = list(tok.convert_ids_to_tokens(sel))
            matrix = attr[r, pos]
            out[r].append(TokenAttribution(kind, tokens, matrix.sum(1), matrix))
    return out


# ----------------------------------------------------------------------------- views

def words_html(words: Sequence[dict[str, Any]], title: str = "Token attributions") -> str:
    """A self-contained HTML page: the words shaded red (positive) / blue (negative)."""
    peak = max((abs(float(w["score"])) for w in words), default=0.0) or 1.0
    shaded = [{"rgb": "220,40,40" if float(w["score"]) >= 0 else "40,90,220",
               "alpha": f"{abs(float(w['score'])) / peak:.3f}",
               "score": f"{float(w['score']):+.4g}", "token": str(w["token"])} for w in words]
    return render("words.html.j2", title=title, words=shaded)


def _labels(tokens: Sequence[str]) -> list[str]:
    return [f"{i}: {t}" for i, t in enumerate(tokens)]


def heatmap_html(tokens: Sequence[str], matrix: np.ndarray,
                 title: str = "Attribution per token and embedding dimension") -> str:
    """Zoomable plotly heatmap (tokens x embedding dims), plotly.js inlined (works offline)."""
    import plotly.graph_objects as go

    m = np.asarray(matrix, dtype=np.float64).reshape(len(tokens), -1)
    peak = float(np.abs(m).max()) if m.size else 1.0
    fig = go.Figure(go.Heatmap(
        z=m, y=list(range(len(tokens))), colorscale="RdBu", reversescale=True, zmid=0.0,
        zmin=-peak, zmax=peak, colorbar={"title": "attribution"},
        hovertemplate="token %{y}<br>dim %{x}<br>%{z:.3g}<extra></extra>",
    ))
    fig.update_layout(
        title=title, xaxis_title="embedding dimension",
        height=max(300, 24 * len(tokens) + 150),
        yaxis={"tickmode": "array", "tickvals": list(range(len(tokens))),
               "ticktext": _labels(tokens), "autorange": "reversed"},
    )
    return str(fig.to_html(include_plotlyjs=True, full_html=True))


def heatmap_png(tokens: Sequence[str], matrix: np.ndarray,
                title: str = "Attribution per token and embedding dimension") -> bytes:
    """The same heatmap as a PNG (matplotlib Figure API, Agg)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    m = np.asarray(matrix, dtype=np.float64).reshape(len(tokens), -1)
    peak = float(np.abs(m).max()) if m.size and np.abs(m).max() > 0 else 1.0
    fig = Figure(figsize=(9, max(2.5, 0.28 * len(tokens) + 1.2)))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(m if m.size else np.zeros((1, 1)), aspect="auto", cmap="RdBu_r",
                   vmin=-peak, vmax=peak, interpolation="nearest")
    ax.set_yticks(range(len(tokens)), _labels(tokens), fontsize=8)
    ax.set_xlabel("embedding dimension")
    ax.set_title(title, fontsize=10)
    fig.colorbar(im, ax=ax, fraction=0.03)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return buf.getvalue()


def word_importance(
    explanations: Sequence[dict[str, Any]], min_count: int = 5, z: float = 1.96,
) -> list[dict[str, Any]]:
    """Which words reliably raise the explained score across many explanations.

    Pools the per-token scores of ``explanations`` (the ``words`` lists that
    :func:`medfuse.explain.explain` returns, one per row) by token and ranks tokens by the
    lower confidence bound of their mean score, ``mean - z * sd / sqrt(count)``: a word
    ranks high when its attribution is high *and* consistent. A plain mean ranks function
    words ("again", "most") that a word-CNN's 3- to 5-gram filters credit with part of
    their neighbour's evidence; their scores vary in sign with the context, so their lower
    bound is low.

    Parameters
    ----------
    explanations:
        Entries with a ``words`` list of ``{"token", "score"}``.
    min_count:
        Ignore tokens seen fewer times.
    z:
        Width of the bound in standard errors (1.96: a 95 % normal bound).

    Returns
    -------
    list of dict
        ``{"token", "count", "mean", "sem", "lower"}`` sorted by ``lower``, descending.

    >>> ex = [{"words": [{"token": "effusion", "score": s}, {"token": "the", "score": t}]}
    ...       for s, t in [(0.9, 0.9), (1.0, -0.5), (1.1, 0.8)]]
    >>> [w["token"] for w in word_importance(ex, min_count=3)]
    ['effusion', 'the']
    """
    if min_count < 2:
        raise ConfigError(f"The 'min_count' parameter must be >= 2 (a standard error needs two "
                          f"scores). Got {min_count!r}.")
    scores: dict[str, list[float]] = {}
    for entry in explanations:
        for w in entry.get("words") or []:
            scores.setdefault(str(w["token"]), []).append(float(w["score"]))
    table = []
    for token, s in scores.items():
        if len(s) < min_count:
            continue
        a = np.asarray(s)
        sem = float(a.std(ddof=1) / np.sqrt(len(a)))
        mean = float(a.mean())
        table.append({"token": token, "count": len(a), "mean": mean, "sem": sem,
                      "lower": mean - z * sem})
    return sorted(table, key=lambda r: -r["lower"])
