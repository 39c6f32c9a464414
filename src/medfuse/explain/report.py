"""Files written by :func:`medfuse.explain.explain` with ``out_dir``: figures, pages, index."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import numpy as np


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
    from medfuse.explain.image import figure_threshold_comparison, overlay_png
    from medfuse.explain.text import heatmap_html, heatmap_png, words_html

    files: dict[str, str] = {}
    title = f"row {pos}: {entry['prediction']} (p = {entry['probability']:.3f})"
    if "attr" in extra:
        from medfuse.data.images import read_image

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


def _table(items: list[dict[str, Any]], cols: tuple[str, ...]) -> str:
    if not items:
        return ""
    head = "".join(f"<th>{c}</th>" for c in cols)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_fmt(it.get(c)))}</td>" for c in cols) + "</tr>"
        for it in items
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def write_index(out: Path, doc: dict[str, Any]) -> Path:
    """``index.html``: per row the prediction, shares, top features / words and links."""
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>medfuse explanations</title>"
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;"
        "margin:.3em 0}td,th{border:1px solid #ccc;padding:.2em .5em;font-size:.9em}"
        "img{max-width:420px;margin:.3em}section{border-top:1px solid #999;"
        "margin-top:1.5em}</style></head><body>",
        f"<h2>Explanations: {html.escape(doc['estimator'])}</h2>",
        "<ul>" + "".join(f"<li><b>{html.escape(k)}</b>: {html.escape(v)}</li>"
                         for k, v in doc["methods"].items()) + "</ul>",
        "<p>data: <a href='explanations.json'>explanations.json</a></p>",
    ]
    for entry in doc["rows"]:
        files = entry.get("files", {})
        shares = ", ".join(f"{k} {v:.0%}" for k, v in entry["modalities"].items())
        parts.append(
            f"<section><h3>row {entry['row']}: {html.escape(str(entry['prediction']))} "
            f"(p = {entry['probability']:.3f})</h3><p>modality shares: {shares}</p>"
        )
        for kind in ("image", "threshold"):
            if kind in files:
                parts.append(f"<a href='{files[kind]}'><img src='{files[kind]}'></a>")
        features = sorted(entry["features"], key=lambda f: -abs(f["score"]))[:10]
        parts.append(_table(features, ("name", "value", "score")))
        links = [f"<a href='{files[k]}'>{label}</a>" for k, label in
                 (("text", "words"), ("text_heatmap", "token x dimension heatmap"),
                  ("text_heatmap_png", "heatmap (PNG)")) if k in files]
        if links:
            parts.append("<p>text: " + " | ".join(links) + "</p>")
        parts.append("</section>")
    parts.append("</body></html>")
    path = out / "index.html"
    path.write_text("\n".join(parts), encoding="utf-8")
    return path
