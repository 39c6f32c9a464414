from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader

from medfuse.config import DataSpec
from medfuse.data import (
    MultimodalDataset,
    Preprocessor,
    TabularPreprocessor,
    Vocabulary,
    load_table,
    tokenize,
)
from medfuse.errors import DataError, NotFittedError


def test_tabular_fitted_on_training_rows_only() -> None:
    train = pd.DataFrame({"age": [10.0, 20.0, np.nan, 40.0], "site": ["a", "b", "a", None]})
    test = pd.DataFrame({"age": [1000.0, np.nan], "site": ["zzz", "b"]})
    tp = TabularPreprocessor({"age": "continuous", "site": "categorical"}).fit(train)
    assert tp.medians_["age"] == 20.0  # median of training rows; the test's 1000 is never seen
    assert tp.categories_["site"] == ["a", "b"]
    assert tp.cardinalities == [3]
    assert tp.continuous_names == ["age", "age__missing"]
    codes, cont = tp.transform(test)
    assert codes[:, 0].tolist() == [0, 2]  # unseen category -> unknown bucket 0
    assert cont[1, 1] == 1.0 and cont[0, 1] == 0.0  # missing indicator
    assert cont[1, 0] == pytest.approx((20.0 - tp.means_["age"]) / tp.scales_["age"])
    _, train_cont = tp.transform(train)
    assert train_cont[:, 0].mean() == pytest.approx(0.0, abs=1e-6)
    assert train_cont[:, 0].std() == pytest.approx(1.0, abs=1e-5)


def test_tabular_json_roundtrip_identical() -> None:
    rng = np.random.default_rng(1)
    df = pd.DataFrame({"x": rng.normal(size=50), "c": rng.choice(["u", "v", "w"], 50)})
    df.loc[::7, "x"] = np.nan
    tp = TabularPreprocessor({"x": "continuous", "c": "categorical"}).fit(df)
    back = TabularPreprocessor.from_dict(json.loads(json.dumps(tp.to_dict())))
    for a, b in zip(tp.transform(df), back.transform(df), strict=True):
        np.testing.assert_array_equal(a, b)


def test_not_fitted_and_missing_column() -> None:
    tp = TabularPreprocessor({"x": "continuous"})
    with pytest.raises(NotFittedError, match="fit"):
        tp.transform(pd.DataFrame({"x": [1.0]}))
    tp.fit(pd.DataFrame({"x": [1.0, 2.0]}))
    with pytest.raises(DataError, match=r"\['x'\] missing"):
        tp.transform(pd.DataFrame({"y": [1.0]}))


def test_vocabulary() -> None:
    vocab = Vocabulary(min_freq=2).fit(["No effusion.", "no EFFUSION seen", "cardiomegaly"])
    assert vocab.itos_[:2] == ["<pad>", "<unk>"]
    assert set(vocab.itos_[2:]) == {"no", "effusion"}
    ids = vocab.encode("No  cardiomegaly", max_len=3)
    assert ids == [vocab.stoi_["no"], 1, 0]
    assert vocab.decode(ids) == ["no", "<unk>"]
    assert Vocabulary.from_dict(json.loads(json.dumps(vocab.to_dict()))).itos_ == vocab.itos_
    assert tokenize("Heart size: NORMAL. Don't") == ["heart", "size", "normal", "don't"]


def test_preprocessor_save_load_and_dataset(
    tmp_path: Path, tiny_dir: Path, tiny_spec: DataSpec
) -> None:
    df, _ = load_table(tiny_dir / "data.csv", tiny_spec)
    pre = Preprocessor(tiny_spec, max_tokens=8, min_token_freq=1).fit(df.iloc[:16])
    assert pre.classes_ == ["benign", "malignant"]  # positive class last
    pre.save(tmp_path / "preprocess.json")
    back = Preprocessor.load(tmp_path / "preprocess.json")
    a, b = MultimodalDataset(df, pre), MultimodalDataset(df, back)
    for key, value in a[3].items():
        assert torch.equal(value, b[3][key]), key
    batch = next(iter(DataLoader(a, batch_size=5)))
    assert set(batch) == {"image", "tabular_cat", "tabular_cont", "text", "present", "target"}
    assert batch["image"].shape == (5, 3, 224, 224)
    assert batch["tabular_cat"].dtype == torch.long and batch["text"].shape == (5, 8)
    dcm = MultimodalDataset(df[df["image"].str.endswith(".dcm")], pre)
    assert dcm[0]["image"].shape == (3, 224, 224)


@pytest.mark.parametrize(
    ("modalities", "keys"),
    [
        ({"image": "image"}, {"image", "target"}),
        ({"tabular": {"age": "continuous"}}, {"tabular_cat", "tabular_cont", "target"}),
        ({"text": "note"}, {"text", "target"}),
        ({"text": "note", "tabular": {"sex": "categorical"}},
         {"text", "tabular_cat", "tabular_cont", "target"}),
    ],
)
def test_dataset_has_only_present_modalities(
    tiny_dir: Path, modalities: dict[str, object], keys: set[str]
) -> None:
    spec = DataSpec.model_validate({"target": "label", **modalities})
    df, _ = load_table(tiny_dir / "data.csv", spec)
    ds = MultimodalDataset(df, Preprocessor(spec, min_token_freq=1).fit(df))
    assert set(ds[0]) == keys | {"present"}  # which modalities the row has
    assert ds[0]["present"].tolist() == [1.0] * len(spec.modalities)
    unlabelled = MultimodalDataset(df.drop(columns="label"), ds.pre)[0]
    assert set(unlabelled) == keys - {"target"} | {"present"}


def test_unseen_label_is_an_error(tiny_dir: Path, tiny_spec: DataSpec) -> None:
    df, _ = load_table(tiny_dir / "data.csv", tiny_spec)
    pre = Preprocessor(tiny_spec).fit(df)
    with pytest.raises(DataError, match=r"label\(s\) \['unknown'\] not seen"):
        pre.encode_target(pd.Series(["benign", "unknown"]))
