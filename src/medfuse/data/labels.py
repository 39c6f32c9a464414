"""Multi-label targets: several findings per row, held as one column of joined labels.

A multi-label table gives its labels either as one 0/1 column per label
(``data.targets``) or as one column of labels joined by a separator
(``data.target`` + ``data.label_sep``, e.g. ``"Lung|Opacity"``; an empty cell means
none of the labels). Validation turns the first form into the second, so from
there on every layer sees one target column of strings, as for single-label tasks,
and :func:`multi_hot` turns it into the ``(n, n_labels)`` 0/1 matrix models learn.

>>> import pandas as pd
>>> df = pd.DataFrame({"Lung": [1, 0, 1], "Aorta": [0, 0, 1]})
>>> join_label_columns(df, ["Lung", "Aorta"]).tolist()
['Lung', '', 'Lung|Aorta']
>>> multi_hot(pd.Series(["Lung", "", "Lung|Aorta"]), ["Lung", "Aorta"]).tolist()
[[1, 0], [0, 0], [1, 1]]
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from medfuse.config.data import MULTILABEL_SEP, DataSpec
from medfuse.errors import DataError, DataProblem, did_you_mean

#: separators users commonly join labels with, suggested when ``data.label_sep`` never occurs
COMMON_SEPARATORS = ("|", ";", ",", "/", "+")
_TRUE = frozenset({"1", "1.0", "true", "yes"})
_FALSE = frozenset({"0", "0.0", "false", "no"})


def binary_column_problems(values: pd.Series, column: str, table: str
                           ) -> tuple[np.ndarray, list[DataProblem]]:
    """0/1 values of one label column, and a problem per missing or non-0/1 cell.

    Accepted: ``0`` / ``1`` (int, float or text), ``True`` / ``False``, ``yes`` / ``no``.
    Missing cells are ``missing_target`` problems (``data.policy.missing_target``);
    anything else is a ``bad_label`` problem, always an error.
    """
    text = values.astype(str).str.strip().str.lower()
    missing = values.isna().to_numpy() | (text == "").to_numpy()
    ones, zeros = text.isin(_TRUE).to_numpy(), text.isin(_FALSE).to_numpy()
    problems = [DataProblem("missing_target", "label value is missing", int(i), column, table)
                for i in np.flatnonzero(missing)]
    for i in np.flatnonzero(~(ones | zeros | missing)):
        problems.append(DataProblem(
            "bad_label", f"value {values.iloc[i]!r} is not 0 or 1 (each data.targets "
            "column says whether the row has that label)", int(i), column, table))
    return ones.astype(np.int8), problems


def join_label_columns(df: pd.DataFrame, columns: Sequence[str],
                       sep: str = MULTILABEL_SEP) -> pd.Series:
    """The labels of each row (the columns holding 1), joined by ``sep``, in column order."""
    hot = np.column_stack([binary_column_problems(df[c], c, "")[0] for c in columns])
    names = np.asarray(columns, dtype=object)
    return pd.Series([sep.join(names[row.astype(bool)]) for row in hot], index=df.index,
                     dtype=object)


def split_labels(values: pd.Series, sep: str = MULTILABEL_SEP) -> list[list[str]]:
    """Each row's labels: split on ``sep``, stripped, blanks and repeats dropped."""
    out = []
    for value in values.fillna("").astype(str):
        labels = [part.strip() for part in value.split(sep)]
        out.append(list(dict.fromkeys(x for x in labels if x)))
    return out


def label_names(values: pd.Series, sep: str = MULTILABEL_SEP) -> list[str]:
    """Every label that occurs, sorted."""
    return sorted({x for row in split_labels(values, sep) for x in row})


def multi_hot(values: pd.Series, labels: Sequence[str], sep: str = MULTILABEL_SEP,
              column: str = "target") -> np.ndarray:
    """``(n, len(labels))`` 0/1 int matrix of joined-label strings.

    A label not in ``labels`` is an error naming it, its row count and the known labels.
    """
    index = {name: j for j, name in enumerate(labels)}
    rows = split_labels(values, sep)
    unknown = sorted({x for row in rows for x in row} - set(index))
    if unknown:
        count = sum(unknown[0] in row for row in rows)
        raise DataError(
            f"target column '{column}' has label(s) {unknown} not seen in training (e.g. "
            f"{unknown[0]!r} in {count} row(s)); known labels: {list(labels)}."
            f"{did_you_mean(unknown[0], labels)} Fix or drop those rows, or use "
            "`medfuse predict`, which needs no labels"
        )
    out = np.zeros((len(rows), len(labels)), dtype=np.int64)
    for i, row in enumerate(rows):
        out[i, [index[x] for x in row]] = 1
    return out


def check_label_counts(hot: np.ndarray, labels: Sequence[str], where: str,
                       fix: str) -> None:
    """Every label must be positive in some rows and negative in others of ``where``."""
    positives = hot.sum(axis=0)
    never = [f"'{n}'" for n, k in zip(labels, positives, strict=True) if k == 0]
    always = [f"'{n}'" for n, k in zip(labels, positives, strict=True) if k == len(hot)]
    if never or always:
        parts = []
        if never:
            parts.append(f"label(s) {', '.join(never)} never positive")
        if always:
            parts.append(f"label(s) {', '.join(always)} positive in every row")
        raise DataError(f"{' and '.join(parts)} in the {len(hot)} {where}: a per-label "
                        f"classifier cannot learn a label without both outcomes. {fix}")


def separator_problem(values: pd.Series, sep: str, column: str) -> str | None:
    """A message when ``sep`` joins no two labels in any row while another common
    separator seems to, or the column holds one label per row (a multi-class target)."""
    text = values.fillna("").astype(str)
    if text.str.contains(sep, regex=False).any():
        return None
    seen = [s for s in COMMON_SEPARATORS if s != sep and text.str.contains(s, regex=False).any()]
    found = f" ('{seen[0]}' does, e.g. {text[text.str.contains(seen[0], regex=False)].iloc[0]!r})" \
        if seen else ""
    return (f"data.label_sep={sep!r} never occurs in column '{column}'{found}: no row has "
            f"two labels. Set data.label_sep to the separator the column uses, or remove "
            "data.label_sep for a single-label (multi-class) target")


def stratification_target(df: pd.DataFrame, spec: DataSpec) -> np.ndarray:
    """What splits stratify on: the label strings, or for a multi-label spec the
    ``(n, L)`` 0/1 matrix over every label that occurs (names only, no statistics)."""
    values = df[spec.target]
    if not spec.multilabel:
        return values.astype(str).to_numpy()
    labels = list(spec.targets) if spec.targets else label_names(values, spec.separator)
    return multi_hot(values, labels, spec.separator, spec.target)


def target_column(df: pd.DataFrame, spec: DataSpec) -> pd.Series:
    """The target column of ``df``; for ``data.targets`` the joined labels, made from the
    0/1 columns when the table has not been validated yet."""
    if spec.targets and spec.target not in df.columns and all(c in df for c in spec.targets):
        return join_label_columns(df, spec.targets, spec.separator)
    return df[spec.target]


def check_fold_labels(hot: np.ndarray, labels: Sequence[str],
                      splits: Sequence[tuple[np.ndarray, np.ndarray]],
                      groups: np.ndarray | None = None) -> None:
    """Refuse folds whose training rows never have (or always have) a label.

    Raised before any fold trains, naming the fold and the label, with how many rows and
    groups hold the label (a label in one patient only cannot be cross-validated).
    """
    for i, (train, _) in enumerate(splits):
        counts = hot[train].sum(axis=0)
        for j, name in enumerate(labels):
            if 0 < counts[j] < len(train):
                continue
            rows = np.flatnonzero(hot[:, j] == (1 if counts[j] == 0 else 0))
            n_groups = len(np.unique(groups[rows])) if groups is not None else len(rows)
            state = "never have" if counts[j] == 0 else "all have"
            other = "have it" if counts[j] == 0 else "lack it"
            raise DataError(
                f"fold {i}: the training rows {state} label '{name}' (the {len(rows)} rows "
                f"that {other} are in {n_groups} group(s), all among fold {i}'s test rows), "
                "so no per-label classifier can learn it there. Use fewer folds (--folds), "
                "add rows with and without the label, or drop it from data.targets.")
