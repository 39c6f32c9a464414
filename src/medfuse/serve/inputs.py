"""Reading a prediction request: the body under a size limit (413), multipart or JSON
(415 otherwise) into :class:`Inputs`, and :class:`InputError` for every bad input.

Every input goes by its column name in the data spec -- the image column (a file upload,
or base64 in JSON), the text column, each tabular column -- as in the table the model was
trained on; ``image`` / ``image_base64`` and ``text`` are accepted as aliases, and JSON
may also nest the tabular values under ``tabular``.

Checking the parsed inputs against the model's spec is :mod:`medfuse.serve.validation`.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse
from starlette.datastructures import UploadFile

from medfuse.config import DataSpec

#: the alias names every model accepts, whatever its columns are called
IMAGE_ALIASES, TEXT_ALIAS = ("image", "image_base64"), "text"


class InputError(Exception):
    """Invalid request input: answered with ``status`` and ``{"detail": problems}``."""

    def __init__(self, problems: list[dict[str, Any]], status: int = 422) -> None:
        super().__init__("; ".join(str(p.get("msg")) for p in problems))
        self.problems = problems
        self.status = status


def problem(field_name: str, msg: str) -> dict[str, Any]:
    """One entry of an error's ``detail`` list, about the body field ``field_name``."""
    return {"loc": ["body", field_name], "field": field_name, "msg": msg}


async def input_error_response(request: Request, exc: InputError) -> JSONResponse:
    """The app's handler for :class:`InputError`: ``{"detail": problems}``."""
    return JSONResponse({"detail": exc.problems}, status_code=exc.status)


@dataclass
class Inputs:
    """One prediction request, parsed but not yet validated."""

    image: bytes | None = None
    image_name: str = ""
    tabular: dict[str, Any] = field(default_factory=dict)
    text: str | None = None


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, or 413 as soon as it exceeds ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise InputError([problem("body", f"request body of {int(declared)} bytes exceeds "
                                  f"the {limit} byte limit; send a smaller image, or start "
                                  "the server with a larger --max-upload-mb")], 413)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise InputError([problem("body", f"request body exceeds the {limit} byte "
                                      "limit; send a smaller image, or start the server "
                                      "with a larger --max-upload-mb")], 413)
        chunks.append(chunk)
    return b"".join(chunks)


async def parse_inputs(request: Request, body: bytes, spec: DataSpec | None = None) -> Inputs:
    """The :class:`Inputs` of a JSON or form ``body`` (already read from ``request``);
    ``spec`` maps its image and text column names (aliases otherwise only)."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "application/json":
        return _parse_json(body, spec)
    if ctype in ("multipart/form-data", "application/x-www-form-urlencoded"):
        return await _parse_form(request, body, spec)
    raise InputError([problem("content-type", f"unsupported content type {ctype!r}: send "
                              "multipart/form-data or application/json")], 415)


def _set_once(inputs: Inputs, given: dict[str, str], what: str, name: str) -> None:
    """422 when one input comes both under its column name and under its alias."""
    if what in given and given[what] != name:
        raise InputError([problem(name, f"'{name}' and '{given[what]}' are the same input "
                                  f"(the {what}); send one of them")])
    given[what] = name


def _parse_json(body: bytes, spec: DataSpec | None = None) -> Inputs:
    try:
        data = json.loads(body or b"null")
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError([problem("body", f"invalid JSON: {e}")]) from e
    except RecursionError as e:  # [[[[...]]]] deeper than the parser's stack
        raise InputError([problem("body", "invalid JSON: nested too deeply")]) from e
    if not isinstance(data, dict):
        names = _column_names(spec) or ["image_base64", "tabular", "text"]
        raise InputError([problem("body", "the JSON body must be an object with the "
                                  f"inputs under their column names ({', '.join(names)})")])
    inputs, given = Inputs(), dict[str, str]()
    tab = data.get("tabular") or {}
    if not isinstance(tab, dict):
        raise InputError([problem("tabular", "'tabular' must be an object "
                                  "{column: value}")])
    inputs.tabular = dict(tab)
    image_col = spec.image if spec is not None else None
    text_col = spec.text if spec is not None else None
    image_b64 = None
    for key, value in data.items():
        if key == "tabular":
            continue
        if key in (TEXT_ALIAS, text_col):
            _set_once(inputs, given, "text", key)
            inputs.text = value
        elif key in IMAGE_ALIASES or key == image_col:
            if value in (None, ""):
                continue
            _set_once(inputs, given, "image", key)
            image_b64 = (key, value)
        else:  # a tabular column (or an unknown field, reported as ignored)
            if key in inputs.tabular and inputs.tabular[key] != value:
                raise InputError([problem(key, f"'{key}' is given both at the top level and "
                                          "under 'tabular'; send it once")])
            inputs.tabular[key] = value
    for name, value in [(given.get("text", "text"), inputs.text), *inputs.tabular.items()]:
        check_unicode(str(name), value)
    if image_b64 is not None:
        key, raw = image_b64[0], str(image_b64[1])
        if raw.startswith("data:") and "," in raw:
            raw = raw.split(",", 1)[1]
        try:
            inputs.image = base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError) as e:
            raise InputError([problem(key, f"'{key}': not valid base64 image data: {e}")]
                             ) from e
    if inputs.text is not None and not isinstance(inputs.text, str):
        name = given.get("text", "text")
        raise InputError([problem(name, f"'{name}' must be a string")])
    return inputs


def _column_names(spec: DataSpec | None) -> list[str]:
    if spec is None:
        return []
    return [c for c in (spec.image, *spec.tabular, spec.text) if c]


async def _parse_form(request: Request, body: bytes, spec: DataSpec | None = None) -> Inputs:
    request._body = body  # let starlette parse the body already read
    try:
        form = await request.form(max_part_size=len(body) + 1)
    except Exception as e:  # multipart parser errors
        raise InputError([problem("body", f"malformed form data: {e}")]) from e
    inputs, given = Inputs(), dict[str, str]()
    image_col = spec.image if spec is not None else None
    text_col = spec.text if spec is not None else None
    for key, value in form.multi_items():
        if isinstance(value, UploadFile):
            if key in IMAGE_ALIASES or key == image_col:
                data = await value.read()
                if not data and not value.filename:
                    continue  # a form's empty file input
                _set_once(inputs, given, "image", key)
                inputs.image = data
                inputs.image_name = value.filename or ""
        elif key in (TEXT_ALIAS, text_col):
            _set_once(inputs, given, "text", key)
            inputs.text = str(value)
        elif key not in IMAGE_ALIASES and key != image_col:
            inputs.tabular[key] = value
    return inputs


def check_unicode(name: str, value: Any) -> None:
    """422 for strings that are not valid Unicode (JSON ``"\\udcff"``: a lone surrogate)."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as e:
            raise InputError([problem(name, f"field '{name}' is not valid Unicode text "
                                      f"({e.reason} at position {e.start})")]) from e
