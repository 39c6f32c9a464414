"""Br35H: one cross-validation fold's model scored without and with test-time views.

Usage:  .venv/bin/python benchmarks/br35h_tta.py --fold 1 --out runs/tta1 [--set k=v ...]

Trains fold ``--fold`` of ``medfuse cv br35h --folds 5`` exactly (the same grouped folds,
the same validation rows carved from the training fold, the same seed), saves the model
to ``OUT/model``, then scores the fold's test rows with ``model.tta`` = ``none``,
``hflip`` and ``dihedral`` (one training, three predictions), writing
``OUT/tta.json`` and ``OUT/preds_<tta>.csv``. The ``--set`` overrides apply to
``configs/br35h.yaml`` as in the CLI; ``model.tta`` itself is ignored.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from medfuse.config import load_config
from medfuse.data import kfold_splits, load_data
from medfuse.data.augment import VIEWS
from medfuse.data.splits import carve, group_labels
from medfuse.runs import estimator_from_config, evaluate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fold", type=int, default=1)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--out", type=Path, default=Path("runs/br35h-tta"))
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    args = ap.parse_args()
    cfg = load_config("br35h", args.overrides)
    df, _ = load_data(cfg.data)
    groups, _ = group_labels(df, cfg.data)
    splits, _ = kfold_splits(df, cfg.data, args.folds, seed=cfg.train.seed, groups=groups)
    train_idx, test_idx = splits[args.fold]
    y = df[cfg.data.target].astype(str).to_numpy()
    rest, held = carve(y[train_idx], groups[train_idx], cfg.data.split.valid_size,
                       cfg.train.seed)
    clf = estimator_from_config(cfg)
    clf.fit(df.iloc[train_idx[rest]], df.iloc[train_idx[held]], run_dir=args.out / "fit")
    clf.save(args.out / "model")
    test = df.iloc[test_idx]
    results = {}
    for tta in VIEWS:
        clf.tta = tta
        start = time.perf_counter()
        metrics, preds = evaluate(clf, test)
        errors = int((preds["prediction"] != preds[cfg.data.target]).sum())
        results[tta] = {"errors": errors, "accuracy": round(metrics["accuracy"], 4),
                        "roc_auc": round(metrics["roc_auc"], 4),
                        "seconds": round(time.perf_counter() - start, 1)}
        preds.to_csv(args.out / f"preds_{tta}.csv", index=False)
        print(tta, results[tta], flush=True)
    (args.out / "tta.json").write_text(json.dumps({"fold": args.fold, **results}, indent=1))


if __name__ == "__main__":
    main()
