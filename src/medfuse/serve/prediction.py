"""Answering one prediction request: the upload written to a temporary file, the inputs
validated, the model's probabilities and decision, its conformal prediction set (``abstain``
when it is not a single class: "uncertain: refer"), gate weights, and with ``explain`` the
explanation and a PNG of the image with its regions circled.
"""

from __future__ import annotations

import base64
import io
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from PIL import ImageDraw

from medfuse.data.images import read_image
from medfuse.errors import DataError
from medfuse.estimators.base import NO_CONFORMAL
from medfuse.serve.inputs import InputError, Inputs, problem
from medfuse.serve.model import ServedModel
from medfuse.serve.validation import validate_inputs


def predict_inputs(model: ServedModel, inputs: Inputs, explain: bool,
                   max_pixels: int) -> dict[str, Any]:
    """The JSON answer of ``POST /api/predict`` for ``inputs`` (without ``latency_ms``);
    :class:`InputError` on bad input."""
    with tempfile.TemporaryDirectory(prefix="medfuse-serve-") as tmp:
        path = None
        if inputs.image is not None:
            path = Path(tmp) / ("upload" + upload_suffix(inputs.image, inputs.image_name))
            path.write_bytes(inputs.image)
        df, warnings, missing = validate_inputs(model, inputs, path, max_pixels)
        try:
            proba = model.predict_proba(df)
        except DataError as e:
            raise InputError([problem("body", str(e))]) from e
        if not np.isfinite(proba).all():  # JSON has no NaN: say why instead of a 500
            raise InputError([problem("body", "the model cannot score these values (its "
                                      "probabilities are not finite); check the "
                                      "inputs' ranges")])
        classes = [str(c) for c in model.clf.classes_]
        if getattr(model.clf, "multilabel", False):
            out = multilabel_answer(model, proba, classes, warnings, missing)
        else:
            out = single_label_answer(model, df, proba, classes, warnings, missing)
        gates = model.gate_weights(df)
        if gates is not None:
            out["gates"] = gates
        if explain:
            entry = model.explain(df)
            explanation = {k: entry.get(k, []) for k in ("regions", "words", "features")}
            if path is not None and model.spec.image and df[model.spec.image].iloc[0]:
                png = overlay_png(path, entry.get("regions", []))
                explanation["overlay_png_base64"] = base64.b64encode(png).decode()
            out["modalities"] = entry.get("modalities")
            out["explanation"] = explanation
        return out


def single_label_answer(model: ServedModel, df: Any, proba: np.ndarray, classes: list[str],
                        warnings: list[str], missing: Any) -> dict[str, Any]:
    """The answer's decision part for a single-label model: the positive class's
    probability, the decision at the threshold and the conformal prediction set."""
    decision = str(model.clf.decide(proba)[0])
    pos = model.positive_index()
    out: dict[str, Any] = {
        "probability": float(proba[0, pos]),
        "positive_class": classes[pos],
        "probabilities": {c: float(p) for c, p in zip(classes, proba[0], strict=True)},
        "decision": decision,
        "threshold": float(model.clf.threshold_),
        "modalities": None,
        "missing": missing,
        "warnings": warnings,
        "backend": model.backend,
    }
    sets = model.prediction_sets(df, proba)
    if sets is None:
        out.update(prediction_set=None, abstain=None, conformal_alpha=None)
        out["warnings"].append(NO_CONFORMAL)
    else:
        out.update(prediction_set=[c for c, keep in zip(classes, sets[0], strict=True)
                                   if keep],
                   abstain=bool(sets[0].sum() != 1),
                   conformal_alpha=model.conformal_alpha())
    return out


def multilabel_answer(model: ServedModel, proba: np.ndarray, classes: list[str],
                      warnings: list[str], missing: Any) -> dict[str, Any]:
    """The answer's decision part for a multi-label model: every finding with its
    probability, its own threshold and whether it is present; ``probability`` /
    ``positive_class`` are the most probable finding's (the one explained), ``decision``
    the findings present, joined as in the training table (``"none"`` for none)."""
    decided = np.asarray(model.clf.decide(proba))[0].astype(bool)
    thresholds = [float(t) for t in getattr(model.clf, "thresholds", [0.5] * len(classes))]
    top = int(np.argmax(proba[0]))
    present = [c for c, d in zip(classes, decided, strict=True) if d]
    return {
        "probability": float(proba[0, top]),
        "positive_class": classes[top],
        "probabilities": {c: float(p) for c, p in zip(classes, proba[0], strict=True)},
        "findings": [{"label": c, "probability": float(proba[0, j]), "present": bool(decided[j]),
                      "threshold": thresholds[j]} for j, c in enumerate(classes)],
        "predicted_labels": present,
        "decision": model.spec.separator.join(present) if present else "none",
        "threshold": thresholds[top],
        "modalities": None,
        "missing": missing,
        "warnings": [*warnings, MULTILABEL_NO_SETS],
        "backend": model.backend,
        "prediction_set": None, "abstain": None, "conformal_alpha": None,
    }


MULTILABEL_NO_SETS = ("multi-label model: each finding is decided at its own threshold "
                      "(fitted on the validation rows); there are no conformal prediction sets")


def upload_suffix(data: bytes, name: str) -> str:
    """The file suffix for an upload: ``.dcm`` for DICOM, else the name's (``.img``)."""
    if len(data) > 132 and data[128:132] == b"DICM":
        return ".dcm"
    ext = Path(name).suffix.lower()
    return ext if ext and len(ext) <= 6 else ".img"


def overlay_png(path: Path, regions: list[dict[str, Any]]) -> bytes:
    """PNG of the image at ``path`` with the explanation's regions circled."""
    img = read_image(path)
    scale = 1.0
    if max(img.size) < 256:  # small images: enlarge so the circles are visible
        scale = 256 / max(img.size)
        img = img.resize((round(img.size[0] * scale), round(img.size[1] * scale)))
    draw = ImageDraw.Draw(img)
    width = max(2, round(max(img.size) / 150))
    for i, r in enumerate(regions):
        x, y, rad = (float(r[k]) * scale for k in ("x", "y", "r"))
        rad = max(rad, 3.0)
        colour = (0, 220, 80) if i == 0 else (255, 200, 0)
        draw.ellipse((x - rad, y - rad, x + rad, y + rad), outline=colour, width=width)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()
