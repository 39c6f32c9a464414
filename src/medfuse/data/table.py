"""Reading a table (CSV or Parquet) with errors that name the file."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from medfuse.errors import DataError, format_options

TABLE_SUFFIXES = (".csv", ".tsv", ".parquet", ".pq")


def read_table(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read a CSV / TSV / Parquet table; the index is reset to 0..n-1.

    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "t.csv"
    >>> _ = p.write_text("a,b\\n1,x\\n")
    >>> read_table(p).shape
    (1, 2)
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(
            f"table '{p}' does not exist. Give the path of a CSV or Parquet file "
            "(relative paths are read from the current directory)."
        )
    suffix = p.suffix.lower()
    if p.stat().st_size == 0:
        raise DataError(
            f"table '{p}' is empty (0 bytes): it needs a header line with the column names "
            "and one line per row; export it again"
        )
    try:
        if suffix == ".csv":
            df = pd.read_csv(p, keep_default_na=True)
        elif suffix == ".tsv":
            df = pd.read_csv(p, sep="\t", keep_default_na=True)
        elif suffix in (".parquet", ".pq"):
            df = pd.read_parquet(p)
        else:
            raise DataError(
                f"table '{p}' has suffix '{suffix}'; supported: {format_options(TABLE_SUFFIXES)}"
            )
    except DataError:
        raise
    except UnicodeDecodeError:
        raise DataError(_not_utf8(p)) from None
    except Exception as exc:
        raise DataError(f"cannot read table '{p}': {type(exc).__name__}: {exc}") from exc
    if df.columns.duplicated().any():
        dups = sorted(set(df.columns[df.columns.duplicated()]))
        raise DataError(f"table '{p}' has duplicated column names {dups}; rename them")
    if len(df) == 0:
        raise DataError(
            f"table '{p}' has a header ({len(df.columns)} column(s)) but no data rows; "
            "add rows, or check that the right file was given"
        )
    return df.reset_index(drop=True)


def _not_utf8(path: Path) -> str:
    """Say where the first non-UTF-8 byte is and how to re-encode the file."""
    where = ""
    with open(path, "rb") as fh:
        for number, line in enumerate(fh, 1):  # b"\n" never occurs inside a UTF-8 sequence
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as exc:
                where = (f" (line {number}, byte {exc.start + 1} of the line: "
                         f"{line[exc.start:exc.start + 1]!r})")
                break
    return (
        f"table '{path}' is not UTF-8 text{where}; medfuse reads tables as UTF-8. Re-save "
        "it as UTF-8 (e.g. Excel: 'CSV UTF-8'; or `iconv -f latin1 -t utf-8 in.csv > "
        "out.csv` for a Latin-1 / Windows-1252 file)"
    )
