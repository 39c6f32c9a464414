"""``medfuse benchmark``: medfuse against its peers and against the machine, in one run.

:func:`run_benchmark` runs these sections (each job in its own process, so every wall
time and peak RSS is that job's alone) and writes ``OUT/results.json`` and
``OUT/results.md``:

* ``gemm``: fp32 matmul GFLOP/s of this machine and FLOPs per image of the backbone
  (:mod:`medfuse.benchmark.gemm`);
* ``extraction``: frozen-feature extraction, medfuse vs a plain eager loop, network
  variants, bf16 parity (:mod:`medfuse.benchmark.extraction`);
* ``training``: Br35H fine-tuning, medfuse vs a plain eager loop, training-step
  variants (:mod:`medfuse.benchmark.training`);
* ``datasets``: IU X-ray (fused, hybrid, TF-IDF + LR), IU X-ray findings (multi-label:
  medfuse cv vs TF-IDF + one-vs-rest LR), Br35H hybrid, synth-derm and synth-derm findings
  (fused vs each modality) (:mod:`medfuse.benchmark.datasets`);
* ``serve_load``: a load test of ``medfuse serve`` (``medfuse.benchmark.serve_load``,
  when installed);
* ``scale``: each stage (validate, group, extract, fit, predict) timed alone at 1k-64k
  generated rows, the exponent of its growth, and near-duplicate grouping alone on 100k and
  1M hashes (:mod:`medfuse.benchmark.scale`).

``quick=True`` shrinks everything (a few rows, one epoch) to finish in a minute or two.
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from medfuse.benchmark._runner import Context, Log, run_job

SECTIONS = ("gemm", "extraction", "training", "datasets", "serve_load", "scale")
RESULTS_JSON, RESULTS_MD = "results.json", "results.md"

#: targets of issue 10 (ratios within one run)
TARGETS = {
    "extraction_speedup": 3.0,
    "fraction_of_peak": 0.60,
    "training_speedup": 1.6,
    "peak_rss_mb": 3072.0,
    # issue 27: TF-IDF 1-2 grams + one-vs-rest LR, 5-fold, as measured 2026-12-05
    "iu_findings_macro_auc": 0.9922,
    # issue 28: growth with the rows, 2 cores
    "scale_exponent": 1.2,
    "near_duplicates_100k_seconds": 60.0,
    "near_duplicates_1m_seconds": 900.0,
    "scale_peak_rss_mb": 6144.0,
}


def check_sections(sections: Sequence[str] | None) -> list[str]:
    """The sections to run, validated (all of them for None)."""
    from medfuse.errors import check_option

    if not sections:
        return list(SECTIONS)
    for s in sections:
        check_option("section", s, SECTIONS, "medfuse benchmark --only")
    return [s for s in SECTIONS if s in sections]


def machine() -> dict[str, Any]:
    """CPU, cores, library versions, bf16 support and the current load."""
    import torch

    from medfuse.perf import native_bf16

    model = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.partition(":")[2].strip()
                break
    except OSError:
        pass
    return {
        "cpu": model, "cores": os.cpu_count(), "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(), "native_bf16": native_bf16(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "python": platform.python_version(), "platform": platform.platform(),
    }


def _load() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def run_benchmark(out: str | Path, quick: bool = False, sections: Sequence[str] | None = None,
                  log: Log | None = None) -> dict[str, Any]:
    """Run the benchmark sections; write ``out/results.json`` and ``out/results.md``.

    Parameters
    ----------
    out:
        Output folder (scratch files go to ``out/work``).
    quick:
        Small sizes (a few rows, one epoch): about a minute or two.
    sections:
        Subset of :data:`SECTIONS` (default: all).
    log:
        Called with one line per job started / finished (rich markup allowed).

    Returns
    -------
    dict
        The content of ``results.json``.
    """
    names = check_sections(sections)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ctx = Context(out=out, quick=quick, log=log or (lambda message: None))
    t0 = time.perf_counter()
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    load_before = _load()
    raw: dict[str, Any] = {}
    for name in names:
        raw[name] = _SECTION_RUNNERS[name](ctx)
    results = assemble(raw, quick)
    results["run"] = {
        "started": started, "seconds": round(time.perf_counter() - t0, 1), "quick": quick,
        "sections": names, "load_average_before": load_before, "load_average_after": _load(),
        "command": "medfuse benchmark" + (" --quick" if quick else "") + f" --out {out}"
        + (f" --only {','.join(names)}" if sections else ""),
        "machine": machine(),
    }
    from medfuse.benchmark.report import write_markdown
    from medfuse.io import atomic_write_json

    atomic_write_json(out / RESULTS_JSON, results, default=str)
    write_markdown(results, out / RESULTS_MD)
    return results


def _serve_load(ctx: Context) -> dict[str, Any]:
    import importlib.util

    if importlib.util.find_spec("medfuse.benchmark.serve_load") is None:
        return {"skipped": "medfuse.benchmark.serve_load is not installed in this version"}
    model = ctx.out / "work" / "datasets" / "synth_derm_fused_model"
    return run_job(ctx, "serve_load", "_serve:run", out=str(ctx.work("serve_load")),
                   quick=ctx.quick, model_dir=str(model) if model.is_dir() else None)


def _gemm(ctx: Context) -> dict[str, Any]:
    from medfuse.benchmark import gemm

    return gemm.section(ctx)


def _extraction(ctx: Context) -> dict[str, Any]:
    from medfuse.benchmark import extraction

    return extraction.section(ctx)


def _training(ctx: Context) -> dict[str, Any]:
    from medfuse.benchmark import training

    return training.section(ctx)


def _datasets(ctx: Context) -> dict[str, Any]:
    from medfuse.benchmark import datasets

    return datasets.section(ctx)


def _scale(ctx: Context) -> dict[str, Any]:
    from medfuse.benchmark import scale

    return scale.section(ctx)


_SECTION_RUNNERS = {"gemm": _gemm, "extraction": _extraction, "training": _training,
                    "datasets": _datasets, "serve_load": _serve_load, "scale": _scale}


def _get(d: Any, *keys: str) -> Any:
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def _ratio(a: Any, b: Any, digits: int = 2) -> float | None:
    if not isinstance(a, (int, float)) or not isinstance(b, (int, float)) or not b:
        return None
    return round(float(a) / float(b), digits)


def assemble(raw: dict[str, Any], quick: bool) -> dict[str, Any]:
    """``results.json`` from the sections' raw results: headline figures and targets."""
    gemm, ext, train = raw.get("gemm", {}), raw.get("extraction", {}), raw.get("training", {})
    gflops = _get(gemm, "gemm_gflops")
    size = str(_get(ext, "image_size") or 224)
    flops = _get(gemm, "flops_per_image", size)
    med = _get(ext, "medfuse", "cold", "img_per_s")
    naive = _get(ext, "naive", "img_per_s")
    fraction = None
    if all(isinstance(v, (int, float)) for v in (med, flops, gflops)):
        fraction = round(med * flops / (gflops * 1e9), 3)
    extraction = {
        "medfuse_img_per_s": med, "naive_img_per_s": naive, "speedup": _ratio(med, naive),
        "medfuse_warm_img_per_s": _get(ext, "medfuse", "warm", "img_per_s"),
        "warm_speedup": _ratio(_get(ext, "medfuse", "warm", "img_per_s"), naive),
        "gemm_gflops": gflops, "flops_per_image": flops, "fraction_of_peak": fraction,
        "fraction_of_peak_warm": (
            round(_get(ext, "medfuse", "warm", "img_per_s") * flops / (gflops * 1e9), 3)
            if fraction is not None else None),
        "peak_implied_img_per_s": round(gflops * 1e9 / flops, 1) if fraction is not None
        else None,
        "medfuse_bf16_img_per_s": _get(ext, "medfuse_bf16", "cold", "img_per_s"),
        "images": _get(ext, "medfuse", "images"), "image_size": int(size),
        "batch_size": _get(ext, "batch_size"), "backend": _get(ext, "medfuse", "backend"),
        "variants": _get(ext, "variants"), "parity": _get(ext, "parity"),
        "jobs": {k: ext.get(k) for k in ("naive", "medfuse", "medfuse_bf16")} if ext else None,
    }
    tm, tn = _get(train, "medfuse"), _get(train, "naive")
    training = {
        "medfuse_img_per_s": _get(tm, "img_per_s"), "naive_img_per_s": _get(tn, "img_per_s"),
        "speedup": _ratio(_get(tm, "img_per_s"), _get(tn, "img_per_s")),
        "medfuse_accuracy": _get(tm, "accuracy"), "naive_accuracy": _get(tn, "accuracy"),
        "medfuse_roc_auc": _get(tm, "roc_auc"), "naive_roc_auc": _get(tn, "roc_auc"),
        "precision": _get(tm, "precision"), "rows": _get(train, "rows"),
        "epochs": _get(train, "epochs"), "image_size": _get(train, "image_size"),
        "steps": _get(train, "steps"), "jobs": {"medfuse": tm, "naive": tn} if train else None,
    }
    datasets = dict(raw.get("datasets", {}))
    if train:
        br = dict(datasets.get("br35h", {}))
        br.update(fine_tuned=tm, naive_loop=tn)
        datasets["br35h"] = br
    results: dict[str, Any] = {
        "feature_extraction": extraction, "training": training, "datasets": datasets,
        "gemm": gemm or None, "serve_load": raw.get("serve_load"), "scale": raw.get("scale"),
    }
    results["peak_rss_mb_max"] = max(_rss_values(raw), default=None)
    results["targets"] = targets(results, quick)
    return results


def _rss_values(node: Any) -> list[float]:
    out: list[float] = []
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "peak_rss_mb" and isinstance(v, (int, float)):
                out.append(float(v))
            else:
                out += _rss_values(v)
    elif isinstance(node, list):
        for v in node:
            out += _rss_values(v)
    return out


def targets(results: dict[str, Any], quick: bool) -> list[dict[str, Any]]:
    """Each issue-10 target: measured value, threshold, met (None when not measured)."""
    ext, train = results["feature_extraction"], results["training"]
    findings = (results.get("datasets") or {}).get("iu_xray_findings") or {}
    parity = ext.get("parity") or {}
    rows = [
        ("feature extraction (decode + forward) vs naive loop, cold cache", ext["speedup"],
         ">=", TARGETS["extraction_speedup"]),
        ("feature extraction: fraction of the fp32-GEMM-implied throughput",
         ext["fraction_of_peak"], ">=", TARGETS["fraction_of_peak"]),
        ("feature extraction: CV accuracy change vs fp32 features",
         _get(parity, "medfuse", "cv_accuracy_delta"), "abs<=", 0.005),
        ("feature extraction: max relative error vs fp32 features",
         _get(parity, "medfuse", "relative_error_max"), "<=", 1e-4),
        ("bf16 feature extraction (precision: bf16-mixed): CV accuracy change vs fp32",
         _get(parity, "medfuse_bf16", "cv_accuracy_delta"), "abs<=", 0.005),
        ("Br35H fine-tuning throughput vs naive loop", train["speedup"], ">=",
         TARGETS["training_speedup"]),
        ("Br35H fine-tuning: accuracy vs naive loop (difference)",
         _diff(train["medfuse_accuracy"], train["naive_accuracy"]), ">=", -0.01),
        ("peak RSS of any job (MB)", results["peak_rss_mb_max"], "<=", TARGETS["peak_rss_mb"]),
        # issue 27: multi-label (full runs only: a quick run's rows are too few to say)
        ("IU X-ray findings: medfuse cv macro ROC AUC (5 patient-grouped folds, pooled)",
         None if quick else _get(findings, "medfuse", "macro_roc_auc"), ">=",
         TARGETS["iu_findings_macro_auc"]),
        ("synth-derm findings: fused macro ROC AUC minus the best single modality's",
         None if quick else _fused_margin(results.get("datasets", {})
                                          .get("synth_derm_findings") or {}), ">", 0.0),
    ]
    rows += _scale_targets(results.get("scale") or {}, quick)
    out = []
    for name, value, op, threshold in rows:
        met = None
        if isinstance(value, (int, float)):
            met = {">=": value >= threshold, "<=": value <= threshold, ">": value > threshold,
                   "abs<=": abs(value) <= threshold}[op]
        out.append({"target": name, "value": value, "op": op, "threshold": threshold,
                    "met": met})
    return out


def _scale_targets(sc: dict[str, Any], quick: bool) -> list[tuple[str, Any, str, float]]:
    """Issue 28: every stage's growth exponent, the grouping search alone, peak RSS at 64k."""
    stages = sc.get("stages") or {}
    rows_ = sc.get("rows") or []
    rows: list[tuple[str, Any, str, float]] = []
    for name, st in stages.items():
        rows.append((f"scale: {name} seconds ~ rows^e, e between {rows_[0] if rows_ else '-'} "
                     f"and {rows_[-1] if rows_ else '-'} rows", None if quick
                     else st.get("exponent"), "<=", TARGETS["scale_exponent"]))
    nd = sc.get("near_duplicates") or {}
    by_n = dict(zip(nd.get("n") or [], nd.get("seconds") or [], strict=False))
    rows.append(("near-duplicate grouping of 100k hashes under 8 views (s)",
                 by_n.get(100_000), "<=", TARGETS["near_duplicates_100k_seconds"]))
    rows.append(("near-duplicate grouping of 1M hashes under 8 views (s)",
                 by_n.get(1_000_000), "<=", TARGETS["near_duplicates_1m_seconds"]))
    peak = None
    if rows_ and rows_[-1] >= 64_000:
        peak = max((st["peak_rss_mb"][-1] for st in stages.values()
                    if st.get("peak_rss_mb") and st["peak_rss_mb"][-1] is not None), default=None)
    rows.append(("scale: peak RSS of any stage at 64k rows (MB)", peak, "<=",
                 TARGETS["scale_peak_rss_mb"]))
    return rows if sc else []


def _fused_margin(section: dict[str, Any]) -> float | None:
    """Fused minus the best single modality, on ``roc_auc`` (None unless all were run)."""
    aucs = {k: (section.get(k) or {}).get("roc_auc") for k in ("image", "tabular", "text",
                                                              "fused")}
    if not all(isinstance(v, (int, float)) for v in aucs.values()):
        return None
    fused = float(aucs.pop("fused") or 0.0)
    return round(fused - max(float(v or 0.0) for v in aucs.values()), 4)


def _diff(a: Any, b: Any) -> float | None:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return round(float(a) - float(b), 4)
    return None


def load_results(out: str | Path) -> dict[str, Any]:
    """Read ``out/results.json``."""
    result: dict[str, Any] = json.loads((Path(out) / RESULTS_JSON).read_text())
    return result
