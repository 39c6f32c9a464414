"""Validate a table against a :class:`~medfuse.config.DataSpec` before anything trains.

Every problem is reported with the table file, the row (0-based data row;
line ``row + 2`` of a CSV with a header), the column and, for images, the
image file. What happens to a problem row is set per kind of problem by
``DataSpec.policy`` (see :class:`~medfuse.config.DataPolicy`); dropped rows are
counted in the returned :class:`ValidationReport`, never lost silently.

Image paths of a table read from a file must stay inside the table's folder: an
absolute path elsewhere or a ``..`` path climbing out of it is always an error
(``outside_path``) unless ``DataSpec.allow_outside_paths``. Rows repeating an
earlier row's image file are kept and counted (``duplicate_image_rows``); splits
keep them together.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from medfuse.config import DataSpec
from medfuse.data.images import read_image
from medfuse.data.labels import (
    binary_column_problems,
    check_label_counts,
    join_label_columns,
    label_names,
    multi_hot,
    separator_problem,
)
from medfuse.errors import (
    DataError,
    DataProblem,
    DataValidationError,
    ImageDecodeError,
    did_you_mean,
)

log = logging.getLogger(__name__)

ImageCheck = Literal["decode", "exists", "none"]


@dataclass
class ValidationReport:
    """What validation found and did. ``to_dict`` goes into ``metrics.json``."""

    table: str
    rows_in: int
    rows_out: int = 0
    problems: list[DataProblem] = field(default_factory=list)
    dropped: dict[str, int] = field(default_factory=dict)
    kept: dict[str, int] = field(default_factory=dict)
    duplicate_image_rows: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "table": self.table,
            "rows_in": self.rows_in,
            "rows_out": self.rows_out,
            "rows_dropped": self.rows_in - self.rows_out,
            "dropped": dict(self.dropped),
            "kept_with_problems": dict(self.kept),
            "duplicate_image_rows": self.duplicate_image_rows,
        }

    def summary(self) -> str:
        parts = [f"{self.rows_out}/{self.rows_in} rows kept from '{self.table}'"]
        if self.dropped:
            parts.append("dropped: " + ", ".join(f"{k}={v}" for k, v in self.dropped.items()))
        if self.kept:
            parts.append("kept: " + ", ".join(f"{k}={v}" for k, v in self.kept.items()))
        if self.duplicate_image_rows:
            parts.append(f"rows repeating an earlier row's image: {self.duplicate_image_rows} "
                         "(kept, split together)")
        return "; ".join(parts)


def _missing_columns(df: pd.DataFrame, spec: DataSpec, table: str, require_target: bool) -> None:
    problems = []
    for role, col in spec.columns().items():
        if col in df.columns or (role.startswith("target") and not require_target):
            continue
        hint = did_you_mean(col, df.columns)
        problems.append(
            DataProblem(
                "missing_column",
                f"column '{col}' (data.{role.split(':')[0]}) is not in the table.{hint}",
                column=col,
                file=table,
            )
        )
    if problems:
        raise DataValidationError(
            table, problems, hint=f"Columns present: {list(map(str, df.columns))}"
        )


def _check_numbers(df: pd.DataFrame, spec: DataSpec, table: str, out: list[DataProblem]) -> None:
    for col in spec.continuous:
        raw = df[col]
        num = pd.to_numeric(raw, errors="coerce").astype(float)
        bad = num.isna() & raw.notna() & (raw.astype(str).str.strip() != "")
        for i in np.flatnonzero(bad.to_numpy()):
            out.append(
                DataProblem(
                    "bad_number", f"value {raw.iloc[i]!r} is not a number", int(i), col, table
                )
            )
        for i in np.flatnonzero(np.isinf(num.to_numpy())):
            out.append(
                DataProblem(
                    "infinite_number", f"value {num.iloc[i]} is infinite", int(i), col, table
                )
            )
        for i in np.flatnonzero((num.isna() & ~bad).to_numpy()):
            out.append(
                DataProblem("missing_number", "value is missing (NaN)", int(i), col, table)
            )
        df[col] = num.where(np.isfinite(num), np.nan)
    for col in spec.categorical:
        df[col] = as_category_strings(df[col])


def _check_text(df: pd.DataFrame, col: str, table: str, out: list[DataProblem]) -> None:
    text = df[col].fillna("").astype(str)
    for i in np.flatnonzero((text.str.strip() == "").to_numpy()):
        out.append(DataProblem("empty_text", "text is empty", int(i), col, table))
    df[col] = text


def _inside(path: Path, folder: Path) -> bool:
    """True if ``path`` is in ``folder``, comparing normalised absolute paths (``..``
    resolved lexically, so a symbolic link placed inside the folder is accepted)."""
    a, b = os.path.normpath(os.path.abspath(path)), os.path.normpath(os.path.abspath(folder))
    try:
        return os.path.commonpath([a, b]) == b
    except ValueError:  # different drives (Windows)
        return False


def _check_one_image(
    value: object, root: Path, check: ImageCheck, template: str | None = None,
    contain: Path | None = None,
) -> tuple[str, str | None, str]:
    """Return (resolved path, problem kind or None, detail) for one cell of the image column.

    With a ``template`` (e.g. ``jpeg/train/{}.jpg``), a value that is not an absolute path
    yet is put in it first, and the path is made absolute (validating again is a no-op).
    With ``contain``, a path outside that folder is an ``outside_path`` problem and the
    file is not even looked at.
    """
    if value is None or (isinstance(value, float) and np.isnan(value)) or str(value).strip() == "":
        return "", "missing_image", ""
    p = Path(str(value).strip())
    if template is not None and not p.is_absolute():
        p = (root / template.format(str(value).strip())).absolute()
    path = p if p.is_absolute() else root / p
    if contain is not None and not _inside(path, contain):
        return str(path), "outside_path", str(value).strip()
    if check == "none":
        return str(path), None, ""
    if not path.is_file():
        return str(path), "missing_image", ""
    if check == "decode":
        try:
            read_image(path, draft=64)
        except ImageDecodeError as exc:  # the reason, and any specific advice (bombs, ...)
            advice = "" if exc.hint == ImageDecodeError.default_hint else f". {exc.hint}"
            return str(path), "bad_image", f"{exc.reason}{advice}"
    return str(path), None, ""


def _check_images(
    df: pd.DataFrame, col: str, root: Path, table: str, check: ImageCheck, out: list[DataProblem],
    template: str | None = None, contain: Path | None = None,
) -> int:
    """Check the image column; return how many rows repeat an earlier row's image file."""
    values = df[col].tolist()
    if check == "decode":  # I/O + decoding: worth a thread pool
        workers = min(8, (os.cpu_count() or 1) * 2)
        with ThreadPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(
                lambda v: _check_one_image(v, root, check, template, contain), values))
    else:  # a stat per file: threads would only add overhead
        results = [_check_one_image(v, root, check, template, contain) for v in values]
    for i, (path, kind, detail) in enumerate(results):
        if kind == "missing_image":
            what = f"image file '{path}' does not exist" if path else "image path is empty"
            out.append(DataProblem(kind, what, i, col, path or table))
        elif kind == "bad_image":
            out.append(DataProblem(kind, f"image file '{path}' cannot be decoded: {detail}",
                                   i, col, path))
        elif kind == "outside_path":
            out.append(DataProblem(
                kind, f"image path {detail!r} leads outside the data folder '{contain}' "
                "(an absolute path elsewhere, or '..' climbing out of it); refused so a "
                "table cannot make medfuse read arbitrary files", i, col, table))
    df[col] = [r[0] for r in results]
    seen: dict[str, int] = {}
    repeats: list[tuple[int, int]] = []
    for i, (path, _, _) in enumerate(results):
        key = os.path.normpath(path) if path else ""
        if key and key in seen:
            repeats.append((i, seen[key]))
        seen.setdefault(key, i)
    if repeats:
        i, j = repeats[0]
        log.info("%d row(s) of '%s' repeat an earlier row's image file (e.g. row %d = row "
                    "%d); they are kept, and splits always keep them together", len(repeats),
                    table, i, j)
    return len(repeats)


def validate_table(
    df: pd.DataFrame,
    spec: DataSpec,
    root: str | os.PathLike[str] | None = None,
    table: str = "<table>",
    check_images: ImageCheck = "decode",
    require_target: bool = True,
    training: bool = True,
) -> tuple[pd.DataFrame, ValidationReport]:
    """Validate ``df`` against ``spec`` and apply the problem policies.

    Parameters
    ----------
    df:
        The raw table.
    spec:
        Which columns hold which modality, and the policy per problem kind.
    root:
        Folder that relative image paths are relative to (the table's folder).
    table:
        Name of the table used in messages.
    check_images:
        ``decode`` (open every image), ``exists`` (only check the file) or ``none``.
    require_target:
        False for prediction tables, which may lack the target column.
    training:
        Training tables need two or more classes (validation / test tables need not).

    Returns
    -------
    (clean, report):
        ``clean`` has numeric continuous columns (NaN where missing), string
        categories, non-null texts, absolute image paths and a fresh index.

    Raises
    ------
    DataValidationError
        Listing every problem whose policy is ``error``.
    """
    report = ValidationReport(table=table, rows_in=len(df))
    _missing_columns(df, spec, table, require_target)
    clean = df.copy()
    problems: list[DataProblem] = []
    if spec.targets and all(c in clean.columns for c in spec.targets):
        _join_targets(clean, spec, table, problems)
    has_target = spec.target in clean.columns
    if has_target and spec.label_sep is None and not spec.targets:  # empty = no label
        missing = clean[spec.target].isna() | (clean[spec.target].astype(str).str.strip() == "")
        for i in np.flatnonzero(missing.to_numpy()):
            problems.append(
                DataProblem("missing_target", "target is missing", int(i), spec.target, table)
            )
    _check_numbers(clean, spec, table, problems)
    if spec.text:
        _check_text(clean, spec.text, table, problems)
    if spec.image:
        contain = Path(root) if root is not None and not spec.allow_outside_paths else None
        report.duplicate_image_rows = _check_images(
            clean, spec.image, Path(root or "."), table, check_images, problems,
            spec.image_template, contain)
    if spec.group:
        groups = as_category_strings(clean[spec.group])
        n_missing = int(groups.isna().sum())
        if n_missing:  # a row without a group is its own group, never merged with others
            log.warning("%d row(s) have no '%s'; each is its own group", n_missing, spec.group)
            groups[groups.isna()] = [f"<row {i}>" for i in np.flatnonzero(groups.isna())]
        clean[spec.group] = groups

    # never dropped silently
    policy = {**spec.policy.model_dump(), "outside_path": "error", "bad_label": "error"}
    errors = [p for p in problems if policy[p.kind] == "error"]
    if errors:
        kinds = sorted({p.kind for p in errors} - {"outside_path", "bad_label"})
        options = {k: [o for o in ("drop", "keep") if _allowed(k, o)] for k in kinds}
        fixes = [f"data.policy.{k}={'|'.join(v)}" for k, v in options.items()]
        if any(p.kind == "outside_path" for p in errors):
            fixes.insert(0, "data.allow_outside_paths=true (only for a table you trust; "
                         "predict / evaluate / explain: --allow-outside-paths)")
        hint = "Fix the rows above"
        if fixes:
            hint += f", or set {'; '.join(fixes)} (e.g. --set {fixes[0].split(' ')[0]})"
        raise DataValidationError(table, errors, hint=hint)
    drop_rows: set[int] = set()
    for p in problems:
        if p.row is not None and policy[p.kind] == "drop":
            drop_rows.add(p.row)
    if spec.image and policy["missing_image"] == "keep":  # the row goes on with no image
        lacking = [p.row for p in problems if p.kind == "missing_image" and p.row is not None]
        clean.loc[clean.index[lacking], spec.image] = ""
    report.problems = problems
    report.dropped = dict(Counter(p.kind for p in problems if policy[p.kind] == "drop"))
    report.kept = dict(Counter(p.kind for p in problems if policy[p.kind] == "keep"))
    if drop_rows:
        clean = clean.drop(index=sorted(drop_rows))
    clean = clean.reset_index(drop=True)
    report.rows_out = len(clean)
    if has_target:
        clean[spec.target] = (clean[spec.target].fillna("").astype(str) if spec.multilabel
                              else labels_as_str(clean[spec.target]))
    if drop_rows:
        log.warning("validation: %s", report.summary())
    elif report.kept:
        log.info("validation: %s", report.summary())
    if has_target and require_target and training:
        _check_classes(clean, spec, table)
    return clean, report


def as_category_strings(values: pd.Series) -> pd.Series:
    """Category / label / group values as stripped strings, missing kept as NaN.

    Integral floats (``1.0``, as pandas reads an integer CSV column with gaps)
    become ``'1'``, so a table read from CSV and from Parquet give the same codes.
    """
    mask = values.notna().to_numpy()
    present = values[mask]
    if pd.api.types.is_bool_dtype(present):
        text = present.astype(int).astype(str)
    elif pd.api.types.is_float_dtype(present) and bool((present == present.round()).all()):
        text = present.astype(np.int64).astype(str)
    else:
        text = present.astype(str).str.strip()
    out = pd.Series(np.nan, index=values.index, dtype=object)
    out[mask] = text.to_numpy()
    out[out == ""] = np.nan
    return out


def labels_as_str(values: pd.Series) -> pd.Series:
    """Class labels as strings (see :func:`as_category_strings`)."""
    return as_category_strings(values).fillna("").astype(str)


def _allowed(kind: str, option: str) -> bool:
    from medfuse.config import DataPolicy

    annotation = DataPolicy.model_fields[kind].annotation
    return option in getattr(annotation, "__args__", ())


def _join_targets(df: pd.DataFrame, spec: DataSpec, table: str,
                  out: list[DataProblem]) -> None:
    """Write the labels of the ``data.targets`` 0/1 columns, joined, to ``data.target``."""
    assert spec.targets is not None
    problems = [p for col in spec.targets for p in binary_column_problems(df[col], col, table)[1]]
    if spec.target in df.columns:
        if not problems and df[spec.target].fillna("").astype(str).equals(
                join_label_columns(df, spec.targets).astype(str)):
            return  # validated before: the column holds these very labels
        raise DataValidationError(table, [DataProblem(
            "column_conflict", f"the table already has a column '{spec.target}', where the "
            "labels of data.targets would be joined", column=spec.target, file=table)],
            hint="Set data.target to an unused column name (e.g. --set data.target=findings).")
    out.extend(problems)
    df[spec.target] = join_label_columns(df, spec.targets)


def _check_multilabel(df: pd.DataFrame, spec: DataSpec, table: str) -> None:
    values = df[spec.target]
    if spec.label_sep is not None:
        message = separator_problem(values, spec.label_sep, spec.target)
        if message:
            raise DataValidationError(table, [DataProblem(
                "bad_separator", message, column=spec.target, file=table)])
    labels = list(spec.targets) if spec.targets else label_names(values, spec.separator)
    if not labels:
        raise DataValidationError(table, [DataProblem(
            "no_labels", f"column '{spec.target}' holds no label in any of {len(df)} rows",
            column=spec.target, file=table)], hint="Check data.target and data.label_sep.")
    try:
        check_label_counts(multi_hot(values, labels, spec.separator, spec.target), labels,
                           "rows after validation",
                           "Drop that label (from data.targets), or add rows that have it.")
    except DataError as exc:
        raise DataValidationError(table, [DataProblem(
            "single_class", str(exc), column=spec.target, file=table)]) from None


def _check_classes(df: pd.DataFrame, spec: DataSpec, table: str) -> None:
    if spec.multilabel:
        _check_multilabel(df, spec, table)
        return
    counts = df[spec.target].astype(str).value_counts().sort_index()
    classes = list(counts.index)
    if len(classes) < 2:
        rows = ", ".join(f"{k!r}: {v} row(s)" for k, v in counts.items()) or "no rows"
        raise DataValidationError(
            table,
            [
                DataProblem(
                    "single_class",
                    f"target has {len(classes)} class(es) {classes} after validation "
                    f"({rows} of {len(df)}); a classifier needs two or more",
                    column=spec.target,
                    file=table,
                )
            ],
            hint=f"Add rows of another class, check that data.target='{spec.target}' is "
            "the label column, or check the rows dropped by data.policy (see the log).",
        )
    if spec.positive is not None and spec.positive not in classes:
        raise DataValidationError(
            table,
            [
                DataProblem(
                    "bad_positive",
                    f"data.positive={spec.positive!r} is not a class of the target; classes: "
                    f"{classes}.{did_you_mean(spec.positive, classes)}",
                    column=spec.target,
                    file=table,
                )
            ],
        )
