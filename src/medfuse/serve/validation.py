"""Checking parsed :class:`~medfuse.serve.inputs.Inputs` against the served model's spec:
required fields, numbers, unseen categories, image size and decoding (422 on problems),
and the one-row table the model predicts from.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pydicom
from PIL import Image

from medfuse.data.dataset import presence
from medfuse.data.images import is_dicom, read_image
from medfuse.data.tabular import UNKNOWN
from medfuse.errors import MedfuseError
from medfuse.serve.inputs import InputError, Inputs, problem
from medfuse.serve.model import ServedModel

_FIELDS = {"image": "'image'", "tabular": "the tabular fields", "text": "'text'"}


def check_pixels(path: Path, max_pixels: int) -> None:
    """422 for images over ``max_pixels`` pixels, checked from the header before decoding."""
    if is_dicom(path):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            size = int(ds.get("Rows", 0)) * int(ds.get("Columns", 0))
            size *= int(ds.get("NumberOfFrames", 1) or 1)
        except Exception as e:
            reason = str(e).replace(str(path), "the upload")
            raise InputError([problem("image", f"cannot decode the DICOM image: {reason}")]
                             ) from e
    else:
        try:
            with Image.open(path) as img:
                size = img.size[0] * img.size[1]
        except Image.DecompressionBombError as e:
            raise InputError([problem("image", f"image rejected as a decompression bomb: {e} "
                                      "Downscale it, or start the server with a larger "
                                      "--max-pixels")]) from e
        except Exception as e:
            reason = str(e).replace(str(path), "the upload")
            raise InputError([problem("image", "cannot decode the image (supported: PNG, "
                                      f"JPEG, TIFF, BMP, DICOM): {reason}")]) from e
    if size > max_pixels:
        raise InputError([problem("image", f"image has {size} pixels, more than the "
                                  f"{max_pixels} allowed: rejected as a possible "
                                  "decompression bomb. Downscale it, or start the server "
                                  "with a larger --max-pixels")])


def validate_inputs(model: ServedModel, inputs: Inputs, image_path: Path | None,
                    max_pixels: int) -> tuple[pd.DataFrame, list[str], list[str]]:
    """A one-row table for the model, warnings and the modalities the request lacks;
    :class:`InputError` on bad input."""
    spec = model.spec
    optional = model.clf.handles_missing  # trained to predict without a modality
    problems: list[dict[str, Any]] = []
    warnings: list[str] = []
    row: dict[str, Any] = {}
    if spec.image:
        problems += _image(row, spec.image, inputs, image_path, max_pixels, optional)
    for col, kind in spec.tabular.items():
        value = inputs.tabular.get(col)
        if value is None or (isinstance(value, str) and not value.strip()):
            if optional:  # imputed as in training; all of them missing: no tabular input
                row[col] = np.nan
            else:
                problems.append(problem(col, f"field '{col}' ({kind}) is required"))
            continue
        if kind == "continuous":
            try:
                if isinstance(value, bool):
                    raise ValueError
                number = float(value)
            except (TypeError, ValueError):
                problems.append(problem(col, f"field '{col}' must be a number; got {value!r}"))
                continue
            if not math.isfinite(number):
                problems.append(problem(col, f"field '{col}' must be a finite number; "
                                        f"got {value!r}"))
                continue
            row[col] = number
        else:
            text = str(value).strip()
            known = model.categories.get(col, [])
            if known and text not in known:
                warnings.append(f"field '{col}': value {text!r} was not seen in training; it "
                                f"is treated as {UNKNOWN} (known: {', '.join(known)})")
            row[col] = text
    extra = sorted(set(inputs.tabular) - set(spec.tabular))
    if extra:
        warnings.append(f"ignored unknown field(s) {extra}")
    if spec.text:
        if inputs.text is None and optional:
            row[spec.text] = ""
        elif inputs.text is None:
            problems.append(problem(spec.text, f"field '{spec.text}' (the text column; alias "
                                    "'text') is required; send an empty string if there is "
                                    "no text"))
        else:
            row[spec.text] = inputs.text
    if problems:
        raise InputError(problems)
    missing = missing_modalities(spec, row)
    if missing and len(missing) == len(spec.modalities):
        raise InputError([problem("body", "no input at all: send at least one of "
                                  + ", ".join(_FIELDS[m] for m in spec.modalities))])
    if missing:
        warnings.append(f"no {' / '.join(missing)} input: predicted from "
                        f"{' + '.join(m for m in spec.modalities if m not in missing)} alone")
    if spec.group:  # patient ids only group rows in training; one request is one patient
        row[spec.group] = "request"
    return pd.DataFrame([row]), warnings, missing


def _image(row: dict[str, Any], column: str, inputs: Inputs, path: Path | None,
           max_pixels: int, optional: bool) -> list[dict[str, Any]]:
    """Fill ``row[column]`` with the uploaded image's path; the problems with the upload."""
    nothing = inputs.image is None or path is None or (
        not inputs.image and not inputs.image_name)  # a form's empty file input
    if optional and nothing:
        row[column] = ""  # predicted from the other modalities
        return []
    if inputs.image is None or path is None:
        return [problem(column, f"field '{column}' (the image column; alias 'image') is "
                        "required: upload a PNG, JPEG or DICOM file (in JSON: its base64)")]
    if not inputs.image:
        return [problem("image", "the uploaded image is empty (0 bytes): "
                        "choose the file again")]
    problems: list[dict[str, Any]] = []
    try:
        check_pixels(path, max_pixels)
        read_image(path)
    except InputError as e:
        problems += e.problems
    except (MedfuseError, OSError) as e:
        reason = str(e).replace(str(path), "the upload")
        problems.append(problem("image", f"cannot decode the uploaded image: {reason}"))
    row[column] = str(path)
    return problems


def missing_modalities(spec: Any, row: dict[str, Any]) -> list[str]:
    """The modalities a one-row request lacks (empty image path / text, no tabular value)."""
    has = presence(pd.DataFrame([row]), spec)[0]
    return [m for m, h in zip(spec.modalities, has, strict=True) if not h]
