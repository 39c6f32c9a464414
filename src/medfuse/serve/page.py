"""The single HTML page of ``medfuse serve``, generated from the model's spec.

Inline CSS and JavaScript only (no CDN), so the page works offline.
"""

from __future__ import annotations

from html import escape
from typing import Any

_CSS = """
body{font-family:system-ui,sans-serif;margin:0;background:#f5f6f8;color:#222}
header{background:#1f3b57;color:#fff;padding:.8rem 1.2rem}
header h1{margin:0;font-size:1.3rem} header p{margin:.2rem 0 0;font-size:.85rem;opacity:.85}
main{display:flex;flex-wrap:wrap;gap:1rem;padding:1rem}
section{background:#fff;border-radius:8px;padding:1rem;box-shadow:0 1px 3px #0002;
 flex:1 1 340px}
label{display:block;font-weight:600;margin:.6rem 0 .2rem}
input,select,textarea{width:100%;box-sizing:border-box;padding:.4rem;font:inherit}
textarea{min-height:6rem} button{margin-top:1rem;padding:.5rem 1.2rem;font:inherit;
 background:#1f3b57;color:#fff;border:0;border-radius:4px;cursor:pointer}
button:disabled{opacity:.5} #preview{max-width:220px;max-height:220px;display:none;
 margin-top:.4rem;border:1px solid #ccc}
#overlay{max-width:100%;border:1px solid #ccc}
.prob{font-size:2rem;font-weight:700} .decision{font-size:1.2rem}
.err{color:#a00;white-space:pre-wrap} .warn{color:#8a5a00}
.word{padding:0 2px;border-radius:3px} table{border-collapse:collapse;width:100%}
td,th{border-bottom:1px solid #eee;padding:.2rem .4rem;text-align:left}
.bar{display:inline-block;height:.7rem} .pos{background:#c0392b} .neg{background:#2e86c1}
small{color:#666}
"""

_JS = """
const SPEC = __SPEC__;
const form = document.getElementById('form');
const fileInput = document.getElementById('image');
if (fileInput) fileInput.addEventListener('change', () => {
  const img = document.getElementById('preview');
  const f = fileInput.files[0];
  if (f && /image\\/(png|jpeg)/.test(f.type)) {
    img.src = URL.createObjectURL(f); img.style.display = 'block';
  } else { img.style.display = 'none'; }
});
function esc(s) { const d = document.createElement('div'); d.textContent = String(s);
  return d.innerHTML; }
function shade(score, max) {
  const a = Math.min(1, Math.abs(score) / (max || 1));
  return score >= 0 ? `rgba(192,57,43,${a.toFixed(2)})` : `rgba(46,134,193,${a.toFixed(2)})`;
}
function shares(title, id, values) {  // {name: share in [0, 1]} as a table of bars
  let t = `<h3>${title}</h3><table id="${id}">`;
  for (const [k, v] of Object.entries(values))
    t += `<tr><td>${esc(k)}</td><td><span class="bar pos" ` +
         `style="width:${(150 * v).toFixed(0)}px"></span> ${(100 * v).toFixed(0)}%</td></tr>`;
  return t + '</table>';
}
form.addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const out = document.getElementById('result');
  const btn = document.getElementById('submit');
  btn.disabled = true; out.innerHTML = '<p>Predicting…</p>';
  const headers = {};
  const tok = document.getElementById('token');
  if (tok && tok.value) headers['Authorization'] = 'Bearer ' + tok.value;
  try {
    const resp = await fetch('api/predict?explain=true', {method: 'POST', headers,
                             body: new FormData(form)});
    const data = await resp.json();
    if (!resp.ok) {
      const items = (data.detail || []).map(d => typeof d === 'string' ? d : d.msg);
      out.innerHTML = `<p class="err" id="error">Error ${resp.status}:\\n` +
        items.map(esc).join('\\n') + '</p>';
      return;
    }
    let html = `<p>P(${esc(data.positive_class)}) = <span class="prob" id="probability">` +
      `${(100 * data.probability).toFixed(1)}%</span></p>` +
      `<p class="decision">Decision: <b id="decision">${esc(data.decision)}</b> ` +
      `<small>(threshold ${data.threshold.toFixed(3)})</small></p>`;
    for (const w of data.warnings || []) html += `<p class="warn">⚠ ${esc(w)}</p>`;
    const ex = data.explanation || {};
    if (data.modalities) html += shares('Modalities', 'modalities', data.modalities);
    if (data.gates) html += shares('Gate weights', 'gates', data.gates);
    if (ex.overlay_png_base64)
      html += '<h3>Image regions</h3><img id="overlay" alt="explanation overlay" ' +
              `src="data:image/png;base64,${ex.overlay_png_base64}">`;
    if (ex.words && ex.words.length) {
      const max = Math.max(...ex.words.map(w => Math.abs(w.score)));
      html += '<h3>Words</h3><p id="words">' + ex.words.map(w =>
        `<span class="word" title="${w.score.toFixed(4)}" ` +
        `style="background:${shade(w.score, max)}">${esc(w.token)}</span>`).join(' ') +
        '</p>';
    }
    if (ex.features && ex.features.length) {
      const max = Math.max(...ex.features.map(f => Math.abs(f.score)));
      html += '<h3>Tabular contributions</h3><table id="features">' +
        '<tr><th>feature</th><th>value</th><th>contribution</th></tr>';
      for (const f of ex.features) {
        const w = (80 * Math.abs(f.score) / (max || 1)).toFixed(0);
        html += `<tr><td>${esc(f.name)}</td><td>${esc(f.value ?? "not given")}</td><td>` +
          `<span class="bar ${f.score >= 0 ? 'pos' : 'neg'}" style="width:${w}px"></span> ` +
          `${f.score.toFixed(4)}</td></tr>`;
      }
      html += '</table><small>red supports the decision, blue argues against it</small>';
    }
    out.innerHTML = html;
  } catch (e) {
    out.innerHTML = `<p class="err" id="error">${esc(e)}</p>`;
  } finally { btn.disabled = false; }
});
"""


_OPTIONAL = ' <small>(optional)</small>'


def _field(col: str, kind: str, categories: list[str], optional: bool = False) -> str:
    name = escape(col)
    required, note = ("", _OPTIONAL) if optional else (" required", "")
    if kind == "continuous":
        return (f'<label for="f_{name}">{name}{note}</label>'
                f'<input type="number" step="any" id="f_{name}" name="{name}"{required}>')
    options = "".join(f'<option value="{escape(c)}">{escape(c)}</option>' for c in categories)
    first = ('<option value="" selected>not known</option>' if optional
             else '<option value="" disabled selected>choose…</option>')
    return (f'<label for="f_{name}">{name}{note}</label>'
            f'<select id="f_{name}" name="{name}"{required}>{first}{options}</select>')


def render_page(model: Any, token_required: bool = False) -> str:
    """The HTML page for ``model`` (a :class:`~medfuse.serve.app.ServedModel`)."""
    import json

    spec = model.spec
    optional = bool(model.clf.handles_missing)  # any input may be left out
    parts = []
    if optional:
        parts.append('<p id="optional-note"><small>This model was trained to predict from '
                     'whichever inputs you have: leave out what is not available.</small></p>')
    if token_required:
        parts.append('<label for="token">Access token</label>'
                     '<input type="password" id="token" autocomplete="off">')
    if spec.image:
        parts.append(f'<label for="image">Image (PNG, JPEG or DICOM){_OPTIONAL * optional}'
                     '</label><input type="file" id="image" name="image"'
                     f'{"" if optional else " required"} '
                     'accept="image/png,image/jpeg,.dcm,.dicom,application/dicom">'
                     '<img id="preview" alt="preview">')
    for col, kind in spec.tabular.items():
        parts.append(_field(col, kind, model.categories.get(col, []), optional))
    if spec.text:
        parts.append(f'<label for="text">{escape(spec.text)}</label>'
                     '<textarea id="text" name="text"></textarea>')
    classes = ", ".join(escape(str(c)) for c in model.clf.classes_)
    js = _JS.replace("__SPEC__", json.dumps(spec.model_dump(mode="json")).replace("</", "<\\/"))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>medfuse · {escape(model.run.name)}</title><style>{_CSS}</style></head>
<body><header><h1>medfuse · {escape(model.run.name)}</h1>
<p>Predicts {escape(str(spec.target))} ({classes}) · backend {model.backend} ·
research use only, not a medical device</p></header>
<main><section><h2>Inputs</h2><form id="form">{''.join(parts)}
<button id="submit" type="submit">Predict</button></form></section>
<section><h2>Result</h2><div id="result"><p>Fill in the inputs and press Predict.</p></div>
<p><a href="report" target="_blank">Model report</a> · <a href="docs">API docs</a>
· <a href="openapi.json">OpenAPI</a></p></section></main>
<script>{js}</script></body></html>
"""
