"""synth-derm: the fused model against every single-modality model on the same split.

Usage:  .venv/bin/python benchmarks/synth_derm_modalities.py [--rows 1500] [--out DIR]

Target (issue 3): the fused model's test ROC AUC beats every single-modality
model trained on the same split by >= 0.03.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import pandas as pd

from medfuse.config import load_config
from medfuse.data import holdout_split, load_data
from medfuse.estimators import FusionClassifier
from medfuse.runs import evaluate, peak_rss_mb

SUBSETS = {
    "image": {"tabular": {}, "text": None},
    "tabular": {"image": None, "text": None},
    "text": {"image": None, "tabular": {}},
    "fused": {},
}


def synth_derm_args(description: str | None, rows: int, out: str) -> argparse.ArgumentParser:
    """The options every synth-derm benchmark takes: --rows, --image-size, --seed, --out."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--rows", type=int, default=rows)
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0, help="seed of the generated dataset")
    ap.add_argument("--out", type=Path, default=Path(out))
    return ap


def synth_derm_split(args: argparse.Namespace) -> tuple[Any, pd.DataFrame, Any]:
    """``(cfg, df, split)``: the generated table and one split shared by all models."""
    cfg = load_config("synth_derm", [
        f"data.dataset_options={{n_rows: {args.rows}, image_size: {args.image_size}, "
        f"seed: {args.seed}}}",
    ])
    df, _ = load_data(cfg.data)
    return cfg, df, holdout_split(df, cfg.data, seed=cfg.train.seed)


def main() -> None:
    args = synth_derm_args(__doc__, 1500, "runs/bench-synth-derm").parse_args()
    cfg, df, split = synth_derm_split(args)
    results = {}
    for name, update in SUBSETS.items():
        spec = cfg.data.model_copy(update=update)
        clf = FusionClassifier.from_config(cfg.model_copy(update={"data": spec}), progress=False)
        t0 = time.perf_counter()
        clf.fit(df.iloc[split.train], df.iloc[split.valid])
        metrics, _ = evaluate(clf, df.iloc[split.test])
        results[name] = {k: metrics[k] for k in ("n", "accuracy", "roc_auc", "pr_auc")}
        results[name]["seconds"] = round(time.perf_counter() - t0, 1)
        print(f"{name:8s} {results[name]}", flush=True)
    best_single = max(("image", "tabular", "text"), key=lambda k: results[k]["roc_auc"])
    margin = results["fused"]["roc_auc"] - results[best_single]["roc_auc"]
    summary = {
        "rows": args.rows, "split": split.report.to_dict(), "models": results,
        "best_single": best_single, "fused_minus_best_single_auc": round(margin, 4),
        "target_met": margin >= 0.03, "peak_rss_mb": round(peak_rss_mb(), 1),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "modalities.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps({k: v for k, v in summary.items() if k != "models"}, indent=1))


if __name__ == "__main__":
    main()
