"""Files written by :func:`medfuse.explain.explain` with ``out_dir``: figures, pages, index."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from medfuse.data.images import read_image
from medfuse.explain.figures import figure_threshold_comparison, overlay_png
from medfuse.explain.pages import render
from medfuse.explain.text import heatmap_html, heatmap_png, words_html


def methods(clf: Any, state: Any) -> dict[str, str]:
    """Which method produced each part of the explanations (for ``explanations.json``)."""
    if state is None:
        return {
            "regions": "SmoothGrad integrated gradients (captum NoiseTunnel), mid-grey "
                       "baseline, |attr| summed over channels, thresholded and clustered",
            "words": "layer integrated gradients on the text embedding layer, padding baseline",
            "features": "layer integrated gradients on categorical embeddings and continuous "
                        "inputs (unknown-category / training-mean baseline)",
            "modalities": "sum of |integrated gradients| per modality, normalised",
        }
    linear = state.head.kind == "linear"
    return {
        "regions": ("SmoothGrad integrated gradients through the image encoder and the "
                    "linear head" if linear
                    else "occlusion (8 x 8 grid, median-colour squares) with predict_proba"),
        "words": "leave-one-word-out change of predict_proba",
        "features": state.head.method,
        "modalities": f"sum of |{state.head.method}| per feature block, normalised",
    }


def write_row(out: Path, pos: int, entry: dict[str, Any], extra: dict[str, Any]
              ) -> dict[str, str]:
    """Write one row's figures and pages; return ``{kind: file name}``."""
    files: dict[str, str] = {}
    title = f"row {pos}: {entry['prediction']} (p = {entry['probability']:.3f})"
    if "attr" in extra:
        image = np.asarray(read_image(extra["image_path"]))
        name = f"row{pos}_image.png"
        (out / name).write_bytes(overlay_png(image, extra["attr"], entry["regions"],
                                             f"{title}\n{extra['method']}"))
        files["image"] = name
        name = f"row{pos}_threshold.png"
        (out / name).write_bytes(figure_threshold_comparison(image, extra["attr"]))
        files["threshold"] = name
    if entry["words"] or "text_views" in extra:
        name = f"row{pos}_text.html"
        (out / name).write_text(words_html(entry["words"], f"Token attributions, {title}"),
                                encoding="utf-8")
        files["text"] = name
    views = extra.get("text_views") or []
    if views:
        view = views[0]
        suffix = f" ({view.view} view)" if len(views) > 1 else ""
        name = f"row{pos}_text_heatmap.html"
        (out / name).write_text(heatmap_html(view.tokens, view.matrix, f"{title}{suffix}"),
                                encoding="utf-8")
        files["text_heatmap"] = name
        name = f"row{pos}_text_heatmap.png"
        (out / name).write_bytes(heatmap_png(view.tokens, view.matrix, f"{title}{suffix}"))
        files["text_heatmap_png"] = name
    return files


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


_FEATURE_COLUMNS = ("name", "value", "score")
_TEXT_LINKS = (("text", "words"), ("text_heatmap", "token x dimension heatmap"),
               ("text_heatmap_png", "heatmap (PNG)"))


def write_index(out: Path, doc: dict[str, Any]) -> Path:
    """``index.html``: per row the prediction, shares, top features / words and links."""
    rows = []
    for entry in doc["rows"]:
        files = entry.get("files", {})
        features = sorted(entry["features"], key=lambda f: -abs(f["score"]))[:10]
        rows.append({
            "row": entry["row"], "prediction": str(entry["prediction"]),
            "probability": f"{entry['probability']:.3f}",
            "shares": [f"{k} {v:.0%}" for k, v in entry["modalities"].items()],
            "images": [files[k] for k in ("image", "threshold") if k in files],
            "features": [[_fmt(f.get(c)) for c in _FEATURE_COLUMNS] for f in features],
            "links": [(files[k], label) for k, label in _TEXT_LINKS if k in files],
        })
    page = render("index.html.j2", estimator=doc["estimator"],
                  methods=list(doc["methods"].items()), feature_columns=_FEATURE_COLUMNS,
                  rows=rows)
    path = out / "index.html"
    path.write_text(page, encoding="utf-8")
    return path
