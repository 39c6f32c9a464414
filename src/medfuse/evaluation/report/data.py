"""The data report (EDA): a table summarised against its data spec, and its plots.

:func:`data_report` summarises a table against its :class:`~medfuse.config.DataSpec`
(class balance, missing values, positive rate per category, continuous columns per
class, text lengths) as a JSON-able dict (the run's ``data_report.json``);
:func:`plot_data_report` draws it (PNG bytes, see :mod:`medfuse.evaluation.report.plots`).

>>> import pandas as pd
>>> from medfuse.config import DataSpec
>>> df = pd.DataFrame({"sex": ["F", "M", "M", None], "label": ["a", "b", "b", "a"]})
>>> rep = data_report(df, DataSpec(tabular={"sex": "categorical"}))
>>> rep["class_balance"], rep["missing"]
({'a': 2, 'b': 2}, {'label': 0, 'sex': 1})
>>> [(r["level"], r["positive_rate"]) for r in rep["positive_rate_by_category"]["sex"]]
[('F', 0.0), ('M', 1.0), ('(missing)', 0.0)]
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from medfuse.config import DataSpec
from medfuse.data.validation import as_category_strings
from medfuse.evaluation.report.formatting import mpl
from medfuse.evaluation.report.plots import COLORS, new_figure, to_png

__all__ = ["MAX_COLUMN_PLOTS", "MAX_LEVEL_BARS", "MISSING_LEVEL", "data_report",
           "plot_data_report"]

MISSING_LEVEL = "(missing)"
#: Per-column plots in the data report are capped (the tables hold every column).
MAX_COLUMN_PLOTS = 12
#: Levels drawn per positive-rate bar chart (the most frequent ones).
MAX_LEVEL_BARS = 20


def _jsonable(value: float) -> float | None:
    """A float for JSON: NaN / infinity become ``None``."""
    value = float(value)
    return value if math.isfinite(value) else None


def _positive_label(labels: Iterable[str], spec: DataSpec) -> str | None:
    if spec.positive is not None:
        return spec.positive
    ordered = sorted(labels)
    return ordered[-1] if ordered else None


def _describe_numbers(values: pd.Series) -> dict[str, Any]:
    arr = values.to_numpy(dtype=float)
    arr = arr[np.isfinite(arr)]
    if not len(arr):
        return {"n": 0, "mean": None, "std": None, "median": None, "q1": None, "q3": None,
                "min": None, "max": None}
    q1, median, q3 = np.percentile(arr, [25, 50, 75])
    return {
        "n": len(arr),
        "mean": _jsonable(arr.mean()),
        "std": _jsonable(arr.std(ddof=1)) if len(arr) > 1 else None,
        "median": _jsonable(median),
        "q1": _jsonable(q1),
        "q3": _jsonable(q3),
        "min": _jsonable(arr.min()),
        "max": _jsonable(arr.max()),
    }


def _missing_count(values: pd.Series) -> int:
    missing = values.isna()
    if values.dtype == object or pd.api.types.is_string_dtype(values):
        missing |= values.astype(str).str.strip().eq("") & values.notna()
    return int(missing.sum())


def data_report(
    df: pd.DataFrame, spec: DataSpec, duplicates: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Exploratory summary of a table against its data spec (JSON-able).

    Parameters
    ----------
    df
        The table (one row per case) holding every column ``spec`` names.
    spec
        Which columns are target, tabular (categorical / continuous), text, etc.
    duplicates
        Optional near-duplicate image summary passed through as is, e.g.
        ``{"groups": 909, "duplicate_groups": 626, "images_in_duplicate_groups": 2717,
        "hash_distance": 6}``.

    Returns
    -------
    dict
        ``n_rows``; ``target`` and ``positive`` (``spec.positive`` or the last label in
        sorted order); ``class_balance`` ``{label: count}``; ``missing`` ``{column:
        count}`` for every spec column (NaN or blank text); ``positive_rate_by_category``
        ``{column: [{"level", "n", "positive_rate"}]}`` per categorical column (levels
        sorted, missing values as ``"(missing)"`` last); ``continuous_by_class``
        ``{column: {label: {"n", "mean", "std", "median", "q1", "q3", "min", "max"}}}``;
        ``text_length`` ``{label: {"median_words", "mean_words"}}`` when ``spec.text``
        (``None`` otherwise); ``duplicates``. Rows with a missing target count only in
        ``n_rows`` and ``missing``. A multi-label spec (``multilabel`` True) counts each
        label's rows in ``class_balance``, ``continuous_by_class`` and ``text_length`` (a
        row counts for every label it has) and has no positive class, so
        ``positive_rate_by_category`` is empty.

    Raises
    ------
    DataError
        When a column of the spec is not in ``df``.
    """
    from medfuse.errors import DataError

    absent = [c for c in spec.columns().values() if c not in df.columns]
    if absent:
        raise DataError(
            f"data_report: column(s) {absent} of the data spec are not in the table; "
            f"columns present: {list(map(str, df.columns))}"
        )
    target = as_category_strings(df[spec.target])
    if spec.multilabel:  # an empty cell is "no label", not a missing one
        target = target.fillna("")
    labelled = target.notna()
    labels = target[labelled].astype(str)
    if spec.multilabel:  # each label's rows (a row may have several, or none)
        from medfuse.data.labels import label_names, multi_hot

        classes = list(spec.targets) if spec.targets else label_names(labels, spec.separator)
        hot = multi_hot(labels, classes, spec.separator, spec.target).astype(bool)
        members = {c: hot[:, j] for j, c in enumerate(classes)}
        positive = None
    else:
        classes = sorted(labels.unique().tolist())
        members = {c: (labels == c).to_numpy() for c in classes}
        positive = _positive_label(classes, spec)
    is_pos = labels == positive

    columns = list(dict.fromkeys(spec.columns().values()))
    report: dict[str, Any] = {
        "n_rows": len(df),
        "target": spec.target,
        "positive": positive,
        "class_balance": {c: int(members[c].sum()) for c in classes},
        "multilabel": spec.multilabel,
        "missing": {c: _missing_count(df[c]) for c in columns},
    }

    by_category: dict[str, list[dict[str, Any]]] = {}
    for col in spec.categorical if not spec.multilabel else []:  # one positive class only
        levels = as_category_strings(df[col])[labelled].fillna(MISSING_LEVEL)
        rows = []
        names = sorted(set(levels.tolist()) - {MISSING_LEVEL})
        if (levels == MISSING_LEVEL).any():
            names.append(MISSING_LEVEL)
        for level in names:
            sel = (levels == level).to_numpy()
            rows.append({"level": level, "n": int(sel.sum()),
                         "positive_rate": float(is_pos.to_numpy()[sel].mean())})
        by_category[col] = rows
    report["positive_rate_by_category"] = by_category

    by_class: dict[str, dict[str, dict[str, Any]]] = {}
    for col in spec.continuous:
        values = pd.to_numeric(df[col], errors="coerce")[labelled]
        by_class[col] = {c: _describe_numbers(values[members[c]]) for c in classes}
    report["continuous_by_class"] = by_class

    text_length: dict[str, dict[str, float | None]] | None = None
    if spec.text:
        texts = df[spec.text][labelled]
        present = texts.notna().to_numpy()
        words = np.array([len(t.split()) for t in texts[present].astype(str)], dtype=float)
        text_length = {}
        for c in classes:
            w = words[members[c][present]]
            text_length[c] = {
                "median_words": _jsonable(np.median(w)) if len(w) else None,
                "mean_words": _jsonable(w.mean()) if len(w) else None,
            }
    report["text_length"] = text_length
    report["duplicates"] = dict(duplicates) if duplicates is not None else None
    return report


def plot_data_report(report: Mapping[str, Any]) -> list[tuple[str, bytes]]:
    """Plots of a :func:`data_report`: class balance, positive rates, continuous columns.

    Parameters
    ----------
    report
        The output of :func:`data_report` (or its JSON).

    Returns
    -------
    list of (str, bytes)
        ``(title, png)``: a class balance bar chart, one bar chart of the positive rate
        per level for each categorical column (the 20 most frequent levels) and one box
        plot by class for each continuous column (box: quartiles; whiskers: min-max), at
        most 12 of each.
    """
    plots: list[tuple[str, bytes]] = []
    balance: Mapping[str, int] = report.get("class_balance") or {}
    if balance:
        fig = new_figure()
        ax = fig.subplots()
        names = list(balance)
        counts = [int(balance[c]) for c in names]
        bars = ax.bar([mpl(c) for c in names], counts,
                      color=[COLORS[i % len(COLORS)] for i in range(len(names))])
        ax.bar_label(bars, labels=[str(c) for c in counts], fontsize=8)
        multilabel = bool(report.get("multilabel"))
        ax.set_xlabel("Label" if multilabel else "Class")
        ax.set_ylabel("Rows")
        ax.set_title("Label prevalence (rows with each label; a row may have several)"
                     if multilabel else "Class balance", fontsize=10 if multilabel else None)
        if len(names) > 4:
            ax.tick_params(axis="x", labelrotation=45)
        plots.append(("Class balance", to_png(fig)))

    positive = report.get("positive")
    total = sum(int(v) for v in balance.values())
    overall = balance.get(positive, 0) / total if positive is not None and total else None
    by_category: Mapping[str, list[dict[str, Any]]] = (
        report.get("positive_rate_by_category") or {})
    for col, rows in list(by_category.items())[:MAX_COLUMN_PLOTS]:
        if not rows:
            continue
        shown = sorted(rows, key=lambda r: -int(r["n"]))[:MAX_LEVEL_BARS][::-1]
        fig = new_figure(6.0, max(3.0, min(8.0, 1.2 + 0.3 * len(shown))))
        ax = fig.subplots()
        rates = [float(r["positive_rate"]) for r in shown]
        bars = ax.barh([mpl(r["level"]) for r in shown], rates, color=COLORS[0])
        ax.bar_label(bars, labels=[f"n={r['n']}" for r in shown], fontsize=7, padding=2)
        if overall is not None:
            ax.axvline(overall, ls="--", color=COLORS[3], label=f"overall {overall:.1%}")
            ax.legend(fontsize=8, loc="lower right")
        ax.set_xlim(0.0, 1.15)
        ax.set_xlabel(f"Share of positive class ({mpl(positive)})")
        ax.set_ylabel(mpl(col))
        title = f"Positive rate by {col}"
        ax.set_title(mpl(title))
        plots.append((title, to_png(fig)))

    by_class: Mapping[str, Mapping[str, Mapping[str, Any]]] = (
        report.get("continuous_by_class") or {})
    for col, per_class in list(by_class.items())[:MAX_COLUMN_PLOTS]:
        stats = [
            {"label": mpl(label), "med": s["median"], "q1": s["q1"], "q3": s["q3"],
             "whislo": s["min"], "whishi": s["max"], "fliers": []}
            for label, s in per_class.items() if s.get("n") and s.get("median") is not None
        ]
        if not stats:
            continue
        fig = new_figure()
        ax = fig.subplots()
        boxes = ax.bxp(stats, patch_artist=True, showfliers=False)
        for i, patch in enumerate(boxes["boxes"]):
            patch.set_facecolor(COLORS[i % len(COLORS)])
            patch.set_alpha(0.6)
        ax.set_xlabel("Class")
        ax.set_ylabel(mpl(col))
        title = f"{col} by class"
        ax.set_title(mpl(title) + " (box: quartiles, whiskers: min-max)", fontsize=10)
        ax.grid(axis="y", alpha=0.3)
        plots.append((title, to_png(fig)))
    return plots
