"""Label audit: does ``medfuse cv`` find labels flipped at random?

Usage:  .venv/bin/python benchmarks/label_noise.py [--rows 1000] [--folds 5] [--flip 0.05]
        [--only synth_derm,tabular] [--out DIR]

Two tables go through the generic path (a CSV and a config, ``medfuse cv`` as a user runs
it), each with ``--flip`` of its labels flipped at random (seeded):

* ``synth_derm``: the generated synth-derm table (images + tabular + text, fused model of
  ``configs/synth_derm.yaml``);
* ``tabular``: a real tabular-only table, scikit-learn's Wisconsin breast-cancer data
  (569 rows, 30 continuous columns), default fused model (an MLP) and a hybrid LR head.

For each: recall and precision of the flipped rows among the rows the audit flags
(``label_issues.csv``'s ``is_issue``), the same for the ``k`` most suspect rows (``k`` =
the number flipped), and the audit's share of the ``cv`` run's time.
Target (issue 25): recall >= 0.8 at precision >= 0.6; the audit adds <= 5 % to ``cv``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medfuse.config import RunConfig, load_config
from medfuse.data import load_data
from medfuse.runs import cv_run


def flip_labels(labels: pd.Series, share: float, seed: int) -> tuple[pd.Series, np.ndarray]:
    """``labels`` with ``share`` of the rows given another class at random; those rows."""
    rng = np.random.default_rng(seed)
    values = labels.astype(str).to_numpy().copy()
    classes = np.unique(values)
    rows = np.sort(rng.choice(len(values), int(round(share * len(values))), replace=False))
    for i in rows:
        values[i] = rng.choice(classes[classes != values[i]])
    return pd.Series(values, index=labels.index, name=labels.name), rows


def score(out: Path, flipped: np.ndarray, seconds: float, summary: dict[str, Any]
          ) -> dict[str, Any]:
    issues = pd.read_csv(out / "label_issues.csv")
    flagged = set(issues.loc[issues["is_issue"], "row"].tolist())
    top = set(issues["row"].iloc[:len(flipped)].tolist())
    hit, hit_top = len(flagged & set(flipped)), len(top & set(flipped))
    audit = summary["label_issues"]
    return {
        "rows": len(issues), "flipped": len(flipped), "flagged": len(flagged),
        "recall": round(hit / max(1, len(flipped)), 4),
        "precision": round(hit / max(1, len(flagged)), 4),
        "top_k_recall": round(hit_top / max(1, len(flipped)), 4),
        "cv_accuracy": summary["mean"]["accuracy"], "cv_roc_auc": summary["mean"]["roc_auc"],
        "cv_seconds": round(seconds, 1), "audit_seconds": audit["seconds"],
        "audit_share_of_cv": round(audit["seconds"] / seconds, 5),
    }


def as_user_table(cfg: RunConfig, frame: pd.DataFrame, out: Path, stem: str) -> RunConfig:
    """``frame`` written to ``out/<stem>.csv`` with the config a user would write for it
    (``out/<stem>.yaml``), as the generic CSV path reads it; returns that config."""
    table = out / f"{stem}.csv"
    frame.to_csv(table, index=False)
    data = cfg.data.model_copy(update={"dataset": None, "dataset_options": {}, "table": table,
                                       "allow_outside_paths": True})  # the generated images
    cfg = cfg.model_copy(update={"data": data})
    (out / f"{stem}.yaml").write_text(cfg.to_yaml())
    return cfg


def run_table(name: str, cfg: RunConfig, df: pd.DataFrame, args: argparse.Namespace
              ) -> dict[str, Any]:
    out = args.out / name
    out.mkdir(parents=True, exist_ok=True)
    noisy, flipped = flip_labels(df[cfg.data.target], args.flip, args.seed)
    cfg = as_user_table(cfg, df.assign(**{cfg.data.target: noisy}), out, "noisy")
    t0 = time.perf_counter()
    summary = cv_run(cfg, args.folds, out / "cv")
    result = score(out / "cv", flipped, time.perf_counter() - t0, summary)
    print(f"{name}: {result}", flush=True)
    return result


def synth_derm(args: argparse.Namespace) -> dict[str, Any]:
    cfg = load_config("synth_derm", [f"data.dataset_options={{n_rows: {args.rows}, "
                                     f"image_size: 64, seed: {args.seed}}}"])
    df, _ = load_data(cfg.data)  # image paths absolute
    return run_table("synth_derm", cfg, df, args)


def tabular(args: argparse.Namespace) -> dict[str, Any]:
    from sklearn.datasets import load_breast_cancer

    bunch = load_breast_cancer(as_frame=True)
    df = bunch.frame.rename(columns=lambda c: str(c).replace(" ", "_"))
    df["target"] = np.where(df["target"] == 1, "benign", "malignant")
    columns = {c: "continuous" for c in df.columns if c != "target"}
    results = {}
    for kind in ("fusion", "hybrid"):
        cfg = RunConfig.model_validate({
            "data": {"table": "unused.csv", "tabular": columns, "target": "target",
                     "positive": "malignant"},
            "model": {"kind": kind},
            "train": {"max_epochs": 30, "batch_size": 32, "patience": 5},
        })
        results[kind] = run_table(f"tabular_{kind}", cfg, df, args)
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=1000, help="synth-derm rows")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--flip", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", default="synth_derm,tabular")
    ap.add_argument("--out", type=Path, default=Path("runs/bench-label-noise"))
    args = ap.parse_args()
    results: dict[str, Any] = {"flip": args.flip, "folds": args.folds, "seed": args.seed}
    for name in args.only.split(","):
        results[name] = {"synth_derm": synth_derm, "tabular": tabular}[name](args)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "label_noise.json").write_text(json.dumps(results, indent=1))
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
