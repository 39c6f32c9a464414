"""``results.md``: the benchmark's results as Markdown tables."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _f(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_f(c) if not isinstance(c, str) else c for c in r) + " |"
              for r in rows]
    return [*lines, ""]


def _job(r: Any) -> dict[str, Any]:
    return r if isinstance(r, dict) else {}


def _err(r: Any) -> str:
    r = _job(r)
    return f" (failed: {r['error']})" if "error" in r else ""


def _model_rows(models: dict[str, Any], names: list[tuple[str, str]]) -> list[list[Any]]:
    rows = []
    for key, label in names:
        r = _job(models.get(key))
        if not r:
            continue
        rows.append([label + _err(r), _f(r.get("accuracy"), 4), _f(r.get("roc_auc"), 4),
                     _f(r.get("wall_seconds")), _f(r.get("fit_seconds", r.get("seconds"))),
                     _f(r.get("peak_rss_mb"), 0)])
    return rows


def render(results: dict[str, Any]) -> str:
    """The Markdown report of a ``results.json`` dict."""
    run = results.get("run", {})
    m = run.get("machine", {})
    out = ["# medfuse benchmark", ""]
    out += [f"`{run.get('command', 'medfuse benchmark')}` - {run.get('started', '')}, "
            f"{_f(run.get('seconds'))} s in all" + (" (**quick mode**: small sizes, the "
                                                    "figures are smoke-test values)"
                                                    if run.get("quick") else ""), ""]
    out += [f"Machine: {m.get('cpu', '?')}, {m.get('cores', '?')} cores, torch "
            f"{m.get('torch', '?')} ({m.get('torch_threads', '?')} threads), native bf16: "
            f"{_f(m.get('native_bf16'))}. Load average before / after: "
            f"{run.get('load_average_before')} / {run.get('load_average_after')} (above "
            f"~0.5 before the start, other jobs shared the cores: seconds are upper bounds; "
            "ratios are measured within this one run).", ""]

    out += ["## Targets", ""]
    out += _table(["target", "measured", "threshold", "met"], [
        [t["target"], _f(t["value"], 3), f"{t['op']} {t['threshold']}", _f(t["met"])]
        for t in results.get("targets", [])])

    ext = results.get("feature_extraction") or {}
    if ext.get("naive_img_per_s") is not None or ext.get("medfuse_img_per_s") is not None:
        out += [f"## Feature extraction (Br35H, {ext.get('images')} images, EfficientNet-Lite0 "
                f"at {ext.get('image_size')} px, batch {ext.get('batch_size')}, decode + "
                "forward)", ""]
        jobs = ext.get("jobs") or {}
        naive, med = _job(jobs.get("naive")), _job(jobs.get("medfuse"))
        out += _table(["pipeline", "img/s", "x naive", "seconds", "peak RSS MB"], [
            ["naive: PIL + torchvision per image, default DataLoader, eager fp32 NCHW"
             + _err(naive), ext.get("naive_img_per_s"), "1.00", naive.get("seconds"),
             _f(naive.get("peak_rss_mb"), 0)],
            ["medfuse, cold decoded-image cache (first run)" + _err(med),
             ext.get("medfuse_img_per_s"), _f(ext.get("speedup"), 2),
             _get(med, "cold", "seconds"), _f(med.get("peak_rss_mb"), 0)],
            ["medfuse, warm decoded-image cache", ext.get("medfuse_warm_img_per_s"),
             _f(ext.get("warm_speedup"), 2), _get(med, "warm", "seconds"), "-"],
        ])
        out += [f"medfuse's network runs in {ext.get('backend')}. fp32 GEMM (best of a few "
                "square matmuls, same run): "
                f"**{_f(ext.get('gemm_gflops'))} GFLOP/s**; the backbone costs "
                f"{_f((ext.get('flops_per_image') or 0) / 1e9, 3)} GFLOP per image (convolutions"
                " + matmuls, a multiply-add = 2 FLOPs), so the GEMM peak implies "
                f"{_f(ext.get('peak_implied_img_per_s'))} img/s; medfuse reaches "
                f"**{_f(ext.get('fraction_of_peak'), 3)}** of it cold, "
                f"{_f(ext.get('fraction_of_peak_warm'), 3)} warm.", ""]
        var = ext.get("variants") or {}
        if var.get("img_per_s"):
            out += [f"Network alone, one batch of {var.get('batch')} real images "
                    f"({var.get('reps')} timed passes, best of two rounds):", ""]
            out += _table(["variant", "img/s", "x eager fp32 NCHW"], [
                [k, v, _f((var.get("speedup") or {}).get(k), 2)]
                for k, v in var["img_per_s"].items()])
            notes = []
            if "compile_seconds" in var:
                notes.append(f"torch.compile took {var['compile_seconds']} s (first call)")
            if "onnx_export_seconds" in var:
                notes.append(f"ONNX export {var['onnx_export_seconds']} s")
            if "onnx_error" in var:
                notes.append(f"onnxruntime failed: {var['onnx_error']}")
            if notes:
                out += ["; ".join(notes) + ".", ""]
        par = ext.get("parity") or {}
        if par and "error" not in par:
            out += [f"Parity with fp32 ({par.get('images')} images; the naive loop's features "
                    "are the fp32 reference: same input pixels). CV = "
                    f"{par.get('cv_folds')}-fold duplicate-grouped accuracy of a standardised "
                    "logistic regression (C = 0.5) on the features; fp32 reference: "
                    f"{_f(par.get('cv_accuracy_fp32_reference'), 4)}.", ""]
            labels = {"medfuse": f"medfuse default ({ext.get('backend')})",
                      "medfuse_bf16": "medfuse precision bf16-mixed (PyTorch bf16 autocast)"}
            out += _table(["features", "cosine min", "cosine mean", "rel. error median",
                           "rel. error max", "CV accuracy", "CV change"], [
                [labels.get(k, k), _f(v.get("cosine_min"), 6), _f(v.get("cosine_mean"), 6),
                 f"{v.get('relative_error_median', 0):.2e}",
                 f"{v.get('relative_error_max', 0):.2e}", _f(v.get("cv_accuracy"), 4),
                 _f(v.get("cv_accuracy_delta"), 4)]
                for k, v in par.items() if isinstance(v, dict)])
            bf = _job((ext.get("jobs") or {}).get("medfuse_bf16"))
            if bf:
                out += [f"The bf16 path extracts at {_f(ext.get('medfuse_bf16_img_per_s'))} "
                        "img/s (cold cache)" + _err(bf) + ".", ""]
        elif par:
            out += [f"Parity check failed: {par.get('error')}", ""]

    tr = results.get("training") or {}
    jobs = tr.get("jobs") or {}
    if jobs:
        out += [f"## Fine-tuning (Br35H, {tr.get('rows') or 'all'} rows, {tr.get('epochs')} "
                f"epochs, {tr.get('image_size')} px, batch 32)", ""]
        naive, med = _job(jobs.get("naive")), _job(jobs.get("medfuse"))
        out += _table(["loop", "img/s", "x naive", "fit s", "accuracy", "ROC AUC",
                       "wall s", "peak RSS MB"], [
            ["naive: PIL + torchvision per image, eager fp32 NCHW" + _err(naive),
             naive.get("img_per_s"), "1.00", naive.get("seconds"), _f(naive.get("accuracy"), 4),
             _f(naive.get("roc_auc"), 4), naive.get("wall_seconds"),
             _f(naive.get("peak_rss_mb"), 0)],
            [f"medfuse ({med.get('precision', '?')}, channels-last, decoded-image cache)"
             + _err(med), med.get("img_per_s"), _f(tr.get("speedup"), 2), med.get("seconds"),
             _f(med.get("accuracy"), 4), _f(med.get("roc_auc"), 4), med.get("wall_seconds"),
             _f(med.get("peak_rss_mb"), 0)],
        ])
        out += [f"Rows: {naive.get('train_rows', med.get('train_rows'))} train / "
                f"{naive.get('valid_rows', med.get('valid_rows'))} valid / "
                f"{naive.get('test_rows', med.get('test_rows'))} test (duplicate-grouped). "
                "img/s = epochs x training rows / fit seconds (validation passes included "
                "for both).", ""]
        steps = tr.get("steps") or {}
        if steps.get("img_per_s"):
            out += [f"Training steps alone (forward + backward + AdamW, batch "
                    f"{steps.get('batch')}, {steps.get('size')} px):", ""]
            out += _table(["variant", "img/s", "x eager fp32 NCHW"], [
                [k, v, _f((steps.get("speedup") or {}).get(k), 2)]
                for k, v in steps["img_per_s"].items()])

    ds = results.get("datasets") or {}
    cols = ["model", "accuracy", "ROC AUC", "wall s", "fit s", "peak RSS MB"]
    if ds.get("iu_xray"):
        iu = ds["iu_xray"]
        out += [f"## IU X-ray ({iu.get('rows')} rows; same holdout split, grouped by "
                "patient)", ""]
        out += _table(cols, _model_rows(iu, [
            ("fused", "medfuse fused (word-CNN + tabular, `iu_xray`)"),
            ("hybrid", "medfuse hybrid (in-fold word-CNN + word2vec + MiniLM features, XGBoost; "
             "`iu_xray_hybrid` without its fine-tuned MiniLM)"),
            ("tfidf_lr", "TF-IDF 1-2 grams + logistic regression (scikit-learn)")]))
    if ds.get("iu_xray_findings"):
        out += _findings(ds["iu_xray_findings"])
    if ds.get("br35h"):
        br = ds["br35h"]
        out += [f"## Br35H ({br.get('rows', 'all')} rows; same duplicate-grouped split)", ""]
        out += _table(cols, _model_rows(br, [
            ("hybrid", "medfuse hybrid (frozen Lite0 288 px GeM + mirror, LR; cold cache)"),
            ("fine_tuned", "medfuse fine-tuned (`br35h`, 160 px)"),
            ("naive_loop", "plain eager PyTorch loop (same backbone, weights, recipe)")]))
    if ds.get("synth_derm"):
        sd = ds["synth_derm"]
        out += [f"## synth-derm ({sd.get('rows')} rows; same split): fused vs single "
                "modalities", ""]
        out += _table(cols, _model_rows(sd, [(k, k) for k in
                                             ("image", "tabular", "text", "fused")]))
    if ds.get("synth_derm_findings"):
        sf = ds["synth_derm_findings"]
        out += [f"## synth-derm findings ({sf.get('rows')} rows, 3 findings, multi-label; "
                "same split): fused vs single modalities", "",
                "ROC AUC is the macro mean over the findings (halo: image, sun damage: age + "
                "site, family history: the note).", ""]
        findings = ("halo", "sun_damage", "family_history")
        out += _table(cols + [f"{f} ROC AUC" for f in findings], [
            row + [_f((_job(sf.get(k)).get("per_label_roc_auc") or {}).get(f), 4)
                   for f in findings]
            for k in ("image", "tabular", "text", "fused")
            for row in _model_rows(sf, [(k, k)])])
    if results.get("scale"):
        out += _scale(results["scale"])
    serve = results.get("serve_load")
    if serve:
        out += ["## Server load test", ""]
        flat = _flatten(serve)
        out += _table(["key", "value"], [[k, v] for k, v in flat.items()][:60])
    return "\n".join(out).rstrip() + "\n"


def _scale(sc: dict[str, Any]) -> list[str]:
    """The scale section: seconds and peak RSS per stage and row count, the exponents."""
    rows_ = sc.get("rows") or []
    out = [f"## Scale (generated synth-derm rows, {sc.get('image_size')} px images; each "
           "stage in its own process; seconds of work, without start-up)", ""]
    table = []
    for name, st in (sc.get("stages") or {}).items():
        secs, rss = st.get("seconds") or [], st.get("peak_rss_mb") or []
        table.append([name, *[f"{_f(s, 2)} s / {_f(m, 0)} MB" for s, m in zip(secs, rss,
                                                                             strict=False)],
                      _f(st.get("exponent"), 2), _f(st.get("exponent_last"), 2)])
    out += _table(["stage", *[f"{n} rows" for n in rows_], "exponent", "exponent (last two)"],
                  table)
    nd = sc.get("near_duplicates") or {}
    out += _table(["near-duplicate search alone (random hashes, 8 views, radius 6)", "seconds",
                   "peak RSS MB", "blocks (0: exhaustive)", "pairs"],
                  [[f"{n} hashes", _f(s, 2), _f(m, 0), _f(b), _f(p)] for n, s, m, b, p in zip(
                      nd.get("n") or [], nd.get("seconds") or [], nd.get("peak_rss_mb") or [],
                      nd.get("blocks") or [], nd.get("pairs") or [], strict=False)])
    return out


def _findings(fd: dict[str, Any]) -> list[str]:
    """The IU X-ray findings section: pooled out-of-fold AUCs, the peer beside medfuse."""
    out = [f"## IU X-ray findings ({fd.get('rows')} rows, 10 labels, multi-label; pooled "
           f"out-of-fold over {fd.get('folds')} patient-grouped folds)", ""]
    rows = []
    for key, label in (("medfuse", "medfuse cv (`iu_xray_findings`)"),
                       ("peer", "TF-IDF 1-2 grams + one-vs-rest logistic regression "
                        "(scikit-learn)")):
        r = _job(fd.get(key))
        if key == "medfuse" and not r:
            rows.append([label, "not measured", "-", "-", "-", "-", "-"])
            continue
        rows.append([label + _err(r), _f(r.get("macro_roc_auc"), 4),
                     _f(r.get("micro_roc_auc"), 4), _f(r.get("macro_pr_auc"), 4),
                     _f(r.get("wall_seconds")), _f(r.get("fit_seconds")),
                     _f(r.get("peak_rss_mb"), 0)])
    out += _table(["model", "macro ROC AUC", "micro ROC AUC", "macro PR AUC", "wall s",
                   "fit s", "peak RSS MB"], rows)
    per = {k: _job(fd.get(k)).get("per_label_roc_auc") or {} for k in ("peer", "medfuse")}
    if per["peer"] or per["medfuse"]:
        names = list(per["peer"] or per["medfuse"])
        out += _table(["finding", "positives", "peer ROC AUC", "medfuse ROC AUC"], [
            [n, _f((_job(fd.get("peer")).get("positives") or {}).get(n)),
             _f(per["peer"].get(n), 4), _f(per["medfuse"].get(n), 4)] for n in names])
    return out


def _get(d: dict[str, Any], *keys: str) -> Any:
    for k in keys:
        if not isinstance(d, dict):
            return None
        d = d.get(k)  # type: ignore[assignment]
    return d


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    if isinstance(d, dict):
        for k, v in d.items():
            if k == "traceback":
                continue
            out.update(_flatten(v, f"{prefix}{k}."))
    elif isinstance(d, list):
        out[prefix[:-1]] = ", ".join(str(x) for x in d[:10])
    else:
        out[prefix[:-1]] = d
    return out


def write_markdown(results: dict[str, Any], path: Path) -> Path:
    from medfuse.io import atomic_write_text

    atomic_write_text(path, render(results))
    return path
