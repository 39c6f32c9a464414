"""Turning pydantic :class:`~pydantic.ValidationError` s into messages that name the key,
the value, the valid options and the closest match ("did you mean")."""

from __future__ import annotations

import types
import typing
from typing import Any, Literal, Union

from pydantic import BaseModel, ValidationError

from medfuse.config.run import RunConfig
from medfuse.errors import did_you_mean, format_options


def describe_errors(exc: ValidationError) -> list[str]:
    """One message per error of ``exc`` (a failed :class:`RunConfig` validation)."""
    return [_describe(err) for err in exc.errors()]


def _unwrap(annotation: Any) -> list[Any]:
    """Members of a Union/Optional annotation (or the annotation itself)."""
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        return [a for a in typing.get_args(annotation) if a is not type(None)]
    return [annotation]


def _annotation_at(loc: tuple[Any, ...]) -> Any:
    """The annotation of the field at ``loc`` inside RunConfig, or None."""
    ann: Any = RunConfig
    for part in loc:
        nxt = None
        for member in _unwrap(ann):
            if isinstance(member, type) and issubclass(member, BaseModel):
                field = member.model_fields.get(str(part))
                if field is not None:
                    nxt = field.annotation
                    break
            elif typing.get_origin(member) is dict:
                nxt = typing.get_args(member)[1]
                break
        if nxt is None:
            return None
        ann = nxt
    return ann


def _field_names_at(loc: tuple[Any, ...]) -> list[str]:
    ann = _annotation_at(loc)
    for member in _unwrap(ann) if ann is not None else []:
        if isinstance(member, type) and issubclass(member, BaseModel):
            return list(member.model_fields)
    return []


def _literal_options(loc: tuple[Any, ...]) -> list[Any]:
    ann = _annotation_at(loc)
    for member in _unwrap(ann) if ann is not None else []:
        if typing.get_origin(member) is Literal:
            return list(typing.get_args(member))
    return []


def _describe(err: Any) -> str:
    loc = tuple(err["loc"])
    key = ".".join(str(p) for p in loc) or "<root>"
    kind = err["type"]
    given = err.get("input")
    if kind == "extra_forbidden":
        valid = _field_names_at(loc[:-1])
        hint = did_you_mean(loc[-1], valid) or _key_elsewhere(str(loc[-1]))
        return f"unknown key '{key}'. Valid keys here: {format_options(valid)}.{hint}"
    if kind == "missing":
        return f"missing required key '{key}'"
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        return (f"'{key}' must be a mapping of 'key: value' entries (indented lines or "
                f"{{key: value}}). Got {given!r}.")
    options = _literal_options(loc)
    if options:
        return (
            f"'{key}' must be one of {format_options(options)}. Got {given!r} instead."
            f"{did_you_mean(given, options)}"
        )
    msg = err["msg"].removeprefix("Value error, ")
    if not loc:
        return str(msg)
    if kind == "value_error":
        return f"'{key}': {msg}"
    return f"'{key}': {msg}. Got {given!r}."


def _key_elsewhere(name: str, model: type[BaseModel] = RunConfig, prefix: str = "") -> str:
    """`` Did you mean 'evaluation.calibrate'?`` for a key that belongs to another section."""
    for field_name, info in model.model_fields.items():
        path = f"{prefix}{field_name}"
        if field_name == name and prefix:
            return f" Did you mean '{path}'?"
        for member in _unwrap(info.annotation):
            if isinstance(member, type) and issubclass(member, BaseModel):
                found = _key_elsewhere(name, member, f"{path}.")
                if found:
                    return found
    return ""
