"""``medfuse benchmark``: the quick run end to end through the CLI, and the report pieces."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from medfuse.benchmark import assemble, check_sections
from medfuse.benchmark.report import render

CLI = [sys.executable, "-c", "from medfuse.cli import main; main()"]


def _errors(node: Any, where: str = "") -> list[str]:
    found = []
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "error":
                found.append(f"{where}: {v}")
            else:
                found += _errors(v, f"{where}.{k}")
    return found


def _run(tmp_path: Path, *only: str) -> dict[str, Any]:
    out = tmp_path / "bench"
    env = {**os.environ, "MEDFUSE_HOME": str(tmp_path / "home")}
    cmd = [*CLI, "benchmark", "--quick", "--out", str(out)]
    if only:
        cmd += ["--only", ",".join(only)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "results.md" in proc.stdout
    results: dict[str, Any] = json.loads((out / "results.json").read_text())
    assert not _errors(results), _errors(results)
    assert results["peak_rss_mb_max"] < 3072
    assert not (out / "work" / "extraction" / "decoded").exists()  # scratch caches removed
    results["_md"] = (out / "results.md").read_text()
    return results


def test_quick_extraction_benchmark_through_the_cli(tmp_path: Path) -> None:
    """The GEMM peak, medfuse vs the naive loop, network variants and feature parity."""
    results = _run(tmp_path, "gemm", "extraction")
    ext = results["feature_extraction"]
    for key in ("medfuse_img_per_s", "naive_img_per_s", "gemm_gflops", "fraction_of_peak"):
        assert isinstance(ext[key], float) and ext[key] > 0, key
    assert ext["fraction_of_peak"] == round(
        ext["medfuse_img_per_s"] * ext["flops_per_image"] / (ext["gemm_gflops"] * 1e9), 3)
    # both pipelines feed the network identical pixels: fp32 features agree to rounding
    assert ext["parity"]["medfuse"]["relative_error_max"] < 1e-4
    assert ext["parity"]["medfuse"]["cv_accuracy_delta"] == 0
    assert ext["variants"]["img_per_s"]["eager_fp32_nchw"] > 0
    assert results["datasets"] == {} and results["training"]["speedup"] is None
    met = {t["target"]: t["met"] for t in results["targets"]}
    assert met["Br35H fine-tuning throughput vs naive loop"] is None  # section not run
    for heading in ("## Targets", "## Feature extraction"):
        assert heading in results["_md"]


@pytest.mark.slow  # ~3 min; the jobs wrap FusionClassifier / HybridClassifier / serve
def test_quick_benchmark_all_sections(tmp_path: Path) -> None:
    results = _run(tmp_path)
    train = results["training"]
    for key in ("medfuse_img_per_s", "naive_img_per_s"):
        assert isinstance(train[key], float) and train[key] > 0, key
    datasets = results["datasets"]
    assert {"tfidf_lr", "fused", "hybrid"} <= set(datasets["iu_xray"])
    assert {"hybrid", "fine_tuned", "naive_loop"} <= set(datasets["br35h"])
    assert {"image", "tabular", "text", "fused"} <= set(datasets["synth_derm"])
    for model in datasets["iu_xray"].values():
        if isinstance(model, dict):
            assert 0 <= model["accuracy"] <= 1 and model["peak_rss_mb"] > 0
            assert model["wall_seconds"] > 0
    load = results["serve_load"]
    assert load["served"] == load["requests"] and load["status_5xx"] == 0
    assert len(results["targets"]) >= 5
    for heading in ("## Fine-tuning", "## IU X-ray", "## Br35H", "## synth-derm"):
        assert heading in results["_md"]


def test_report_of_partial_results_and_sections() -> None:
    results = assemble({}, quick=True)
    assert results["feature_extraction"]["fraction_of_peak"] is None
    assert all(t["met"] is None for t in results["targets"])
    assert "## Targets" in render(results)
    assert check_sections(None)[0] == "gemm"
    assert check_sections(["datasets", "gemm"]) == ["gemm", "datasets"]


def test_unknown_section_is_a_clean_error(tmp_path: Path) -> None:
    proc = subprocess.run([*CLI, "benchmark", "--quick", "--out", str(tmp_path),
                           "--only", "gemn"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "gemm" in proc.stderr and "Traceback" not in proc.stderr


def test_scale_section_times_every_stage_and_reports_its_growth(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The scale section's stages and bookkeeping, run in this process (the CLI test below
    runs each in its own process)."""
    import importlib

    from medfuse.benchmark import scale
    from medfuse.benchmark._runner import Context

    def in_process(ctx: Context, name: str, target: str, env: dict[str, str] | None = None,
                   **kwargs: Any) -> dict[str, Any]:
        for key, value in (env or {}).items():
            monkeypatch.setenv(key, value)
        module, _, func = target.partition(":")
        result = dict(getattr(importlib.import_module(f"medfuse.benchmark.{module}"), func)(
            **kwargs))
        return {**result, "wall_seconds": 1.0, "peak_rss_mb": 100.0}

    monkeypatch.setattr(scale, "run_job", in_process)
    monkeypatch.setattr(scale, "QUICK_NEAR_DUPLICATE_ROWS", (3000,))
    sc = scale.section(Context(out=tmp_path, quick=True), rows=(40, 80))
    assert sc["rows"] == [40, 80] and set(sc["stages"]) == set(scale.STAGES)
    for name, st in sc["stages"].items():
        assert "errors" not in st, (name, st)
        assert all(isinstance(s, float) and s > 0 for s in st["seconds"]), name
        assert isinstance(st["exponent"], float), name
    assert sc["near_duplicates"]["n"] == [3000] and sc["near_duplicates"]["errors"] == []
    assert not any((tmp_path / "work" / "scale" / str(n) / "data").exists() for n in (40, 80))
    results = assemble({"scale": sc}, quick=True)
    targets = {t["target"]: t for t in results["targets"]}
    assert targets["near-duplicate grouping of 100k hashes under 8 views (s)"]["met"] is None
    assert all(t["value"] is None for k, t in targets.items() if k.startswith("scale: "))
    md = render(results)
    assert "## Scale" in md and "fit_fused" in md and "3000 hashes" in md


def test_exponent_of_growth() -> None:
    from medfuse.benchmark.scale import exponent

    assert exponent([1000, 4000, 16000], [1.0, 4.0, 16.0]) == 1.0
    assert exponent([1000, 4000, 16000], [1.0, 2.0, 16.0], -2, -1) == 1.5
    assert exponent([1000], [1.0]) is None and exponent([1, 2], [None, 1.0]) is None


@pytest.mark.slow  # ~80 s: the in-process test above covers the same stages and report
def test_quick_scale_benchmark_through_the_cli(tmp_path: Path) -> None:
    results = _run(tmp_path, "scale")
    sc = results["scale"]
    assert sc["rows"] == [100, 200]
    assert all(s > 0 for st in sc["stages"].values() for s in st["seconds"])
    assert sc["near_duplicates"]["seconds"][0] > 0
    assert "## Scale" in results["_md"]
