"""The single HTML page of ``medfuse serve``, generated from the model's spec.

Rendered from ``serve/templates/page.html.j2`` (autoescape on; column names, categories
and class names are HTML-escaped). Inline CSS and JavaScript only (no CDN), so the page
works offline.
"""

from __future__ import annotations

import json
from functools import cache
from typing import Any

import jinja2
from markupsafe import Markup


@cache
def environment() -> jinja2.Environment:
    """The template environment of the page (autoescape on, undefined names raise)."""
    return jinja2.Environment(
        loader=jinja2.PackageLoader("medfuse", "serve/templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )


def render_page(model: Any, token_required: bool = False) -> str:
    """The HTML page for ``model`` (a :class:`~medfuse.serve.model.ServedModel`)."""
    spec = model.spec
    # JSON for the page's script: "</" escaped so that no value can close the <script>
    spec_json = Markup(json.dumps(spec.model_dump(mode="json")).replace("</", "<\\/"))
    fields = [{"name": col, "kind": kind, "categories": model.categories.get(col, [])}
              for col, kind in spec.tabular.items()]
    return environment().get_template("page.html.j2").render(
        name=model.run.name,
        target=str(spec.target),
        classes=[str(c) for c in model.clf.classes_],
        backend=model.backend,
        optional=bool(model.clf.handles_missing),  # any input may be left out
        token_required=token_required,
        image=spec.image,
        fields=fields,
        text=spec.text,
        spec_json=spec_json,
    )
