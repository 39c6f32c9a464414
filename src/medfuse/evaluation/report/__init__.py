"""Data report (EDA) and a self-contained HTML report for a run directory.

:func:`data_report` summarises a table against its :class:`~medfuse.config.DataSpec`
(class balance, missing values, positive rate per category, continuous columns per
class, text lengths) as a JSON-able dict. The ``plot_*`` functions render PNG bytes
with matplotlib (no pyplot: figures are :class:`matplotlib.figure.Figure` objects
drawn by the Agg canvas, so no global state is touched). :func:`build_report` turns a
run directory into one HTML file with every image embedded as a base64 data URI:
no external assets, no JavaScript.

By concept: :mod:`.data` (the data report and its plots), :mod:`.plots` (the run's
figures), :mod:`.inputs` (reading the run directory), :mod:`.sections`,
:mod:`.comparisons` and :mod:`.card` (one template context per section),
:mod:`.audit` (the label audit and the cross-validation's sections), :mod:`.formatting`
(the templates' filters and escaping) and :mod:`.build` (:func:`build_report`, and
:func:`build_cv_report` for a ``medfuse cv`` directory). The HTML is
``evaluation/templates/report*.j2`` (Jinja2).

>>> import pandas as pd
>>> from medfuse.config import DataSpec
>>> df = pd.DataFrame({"sex": ["F", "M", "M", None], "label": ["a", "b", "b", "a"]})
>>> rep = data_report(df, DataSpec(tabular={"sex": "categorical"}))
>>> rep["class_balance"], rep["missing"]
({'a': 2, 'b': 2}, {'label': 0, 'sex': 1})
>>> [(r["level"], r["positive_rate"]) for r in rep["positive_rate_by_category"]["sex"]]
[('F', 0.0), ('M', 1.0), ('(missing)', 0.0)]
>>> fmt(0.123456), fmt(12), fmt(None)
('0.1235', '12', 'n/a')
"""

from medfuse.evaluation.report.build import NOT_AVAILABLE as NOT_AVAILABLE
from medfuse.evaluation.report.build import SECTIONS as SECTIONS
from medfuse.evaluation.report.build import build_cv_report, build_report
from medfuse.evaluation.report.card import CARD_METRICS as CARD_METRICS
from medfuse.evaluation.report.comparisons import ABLATION_METRICS as ABLATION_METRICS
from medfuse.evaluation.report.comparisons import SUBGROUP_COLUMNS as SUBGROUP_COLUMNS
from medfuse.evaluation.report.data import MAX_COLUMN_PLOTS as MAX_COLUMN_PLOTS
from medfuse.evaluation.report.data import MAX_LEVEL_BARS as MAX_LEVEL_BARS
from medfuse.evaluation.report.data import MISSING_LEVEL as MISSING_LEVEL
from medfuse.evaluation.report.data import data_report, plot_data_report
from medfuse.evaluation.report.formatting import fmt
from medfuse.evaluation.report.plots import COLORS as COLORS
from medfuse.evaluation.report.plots import DPI as DPI
from medfuse.evaluation.report.plots import confusion_counts as confusion_counts
from medfuse.evaluation.report.plots import (
    plot_confusion,
    plot_learning_curves,
    plot_reliability,
    plot_roc_pr,
)
from medfuse.evaluation.report.sections import HEADLINE_METRICS as HEADLINE_METRICS
from medfuse.evaluation.report.sections import MAX_LEVEL_ROWS as MAX_LEVEL_ROWS
from medfuse.evaluation.report.sections import REPORT_ECE_BINS as REPORT_ECE_BINS
from medfuse.evaluation.report.sections import RUN_NUMBERS as RUN_NUMBERS

__all__ = [
    "build_cv_report",
    "build_report",
    "data_report",
    "fmt",
    "plot_confusion",
    "plot_data_report",
    "plot_learning_curves",
    "plot_reliability",
    "plot_roc_pr",
]
