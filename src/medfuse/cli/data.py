"""Data commands: ``datasets`` (the built-in ones), ``prepare`` (write one) and ``validate``."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from medfuse.cli.common import ConfigArgument, SetOption, console


def datasets() -> None:
    """List the built-in datasets."""
    from medfuse.data import list_datasets

    table = Table(title="built-in datasets")
    for col in ("name", "modalities", "rows", "label", "source"):
        table.add_column(col, no_wrap=col in ("name", "modalities"))
    for d in list_datasets():
        table.add_row(d.name, "+".join(d.modalities), str(d.n_rows), d.label, d.source)
    console.print(table)
    for d in list_datasets():
        console.print(f"[bold]{d.name}[/]: {escape(d.description)}")


def prepare(
    name: Annotated[str, typer.Argument(help="built-in dataset name (see `medfuse datasets`)")],
    out: Annotated[Path, typer.Option("--out", help="output folder")],
    n_rows: Annotated[int | None, typer.Option(help="synth-derm: number of rows")] = None,
    image_size: Annotated[int | None, typer.Option(help="synth-derm: image size (px)")] = None,
    seed: Annotated[int | None, typer.Option(help="synth-derm: random seed")] = None,
) -> None:
    """Write a built-in dataset as OUT/data.csv (+ image files) in the generic format."""
    from medfuse.data import prepare_dataset

    options = {
        k: v for k, v in {"n_rows": n_rows, "image_size": image_size, "seed": seed}.items()
        if v is not None
    }
    t0 = time.perf_counter()
    csv = prepare_dataset(name, out, **options)
    n = sum(1 for _ in csv.open()) - 1
    console.print(f"wrote {n} rows to [bold]{csv}[/] in {time.perf_counter() - t0:.1f} s")


def _validate_config(config: str, overrides: list[str] | None) -> dict[str, Any]:
    from medfuse.config import load_config
    from medfuse.data import group_labels, load_data

    cfg = load_config(config, overrides or [])
    df, report = load_data(cfg.data)
    console.print(f"validation: {report.summary()}")
    for problem in report.problems[:10]:
        console.print(f"  - {escape(str(problem))}")
    if len(report.problems) > 10:
        console.print(f"  ... and {len(report.problems) - 10} more")
    _, split = group_labels(df, cfg.data)
    console.print(
        f"groups: {split.n_groups} (near-duplicate image groups: {split.duplicate_groups}, "
        f"holding {split.duplicate_images} images)"
    )
    counts = df[cfg.data.target].value_counts().sort_index()
    console.print("classes: " + ", ".join(f"{k}={v}" for k, v in counts.items()))
    return {"validation": report.to_dict(), "groups": split.to_dict()}


def validate(
    config: ConfigArgument,
    set_: SetOption = None,
    out: Annotated[Path | None, typer.Option(help="write the findings as JSON here")] = None,
) -> None:
    """Check a config and its data (columns, files, numbers, texts, duplicates)."""
    result = _validate_config(config, set_)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=1))
        console.print(f"findings written to [bold]{out}[/]")
