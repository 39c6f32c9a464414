"""The typer application: logging set-up, the commands in their help order, the entry point.

Errors medfuse raises on purpose (:class:`~medfuse.errors.MedfuseError`), and
operating-system errors on the files a user names (:class:`OSError`), are printed
as one clear message and exit with status 2, without a stack trace.
"""

from __future__ import annotations

import logging
import sys
from typing import Annotated

import typer
from rich.logging import RichHandler
from rich.markup import escape

from medfuse.cli.benchmark import benchmark
from medfuse.cli.common import err_console
from medfuse.cli.data import datasets, prepare, validate
from medfuse.cli.model import evaluate, explain, export, predict, report, serve
from medfuse.cli.training import ablate, audit, cv, demo, train
from medfuse.errors import MedfuseError

app = typer.Typer(
    name="medfuse",
    help="Fused classifiers over medical images, tabular patient data and clinical text.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# the order of `medfuse --help`
for command in (datasets, prepare, validate, train, cv, audit, ablate, explain, serve, export,
                report, evaluate, predict, benchmark, demo):
    app.command()(command)


@app.callback()
def _main(verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False) -> None:
    from medfuse.distributed import is_primary

    level = logging.DEBUG if verbose else logging.INFO
    logging.basicConfig(
        # the other processes of a DDP run repeat the first one's messages: warnings only
        level=level if is_primary() else max(level, logging.WARNING),
        format="%(message)s",
        handlers=[RichHandler(console=err_console, show_path=False, show_time=False)],
    )
    if not verbose:  # library chatter at INFO (e.g. matplotlib's categorical-units notes)
        for name in ("matplotlib", "PIL", "urllib3", "httpx"):
            logging.getLogger(name).setLevel(logging.WARNING)


def main() -> None:
    """Console-script entry point: clean messages for medfuse's own errors."""
    try:
        app()
    except MedfuseError as exc:
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
        sys.exit(2)
    except OSError as exc:  # a file the user named: missing, a folder, not readable, disk full
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
        sys.exit(2)
