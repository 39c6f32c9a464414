from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from medfuse.config import DataPolicy, DataSpec
from medfuse.data import load_table, read_image, read_table, validate_table
from medfuse.errors import DataError, DataValidationError, ImageDecodeError


def _with(spec: DataSpec, **policy: str) -> DataSpec:
    return spec.model_copy(update={"policy": DataPolicy(**policy)})


def _write(df: pd.DataFrame, root: Path, name: str = "t.csv") -> Path:
    path = root / name
    df.to_csv(path, index=False)
    return path


def test_clean_table_loads(tiny_dir: Path, tiny_spec: DataSpec) -> None:
    df, report = load_table(tiny_dir / "data.csv", tiny_spec)
    assert len(df) == 25 and report.rows_out == 25 and not report.dropped
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in df["image"])
    assert df["age"].dtype == float
    assert set(df["label"]) == {"benign", "malignant"}


def test_parquet_equals_csv(tiny_dir: Path, tiny_spec: DataSpec, tiny_df: pd.DataFrame) -> None:
    tiny_df.to_parquet(tiny_dir / "data.parquet")
    a, _ = load_table(tiny_dir / "data.csv", tiny_spec)
    b, _ = load_table(tiny_dir / "data.parquet", tiny_spec)
    pd.testing.assert_frame_equal(a, b)


def test_missing_table_and_bad_suffix(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"nope\.csv' does not exist"):
        read_table(tmp_path / "nope.csv")
    (tmp_path / "t.xlsx").write_text("x")
    with pytest.raises(DataError, match=r"suffix '\.xlsx'"):
        read_table(tmp_path / "t.xlsx")


def test_missing_column_named_with_suggestion(tiny_df: pd.DataFrame, tiny_spec: DataSpec) -> None:
    spec = tiny_spec.model_copy(update={"text": "notes"})
    with pytest.raises(DataValidationError) as exc:
        validate_table(tiny_df, spec, table="data.csv")
    msg = str(exc.value)
    assert "column 'notes'" in msg and "Did you mean 'note'?" in msg and "data.csv" in msg


def test_single_class_target(tiny_dir: Path, tiny_df: pd.DataFrame, tiny_spec: DataSpec) -> None:
    df = tiny_df.assign(label="benign")
    with pytest.raises(DataValidationError, match=r"column 'label'.*1 class\(es\) \['benign'\]"):
        validate_table(df, tiny_spec, root=tiny_dir, table="data.csv")


def test_missing_image_error_names_file_row_column(
    tiny_dir: Path, tiny_df: pd.DataFrame, tiny_spec: DataSpec
) -> None:
    df = tiny_df.copy()
    df.loc[3, "image"] = "img/gone.png"
    with pytest.raises(DataValidationError) as exc:
        validate_table(df, tiny_spec, root=tiny_dir, table="data.csv")
    msg = str(exc.value)
    assert "gone.png" in msg and "row 3" in msg and "column 'image'" in msg
    assert "data.policy.missing_image=drop" in msg


def test_missing_image_drop_is_counted(
    tiny_dir: Path, tiny_df: pd.DataFrame, tiny_spec: DataSpec
) -> None:
    df = tiny_df.copy()
    df.loc[[3, 5], "image"] = ["img/gone.png", None]
    clean, report = validate_table(
        df, _with(tiny_spec, missing_image="drop"), root=tiny_dir, table="data.csv"
    )
    assert len(clean) == 23
    assert report.dropped == {"missing_image": 2}
    assert report.to_dict()["rows_dropped"] == 2
    assert "dropped: missing_image=2" in report.summary()


def test_undecodable_image(tiny_dir: Path, tiny_df: pd.DataFrame, tiny_spec: DataSpec) -> None:
    (tiny_dir / "img" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    df = tiny_df.copy()
    df.loc[7, "image"] = "img/broken.png"
    with pytest.raises(DataValidationError) as exc:
        validate_table(df, tiny_spec, root=tiny_dir, table="data.csv")
    assert "broken.png' cannot be decoded" in str(exc.value) and "row 7" in str(exc.value)
    clean, report = validate_table(
        df, _with(tiny_spec, bad_image="drop"), root=tiny_dir, table="data.csv"
    )
    assert report.dropped == {"bad_image": 1} and len(clean) == 24
    with pytest.raises(ImageDecodeError, match=r"broken\.png"):
        read_image(tiny_dir / "img" / "broken.png")


def test_numbers_nan_inf_and_garbage(
    tiny_dir: Path, tiny_df: pd.DataFrame, tiny_spec: DataSpec
) -> None:
    df = tiny_df.copy()
    df["age"] = df["age"].astype(object)
    df.loc[2, "age"] = np.nan
    df.loc[4, "age"] = np.inf
    df.loc[6, "age"] = "forty"
    with pytest.raises(DataValidationError) as exc:
        validate_table(df, tiny_spec, root=tiny_dir, table="data.csv")
    msg = str(exc.value)
    assert "row 4, column 'age': value inf is infinite" in msg
    assert "row 6, column 'age': value 'forty' is not a number" in msg
    assert "row 2" not in msg  # NaN is kept (imputed) by default
    clean, report = validate_table(
        df, _with(tiny_spec, infinite_number="drop", bad_number="keep"), root=tiny_dir
    )
    assert len(clean) == 24
    assert report.dropped == {"infinite_number": 1}
    assert report.kept == {"missing_number": 1, "bad_number": 1}
    assert clean["age"].isna().sum() == 2
    with pytest.raises(DataValidationError, match="row 2, column 'age': value is missing"):
        validate_table(df, _with(tiny_spec, missing_number="error", infinite_number="drop",
                                 bad_number="keep"), root=tiny_dir)


def test_empty_text(tiny_dir: Path, tiny_df: pd.DataFrame, tiny_spec: DataSpec) -> None:
    df = tiny_df.copy()
    df.loc[1, "note"] = "   "
    df.loc[9, "note"] = np.nan
    clean, report = validate_table(df, tiny_spec, root=tiny_dir)
    assert report.kept == {"empty_text": 2} and clean.loc[9, "note"] == ""
    with pytest.raises(DataValidationError, match="row 1, column 'note': text is empty"):
        validate_table(df, _with(tiny_spec, empty_text="error"), root=tiny_dir)


def test_missing_target(tiny_dir: Path, tiny_df: pd.DataFrame, tiny_spec: DataSpec) -> None:
    df = tiny_df.copy()
    df.loc[0, "label"] = np.nan
    with pytest.raises(DataValidationError, match="row 0, column 'label': target is missing"):
        validate_table(df, tiny_spec, root=tiny_dir)
    clean, report = validate_table(df, _with(tiny_spec, missing_target="drop"), root=tiny_dir)
    assert len(clean) == 24 and report.dropped == {"missing_target": 1}


def test_prediction_table_without_target(
    tiny_dir: Path, tiny_df: pd.DataFrame, tiny_spec: DataSpec
) -> None:
    clean, _ = validate_table(tiny_df.drop(columns="label"), tiny_spec, root=tiny_dir,
                              require_target=False)
    assert "label" not in clean.columns


def test_bad_positive_label(tiny_dir: Path, tiny_df: pd.DataFrame, tiny_spec: DataSpec) -> None:
    spec = tiny_spec.model_copy(update={"positive": "malignent"})
    with pytest.raises(DataValidationError, match="Did you mean 'malignant'"):
        validate_table(tiny_df, spec, root=tiny_dir)


def test_integer_labels_with_gaps_become_clean_strings(tmp_path: Path) -> None:
    df = pd.DataFrame({"x": [1.0, 2.0, 3.0, 4.0], "y": [0, 1, None, 1]})
    path = _write(df, tmp_path)
    spec = DataSpec(tabular={"x": "continuous"}, target="y",
                    policy=DataPolicy(missing_target="drop"))
    clean, _ = load_table(path, spec)
    assert clean["y"].tolist() == ["0", "1", "1"]


def test_grayscale_16bit_and_dicom_become_rgb(tmp_path: Path, dicom_writer: Any) -> None:
    Image.fromarray(np.full((8, 8), 100, np.uint8)).save(tmp_path / "g.png")
    Image.fromarray(np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000).save(tmp_path / "w.png")
    for name in ("g.png", "w.png"):
        img = read_image(tmp_path / name)
        assert img.mode == "RGB" and img.size == (8, 8)
    ramp = np.tile(np.arange(16, dtype=np.uint16) * 200, (16, 1))
    for photometric, first_is_dark in (("MONOCHROME2", True), ("MONOCHROME1", False)):
        path = dicom_writer(tmp_path / f"{photometric}.dcm", ramp, photometric)
        arr = np.asarray(read_image(path))
        assert arr.shape == (16, 16, 3)
        assert bool(arr[0, 0, 0] < arr[0, -1, 0]) == first_is_dark
    # DICOM without the .dcm suffix is recognised by its magic bytes
    (tmp_path / "noext").write_bytes((tmp_path / "MONOCHROME2.dcm").read_bytes())
    assert read_image(tmp_path / "noext").mode == "RGB"


def test_missing_image_file_read(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"x\.png"):
        read_image(tmp_path / "x.png")
