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
    except Exception as exc:
        raise DataError(f"cannot read table '{p}': {type(exc).__name__}: {exc}") from exc
    if df.columns.duplicated().any():
        dups = sorted(set(df.columns[df.columns.duplicated()]))
        raise DataError(f"table '{p}' has duplicated column names {dups}; rename them")
    return df.reset_index(drop=True)
