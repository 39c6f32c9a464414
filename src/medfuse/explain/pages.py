"""Jinja2 rendering of the explanation pages (``explain/templates/*.html.j2``).

Autoescaping is on, so every value a template prints (labels, tokens, feature values,
file names) is HTML-escaped; Python computes and formats the values, the templates lay
them out.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import jinja2


@cache
def environment() -> jinja2.Environment:
    """The package's template environment (autoescape on, undefined names raise)."""
    return jinja2.Environment(
        loader=jinja2.PackageLoader("medfuse", "explain/templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render(template: str, **context: Any) -> str:
    """Render ``templates/<template>`` with ``context``."""
    return environment().get_template(template).render(**context)
