"""The ``benchmark`` command: medfuse against plain PyTorch / scikit-learn peers."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from medfuse.cli.common import comma_list, console


def benchmark(
    out: Annotated[Path, typer.Option("--out", help="output folder (results.json, results.md)")],
    quick: Annotated[bool, typer.Option(
        help="small sizes (a few rows, one epoch): about two minutes")] = False,
    only: Annotated[str | None, typer.Option(
        help="comma-separated sections: gemm, extraction, training, datasets, serve_load, scale")
    ] = None,
) -> None:
    """Measure medfuse against plain PyTorch / scikit-learn peers and the machine's GEMM peak."""
    from medfuse.benchmark import check_sections, run_benchmark

    sections = check_sections(comma_list(only) if only else None)
    t0 = time.perf_counter()
    with console.status("benchmark running ...") as status:
        def log(message: str) -> None:
            console.print(f"[dim]{time.perf_counter() - t0:6.0f} s[/]  {message}")
            status.update(f"benchmark: {message}")

        results = run_benchmark(out, quick=quick, sections=sections, log=log)
    table = Table(title="targets (issue 10)")
    for col in ("target", "measured", "threshold", "met"):
        table.add_column(col)
    for t in results["targets"]:
        value = t["value"]
        shown = "-" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)
        met = {True: "[green]yes[/]", False: "[red]no[/]", None: "-"}[t["met"]]
        table.add_row(t["target"], shown, f"{t['op']} {t['threshold']}", met)
    console.print(table)
    console.print(f"results: [bold]{out / 'results.md'}[/] and [bold]{out / 'results.json'}[/]")
