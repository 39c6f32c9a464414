"""Deep hybrid learning on Br35H: cold vs warm feature cache, and heads on the same folds.

Runs ``medfuse cv br35h_hybrid --folds 5 --heads ...`` twice as real subprocesses with
a fresh ``MEDFUSE_HOME`` (so the feature cache starts empty), and reports the wall
seconds of each run, their ratio, and each head's mean accuracy / ROC AUC::

    .venv/bin/python benchmarks/hybrid_cache.py --out runs/bench-hybrid

Writes ``OUT/hybrid_cache.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

METRICS = ("accuracy", "balanced_accuracy", "roc_auc", "pr_auc", "sensitivity", "specificity")


def run_cv(config: str, folds: int, heads: str, out: Path, home: Path,
           extra: list[str]) -> tuple[float, dict]:
    cmd = [sys.executable, "-m", "medfuse.cli", "cv", config, "--folds", str(folds),
           "--heads", heads, "--out", str(out), *extra]
    env = {**os.environ, "MEDFUSE_HOME": str(home), "COLUMNS": "160"}
    t0 = time.perf_counter()
    res = subprocess.run(cmd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if res.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{res.stderr[-3000:]}")
    return seconds, json.loads((out / "cv_metrics.json").read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="br35h_hybrid")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--heads", default="lr", help="heads for the cold / warm runs")
    ap.add_argument("--compare", default="lr,rf,adaboost,xgboost,svm",
                    help="heads compared in a third (warm) run; '' to skip")
    ap.add_argument("--out", type=Path, default=Path("runs/bench-hybrid"))
    ap.add_argument("--set", dest="set_", action="append", default=[])
    args = ap.parse_args()
    extra = [x for s in args.set_ for x in ("--set", s)]
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="medfuse-home-") as home:
        cold_s, cold = run_cv(args.config, args.folds, args.heads, args.out / "cold",
                              Path(home), extra)
        warm_s, warm = run_cv(args.config, args.folds, args.heads, args.out / "warm",
                              Path(home), extra)
        heads = {}
        if args.compare:
            _, comp = run_cv(args.config, args.folds, args.compare, args.out / "heads",
                             Path(home), extra)
            heads = {h: {k: s["mean"].get(k) for k in ("accuracy", "roc_auc", "fit_seconds")}
                     | {"accuracy_std": s["std"].get("accuracy")}
                     for h, s in comp["heads"].items()}
    result = {
        "config": args.config, "folds": args.folds, "heads": args.heads,
        "cold_seconds": round(cold_s, 1), "warm_seconds": round(warm_s, 1),
        "warm_speedup": round(cold_s / warm_s, 2),
        "accuracy": cold["mean"]["accuracy"], "accuracy_std": cold["std"]["accuracy"],
        "roc_auc": cold["mean"]["roc_auc"],
        "folds_accuracy": [f["accuracy"] for f in cold["folds"]],
        "same_metrics_warm": all(cold["mean"][k] == warm["mean"][k] for k in METRICS),
        "peak_rss_mb": max(cold["peak_rss_mb"], warm["peak_rss_mb"]),
        "compare": heads,
    }
    (args.out / "hybrid_cache.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
