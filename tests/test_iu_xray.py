"""Tests of the offline IU X-ray table built from torchxrayvision's data files."""

from __future__ import annotations

import importlib.util

import pandas as pd
import pytest

from medfuse.data import iu_xray
from medfuse.errors import DatasetNotAvailableError

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("torchxrayvision") is None,
    reason="needs the torchxrayvision data files (pip install --no-deps torchxrayvision==1.5.7)",
)

N_REPORTS = 3955
N_ABNORMAL, N_NORMAL = 2564, 1391
N_EMPTY_REPORTS = 28  # reports with neither FINDINGS nor IMPRESSION (all labelled normal)
N_NO_IMAGE = 104  # reports listing no parentImage -> no tabular values, patient_id = report_id
STRING_COLUMNS = ["report_id", "patient_id", "image_id", "report", "indication", "mesh"]
STRING_COLUMNS += ["view_position", "processing_code"]
FLOAT_COLUMNS = ["age", "kvp", "exposure", "rows", "columns"]


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return iu_xray.build_iu_xray_frame()


def test_shape_and_column_order(frame: pd.DataFrame) -> None:
    assert len(frame) == N_REPORTS
    assert list(frame.columns) == iu_xray.COLUMNS
    assert set(iu_xray.IU_XRAY_TABULAR) <= set(frame.columns)


def test_dtypes(frame: pd.DataFrame) -> None:
    for col in STRING_COLUMNS:
        assert pd.api.types.is_string_dtype(frame[col]), col
    for col in FLOAT_COLUMNS:
        assert frame[col].dtype == "float64", col
    assert pd.api.types.is_integer_dtype(frame["abnormal"])


def test_label_counts(frame: pd.DataFrame) -> None:
    counts = frame["abnormal"].value_counts()
    assert counts[1] == N_ABNORMAL
    assert counts[0] == N_NORMAL
    assert set(frame["abnormal"].unique()) == {0, 1}
    assert (frame.loc[frame["abnormal"] == 0, "mesh"] == "normal").all()


def test_ids_unique_and_sorted(frame: pd.DataFrame) -> None:
    assert frame["report_id"].is_unique
    numbers = frame["report_id"].str.removeprefix("CXR").astype(int)
    assert numbers.is_monotonic_increasing


def test_every_row_has_a_group(frame: pd.DataFrame) -> None:
    assert frame["patient_id"].notna().all()
    assert (frame["patient_id"] != "").all()
    fallback = frame["patient_id"] == frame["report_id"]
    assert fallback.sum() == N_NO_IMAGE
    assert frame.loc[fallback, "image_id"].isna().all()


def test_reports_non_empty_except_counted(frame: pd.DataFrame) -> None:
    for col in ("report", "indication", "mesh"):
        assert frame[col].notna().all(), col
    empty = frame["report"] == ""
    assert empty.sum() == N_EMPTY_REPORTS
    assert (frame.loc[empty, "abnormal"] == 0).all()
    assert frame.loc[~empty, "report"].str.match(r"^(Findings|Impression): \S").all()


def test_age_plausible_and_mostly_present(frame: pd.DataFrame) -> None:
    age = frame["age"].dropna()
    assert age.between(17.0, 100.0).all()
    # measured: 3851 / 3955 = 97.4 % (missing exactly for the reports without images)
    assert len(age) / len(frame) > 0.97
    assert frame["age"].isna().sum() == N_NO_IMAGE


def test_tabular_values_cleaned(frame: pd.DataFrame) -> None:
    for col in ("kvp", "exposure", "rows", "columns"):
        assert (frame[col].dropna() > 0).all(), col  # 0 = "not recorded" -> NaN
    views = set(frame["view_position"].dropna())
    assert views <= {"PA", "AP", "LL", "RL", "LATERAL", "LARGE LATERAL"}
    assert frame["view_position"].isin(["PA", "AP"]).sum() > 0.6 * len(frame)


def test_metadata_key_normalises_report_prefix() -> None:
    assert iu_xray._metadata_key("CXR1", "CXR1_1_IM-0001-3001") == "CXR1_IM-0001-3001"
    assert iu_xray._metadata_key("CXR10", "CXR10_IM-0002-1001") == "CXR10_IM-0002-1001"


def test_missing_package_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(iu_xray.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DatasetNotAvailableError, match="pip install --no-deps torchxrayvision"):
        iu_xray.build_iu_xray_frame()
