"""Property tests: fitted preprocessing survives its JSON round trip bit for bit."""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from medfuse.config import DataSpec  # noqa: E402
from medfuse.data.preprocess import ImageTransform, Preprocessor  # noqa: E402
from medfuse.data.tabular import TabularPreprocessor  # noqa: E402
from medfuse.data.text import Vocabulary, normalize_text, tokenize  # noqa: E402

SETTINGS = settings(max_examples=50, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=64),
    st.floats(min_value=-1e6, max_value=1e6),  # ordinary values, most of the time
    st.integers(-1000, 1000),
    st.none(),
    st.sampled_from(["", "n/a", "12.5", " 3 ", "1e3", "-0"]),  # text in a number column
)
categories = st.one_of(
    st.sampled_from(["a", "b", "female", "Male", " b", "b ", "<unknown>", "1", "1.0"]),
    st.text(max_size=6),  # any unicode, including unseen values at transform time
    st.integers(-3, 3),
    st.none(),
)
texts = st.one_of(
    st.text(max_size=40),
    st.lists(st.sampled_from(["lesion", "grown", "Stable", "NO", "effusion", "ça", "ﬁne",
                              "x-ray", "2x", "don't", "  ", "\t", "Ⅻ", "ǅ"]),
             max_size=10).map(" ".join),
    st.none(),
)


def round_trip(state: dict[str, Any]) -> dict[str, Any]:
    """Through JSON text, as preprocess.json stores it."""
    loaded: dict[str, Any] = json.loads(json.dumps(state, indent=1))
    return loaded


@st.composite
def tables(draw: st.DrawFn, min_rows: int = 1) -> tuple[dict[str, str], pd.DataFrame,
                                                         pd.DataFrame]:
    """(columns spec, training rows, new rows) with 1-4 mixed columns."""
    n_cols = draw(st.integers(1, 4))
    kinds = draw(st.lists(st.sampled_from(["continuous", "categorical"]), min_size=n_cols,
                          max_size=n_cols))
    names = draw(st.lists(st.text(min_size=1, max_size=5), min_size=n_cols, max_size=n_cols,
                          unique=True))
    columns = dict(zip(names, kinds, strict=True))

    def frame(n: int) -> pd.DataFrame:
        data = {c: draw(st.lists(numbers if k == "continuous" else categories,
                                 min_size=n, max_size=n))
                for c, k in columns.items()}
        return pd.DataFrame(data, dtype=object)

    return columns, frame(draw(st.integers(min_rows, 12))), frame(draw(st.integers(0, 8)))


@SETTINGS
@given(tables())
def test_tabular_transform_identical_after_json_round_trip(
    table: tuple[dict[str, str], pd.DataFrame, pd.DataFrame],
) -> None:
    columns, train, new = table
    fitted = TabularPreprocessor(columns).fit(train)
    loaded = TabularPreprocessor.from_dict(round_trip(fitted.to_dict()))
    assert loaded.cardinalities == fitted.cardinalities
    assert loaded.continuous_names == fitted.continuous_names
    for df in (train, new):
        (c1, v1), (c2, v2) = fitted.transform(df), loaded.transform(df)
        np.testing.assert_array_equal(c1, c2)
        np.testing.assert_array_equal(v1, v2)
        assert c1.dtype == np.int64 and v1.dtype == np.float32
        # unseen / missing categories go to the unknown bucket, codes stay in range
        for j, card in enumerate(fitted.cardinalities):
            assert ((c1[:, j] >= 0) & (c1[:, j] < card)).all()


@SETTINGS
@given(st.lists(texts, min_size=1, max_size=10), st.lists(texts, max_size=6),
       st.integers(1, 3), st.integers(1, 30), st.integers(1, 12))
def test_vocabulary_encoding_identical_after_json_round_trip(
    train: list[str | None], new: list[str | None], min_freq: int, max_size: int, max_len: int,
) -> None:
    clean = [t or "" for t in train]
    vocab = Vocabulary(min_freq, max_size).fit(clean)
    loaded = Vocabulary.from_dict(round_trip(vocab.to_dict()))
    assert len(loaded) == len(vocab) <= max_size + 2
    for batch in (clean, [t or "" for t in new]):
        ids = vocab.encode_batch(batch, max_len)
        np.testing.assert_array_equal(ids, loaded.encode_batch(batch, max_len))
        assert ids.shape == (len(batch), max_len) and ((ids >= 0) & (ids < len(vocab))).all()


@SETTINGS
@given(st.text(max_size=60))
def test_tokens_are_stable_under_normalisation(text: str) -> None:
    tokens = tokenize(text)
    assert tokenize(normalize_text(text)) == tokens
    assert tokenize(" ".join(tokens)) == tokens


@SETTINGS
@given(tables(min_rows=2), st.lists(texts, min_size=14, max_size=14),
       st.lists(st.sampled_from(["yes", "no", "maybe"]), min_size=14, max_size=14),
       st.sampled_from([None, "yes", "maybe"]))
def test_whole_preprocessor_identical_after_save_and_load(
    table: tuple[dict[str, str], pd.DataFrame, pd.DataFrame], notes: list[str | None],
    labels: list[str], positive: str | None,
) -> None:
    columns, train, new = table
    # keep the generated column names away from the text / target columns
    columns = {f"t_{c}": k for c, k in columns.items()}
    train, new = train.add_prefix("t_"), new.add_prefix("t_")
    train["note"], train["y"] = notes[: len(train)], labels[: len(train)]
    new["note"] = notes[: len(new)]
    spec = DataSpec(tabular=columns, text="note", target="y", positive=positive)
    pre = Preprocessor(spec, max_tokens=8, min_token_freq=1,
                       image=ImageTransform(96, (0.1, 0.2, 0.3), (0.9, 1.0, 1.1))).fit(train)
    with tempfile.TemporaryDirectory() as tmp:
        pre.save(Path(tmp) / "preprocess.json")
        loaded = Preprocessor.load(Path(tmp) / "preprocess.json")
    assert loaded.to_dict() == pre.to_dict()
    assert loaded.classes_ == pre.classes_ and loaded.image == pre.image
    for df in (train, new):
        np.testing.assert_array_equal(pre.encode_text(df["note"]), loaded.encode_text(df["note"]))
        for a, b in zip(pre.tabular_.transform(df), loaded.tabular_.transform(df),  # type: ignore[union-attr]
                        strict=True):
            np.testing.assert_array_equal(a, b)
    assert pre.encode_target(train["y"]).tolist() == loaded.encode_target(train["y"]).tolist()


@SETTINGS
@given(st.lists(numbers, min_size=1, max_size=10), st.lists(numbers, min_size=1, max_size=5))
def test_continuous_features_are_always_finite(train: list[Any], new: list[Any]) -> None:
    """Whatever the values (1e308, inf, text), features are finite float32: never inf / NaN
    into the network (which would make NaN probabilities)."""
    tp = TabularPreprocessor({"x": "continuous"}).fit(pd.DataFrame({"x": train}, dtype=object))
    _, cont = tp.transform(pd.DataFrame({"x": new}, dtype=object))
    assert np.isfinite(cont).all()
    assert all(math.isfinite(v) and v > 0 for v in tp.scales_.values())
