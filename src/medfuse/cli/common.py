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
    keys = ("n", "accuracy", "balanced_accuracy", "roc_auc", "pr_auc", "sensitivity",
            "specificity", "train_seconds", "peak_rss_mb")
    parts = []
    for k in keys:
        v = metrics.get(k)
        if v is not None:
            parts.append(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}")
    return ", ".join(parts)
