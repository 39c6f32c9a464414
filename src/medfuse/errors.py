"""Typed errors with actionable messages.

Every error medfuse raises for bad input derives from :class:`MedfuseError`
and says *what* is wrong (file, row, column or parameter), and *how* to fix it.
The CLI prints these messages without a stack trace.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass


class MedfuseError(Exception):
    """Base class of every error medfuse raises on purpose."""


class ConfigError(MedfuseError, ValueError):
    """A configuration key, value or config name is invalid."""


class DataError(MedfuseError, ValueError):
    """A table or an input file cannot be used as given."""


class ImageDecodeError(DataError):
    """An image file exists but cannot be decoded."""

    default_hint = (
        "Supported formats: PNG, JPEG, TIFF, BMP and DICOM (.dcm); re-export the file or "
        "fix its path."
    )

    def __init__(self, path: str, reason: str, hint: str | None = None) -> None:
        self.path = path
        self.reason = reason
        self.hint = self.default_hint if hint is None else hint
        super().__init__(f"cannot decode image '{path}': {reason}. {self.hint}")


class DatasetNotAvailableError(MedfuseError, RuntimeError):
    """A built-in dataset's source package is not installed."""


class NotFittedError(MedfuseError, AttributeError):
    """A preprocessor or estimator is used before ``fit``."""


@dataclass(frozen=True)
class DataProblem:
    """One problem found while validating a table.

    Attributes
    ----------
    kind:
        Problem category, e.g. ``missing_image`` (see :class:`medfuse.config.DataPolicy`).
    message:
        Human-readable description naming the culprit.
    row:
        0-based position of the row in the table, ``None`` for table-level problems.
    column:
        Column involved, if any.
    file:
        File involved (the table itself or an image), if any.
    """

    kind: str
    message: str
    row: int | None = None
    column: str | None = None
    file: str | None = None

    def __str__(self) -> str:
        where = []
        if self.file:
            where.append(f"file '{self.file}'")
        if self.row is not None:
            where.append(f"row {self.row}")
        if self.column:
            where.append(f"column '{self.column}'")
        prefix = ", ".join(where)
        tag = f"[{self.kind}]"
        return f"{tag} {prefix}: {self.message}" if prefix else f"{tag} {self.message}"


class DataValidationError(DataError):
    """The table failed validation; ``problems`` lists every problem found."""

    max_listed = 10

    def __init__(self, table: str, problems: list[DataProblem], hint: str = "") -> None:
        self.table = table
        self.problems = problems
        lines = [f"{len(problems)} problem(s) in table '{table}':"]
        lines += [f"  - {p}" for p in problems[: self.max_listed]]
        if len(problems) > self.max_listed:
            lines.append(f"  ... and {len(problems) - self.max_listed} more")
        if hint:
            lines.append(hint)
        super().__init__("\n".join(lines))


def format_options(options: Iterable[object]) -> str:
    """Render valid options like scikit-learn does: ``{'a', 'b'}``."""
    return "{" + ", ".join(repr(o) for o in options) + "}"


def did_you_mean(value: object, options: Iterable[object]) -> str:
    """Return ``" Did you mean 'x'?"`` for the closest option, or ``""``."""
    names = [str(o) for o in options]
    close = difflib.get_close_matches(str(value), names, n=1, cutoff=0.6)
    return f" Did you mean '{close[0]}'?" if close else ""


def check_option(param: str, value: object, options: Iterable[object], owner: str = "") -> None:
    """Raise :class:`ConfigError` unless ``value`` is one of ``options``.

    >>> check_option("fusion", "concat", ["concat", "gated"])
    """
    opts = list(options)
    if value in opts:
        return
    who = f" of {owner}" if owner else ""
    raise ConfigError(
        f"The '{param}' parameter{who} must be one of {format_options(opts)}. "
        f"Got {value!r} instead.{did_you_mean(value, opts)}"
    )
