"""The ``medfuse`` command line (typer + rich). It calls the public API only.

Errors medfuse raises on purpose (:class:`~medfuse.errors.MedfuseError`) are
printed as one clear message and exit with status 2, without a stack trace.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.table import Table

from medfuse.errors import MedfuseError

app = typer.Typer(
    name="medfuse",
    help="Fused classifiers over medical images, tabular patient data and clinical text.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)

SetOption = Annotated[
    list[str] | None,
    typer.Option("--set", help="override a config key, e.g. --set train.max_epochs=3"),
]


@app.callback()
def _main(verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s",
        handlers=[RichHandler(console=err_console, show_path=False, show_time=False)],
    )


@app.command()
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


@app.command()
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


@app.command()
def validate(
    config: Annotated[str, typer.Argument(help="config name from configs/ or a YAML path")],
    set_: SetOption = None,
    out: Annotated[Path | None, typer.Option(help="write the findings as JSON here")] = None,
) -> None:
    """Check a config and its data (columns, files, numbers, texts, duplicates)."""
    result = _validate_config(config, set_)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=1))
        console.print(f"findings written to [bold]{out}[/]")


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="run folder")] = Path("runs/demo"),
) -> None:
    """The main job on the built-in synth-derm dataset (image + tabular + text)."""
    from medfuse.data import holdout_split, load_table, prepare_dataset
    from medfuse.data.builtin import load_dataset

    t0 = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    csv = prepare_dataset("synth-derm", out / "data")
    _, spec = load_dataset("synth-derm")
    df, report = load_table(csv, spec)
    split = holdout_split(df, spec, seed=0)
    from medfuse.data import MultimodalDataset, Preprocessor

    pre = Preprocessor(spec).fit(df.iloc[split.train])
    sample = MultimodalDataset(df.iloc[split.valid], pre)[0]
    pre.save(out / "preprocess.json")
    findings = {
        "table": str(csv),
        "validation": report.to_dict(),
        "split": split.report.to_dict(),
        "classes": pre.classes_,
        "sample_shapes": {k: list(v.shape) for k, v in sample.items()},
        "seconds": round(time.perf_counter() - t0, 2),
    }
    (out / "data_report.json").write_text(json.dumps(findings, indent=1))
    console.print_json(json.dumps(findings))
    console.print(f"demo data report: [bold]{out / 'data_report.json'}[/]")


def main() -> None:
    """Console-script entry point: clean messages for medfuse's own errors."""
    try:
        app()
    except MedfuseError as exc:
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
        sys.exit(2)
    except FileNotFoundError as exc:
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
        sys.exit(2)


if __name__ == "__main__":
    main()
