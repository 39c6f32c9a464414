"""The ``medfuse`` command line (typer + rich). It calls the public API only.

Errors medfuse raises on purpose (:class:`~medfuse.errors.MedfuseError`), and
operating-system errors on the files a user names (:class:`OSError`), are printed
as one clear message and exit with status 2, without a stack trace.

The commands are grouped by what they work on: :mod:`~medfuse.cli.data` (datasets,
prepare, validate), :mod:`~medfuse.cli.training` (train, cv, ablate, demo),
:mod:`~medfuse.cli.model` (evaluate, predict, explain, report, export, serve) and
:mod:`~medfuse.cli.benchmark`; :mod:`~medfuse.cli.app` assembles them into ``app``.
"""

from medfuse.cli.app import app, main

__all__ = ["app", "main"]
