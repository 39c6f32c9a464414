"""How values are written in the report: the Jinja2 filters, tests and escaping.

:func:`fmt` is the single number formatter (also used in plot legends). The template
environment escapes every ``{{ }}`` output that is not already markup with
:func:`html.escape` (quotes included), so user strings such as column names are always
escaped and a value reads the same as in the report's earlier versions.

>>> fmt(0.123456), fmt(12), fmt(None), fmt(True)
('0.1235', '12', 'n/a', 'yes')
>>> ci([0.1, 0.25]), ci(None)
('[0.1000, 0.2500]', '—')
>>> flat({"a": 1, "b": [0.5, None]}), flat({})
('a=1, b=0.5000, n/a', 'none')
>>> str(escape('<b>&"site"')), str(escape(escape("<i>")))
('&lt;b&gt;&amp;&quot;site&quot;', '&lt;i&gt;')
"""

from __future__ import annotations

import html
import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from markupsafe import Markup

__all__ = ["FILTERS", "TESTS", "ci", "escape", "flat", "fmt", "is_numeric", "mpl"]


def fmt(x: object) -> str:
    """Format one value for the report: the single number formatter.

    Parameters
    ----------
    x
        A number, ``None``, a bool or anything else.

    Returns
    -------
    str
        Floats with exactly 4 decimals (``0.1235``), integers as integers, ``n/a`` for
        ``None`` / NaN / infinity, ``yes`` / ``no`` for bools, ``str(x)`` otherwise
        (not HTML-escaped: the templates escape it).
    """
    if x is None:
        return "n/a"
    if isinstance(x, bool | np.bool_):
        return "yes" if x else "no"
    if isinstance(x, numbers.Integral):
        return str(int(x))
    if isinstance(x, numbers.Real):
        value = float(x)
        return f"{value:.4f}" if math.isfinite(value) else "n/a"
    return str(x)


def ci(pair: object) -> str:
    """``[lo, hi]`` of a 95 % CI pair (each through :func:`fmt`), or ``—`` when there is none."""
    if isinstance(pair, Sequence) and not isinstance(pair, str) and len(pair) == 2:
        return f"[{fmt(pair[0])}, {fmt(pair[1])}]"
    return "—"


def flat(value: object) -> str:
    """A value for a key/value table: dicts as ``k=v`` lists, numbers through :func:`fmt`."""
    if isinstance(value, Mapping):
        if not value:
            return "none"
        return ", ".join(f"{k}={flat(v)}" for k, v in value.items())
    if isinstance(value, list | tuple):
        return ", ".join(flat(v) for v in value)
    return fmt(value)


def is_numeric(value: object) -> bool:
    """A number that goes in a right-aligned ``td.num`` cell (bools are not numbers here)."""
    return isinstance(value, numbers.Number) and not isinstance(value, bool)


def mpl(text: object) -> str:
    """A user string safe for matplotlib (a ``$`` would start mathtext)."""
    return str(text).replace("$", r"\$")


def escape(value: object) -> Markup:
    """The environment's ``finalize``: HTML-escape every output that is not markup yet.

    :func:`html.escape` with ``quote=True`` (``&quot;``, ``&#x27;``), so the text is safe in
    attributes too; values that are already markup (macro output, the inline CSS) pass as
    they are.
    """
    if hasattr(value, "__html__"):
        return Markup(value)
    return Markup(html.escape(str(value), quote=True))


#: Filters of the report's template environment.
FILTERS: dict[str, Callable[..., Any]] = {"fmt": fmt, "ci": ci, "flat": flat}
#: Tests of the report's template environment (``{% if value is numeric %}``).
TESTS: dict[str, Callable[..., bool]] = {"numeric": is_numeric}
