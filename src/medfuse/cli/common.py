"""What the commands share: the consoles, common options, option parsing and number formatting."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.console import Console

console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)

ConfigArgument = Annotated[str, typer.Argument(help="config name from configs/ or a YAML path")]
SetOption = Annotated[
    list[str] | None,
    typer.Option("--set", help="override a config key, e.g. --set train.max_epochs=3"),
]
OutsideOption = Annotated[bool, typer.Option(
    "--allow-outside-paths",
    help="accept image paths outside the table's folder (absolute paths elsewhere, '..'); "
    "refused by default")]


def comma_list(text: str) -> list[str]:
    """``"lr, rf,"`` -> ``["lr", "rf"]``.

    >>> comma_list("lr, rf,")
    ['lr', 'rf']
    """
    return [part.strip() for part in text.split(",") if part.strip()]


def fold_list(text: str) -> list[int]:
    """``"2,4"`` -> ``[2, 4]``; anything else is a clean parameter error.

    >>> fold_list("2,4")
    [2, 4]
    """
    try:
        folds = [int(part) for part in comma_list(text)]
    except ValueError:
        folds = []
    if not folds:
        raise typer.BadParameter(f"{text!r}: give fold numbers separated by commas, e.g. 2,4",
                                 param_hint="--only")
    return folds


def fmt(value: Any) -> str:
    """A table cell: four decimals, ``-`` for None.

    >>> fmt(0.5), fmt(None)
    ('0.5000', '-')
    """
    return "-" if value is None else f"{value:.4f}"


def headline(metrics: dict[str, Any]) -> str:
    """The one-line summary of a run's metrics.

    >>> headline({"n": 10, "accuracy": 0.9, "other": 1})
    'n=10, accuracy=0.9000'
    """
    keys: tuple[str, ...] = ("n", "accuracy", "balanced_accuracy", "roc_auc", "pr_auc",
                             "sensitivity", "specificity", "train_seconds", "peak_rss_mb")
    if "per_label" in metrics:  # multi-label: macro means, label-wise accuracy
        keys = ("n", "n_labels", "accuracy", "subset_accuracy", "roc_auc", "roc_auc_micro",
                "pr_auc", "f1_macro", "sensitivity", "specificity", "train_seconds",
                "peak_rss_mb")
    parts = []
    for k in keys:
        v = metrics.get(k)
        if v is not None:
            parts.append(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}")
    return ", ".join(parts)


def per_label_table(metrics: dict[str, Any], title: str) -> Any:
    """A rich table of a multi-label result's ``per_label`` metrics (ROC AUC with its 95 %
    CI when there is one), or None for a single-label one.

    >>> per_label_table({"accuracy": 1.0}, "x") is None
    True
    """
    from rich.table import Table

    per = metrics.get("per_label")
    if not isinstance(per, dict):
        return None
    table = Table(title=title)
    for col in ("label", "positives", "roc_auc", "95% CI", "pr_auc", "sensitivity",
                "specificity"):
        table.add_column(col)
    for name, m in per.items():
        ci = (m.get("ci95") or {}).get("roc_auc") or [None, None]
        table.add_row(str(name), str(m.get("positives", "-")), fmt(m.get("roc_auc")),
                      f"{fmt(ci[0])} - {fmt(ci[1])}" if ci[0] is not None else "-",
                      fmt(m.get("pr_auc")), fmt(m.get("sensitivity")),
                      fmt(m.get("specificity")))
    return table


def uncertainty_lines(metrics: dict[str, Any]) -> list[str]:
    """What a run says of its calibration and conformal sets (empty when it has neither).

    >>> line = uncertainty_lines({"conformal": {"alpha": 0.1, "coverage": 0.91,
    ...     "class_coverage": {"0": 0.9, "1": 0.92}, "mean_set_size": 1.1,
    ...     "abstain_rate": 0.12}})[0]
    >>> line[:57]
    'conformal sets (alpha 0.1): coverage 0.9100 (target 0.90;'
    >>> line[-60:]
    'mean set size 1.10, abstain (set of size != 1) 12.0% of rows'
    """
    lines = []
    calibration = metrics.get("calibration")
    if isinstance(calibration, dict) and calibration.get("reason"):
        lines.append(f"temperature {calibration['reason']}")
    conformal = metrics.get("conformal")
    if isinstance(conformal, dict) and conformal.get("coverage") is not None:
        per_class = ", ".join(f"{c}: {fmt(v)}" for c, v in conformal["class_coverage"].items())
        lines.append(
            f"conformal sets (alpha {conformal['alpha']:g}): coverage "
            f"{fmt(conformal['coverage'])} (target {1 - conformal['alpha']:.2f}; per class "
            f"{per_class}), mean set size {conformal['mean_set_size']:.2f}, abstain (set of "
            f"size != 1) {100 * conformal['abstain_rate']:.1f}% of rows")
    return lines
