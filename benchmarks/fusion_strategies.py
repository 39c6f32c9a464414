"""synth-derm: every fusion strategy against the single modalities, and missing images.

Usage:  .venv/bin/python benchmarks/fusion_strategies.py [--rows 1000] [--out DIR]

On one shared split (grouped by patient and near-duplicate image) it trains
- one model per single modality, and a tabular + text model;
- ``concat``, ``gated`` and ``late`` fusion, each as configured in ``configs/synth_derm.yaml``
  and each with modality dropout (``--dropout``; ``--aux`` adds auxiliary losses, default 0);
and evaluates each fused model on the test rows with every modality, and the models
trained with modality dropout also with the image (and each other modality) left out
(``predict_proba(without=...)``).

Targets (issue 8):
- each strategy's test ROC AUC beats the best single modality's;
- with the image removed at prediction, the gated model (trained with modality dropout)
  stays within 0.02 ROC AUC of the tabular + text model.
"""

from __future__ import annotations

import json
import time
from typing import Any

from synth_derm_modalities import synth_derm_args, synth_derm_split  # benchmarks/

from medfuse.estimators import FusionClassifier
from medfuse.evaluation.metrics import classification_metrics
from medfuse.runs import peak_rss_mb

SINGLE = {
    "image": {"tabular": {}, "text": None},
    "tabular": {"image": None, "text": None},
    "text": {"image": None, "tabular": {}},
    "tabular+text": {"image": None},
}
KEYS = ("accuracy", "roc_auc", "pr_auc")


def _scores(clf: FusionClassifier, test: Any, without: tuple[str, ...] = ()) -> dict[str, float]:
    y = clf.pre_.encode_target(test[clf.spec.target]).numpy()
    m = classification_metrics(y, clf.predict_proba(test, without=without))
    return {k: round(float(m[k]), 4) for k in KEYS}


def main() -> None:
    ap = synth_derm_args(__doc__, 1000, "runs/bench-fusion")
    ap.add_argument("--dropout", type=float, default=0.3, help="modality dropout")
    ap.add_argument("--aux", type=float, default=0.0, help="auxiliary loss weight")
    ap.add_argument("--fusions", default="concat,gated,late")
    args = ap.parse_args()
    cfg, df, split = synth_derm_split(args)
    train, valid, test = df.iloc[split.train], df.iloc[split.valid], df.iloc[split.test]
    results: dict[str, Any] = {}

    def fit(name: str, spec_update: dict[str, Any], **params: Any) -> FusionClassifier:
        spec = cfg.data.model_copy(update=spec_update)
        clf = FusionClassifier.from_config(cfg.model_copy(update={"data": spec}),
                                           progress=False, **params)
        t0 = time.perf_counter()
        clf.fit(train, valid)
        results[name] = {"seconds": round(time.perf_counter() - t0, 1), "epochs": clf.epochs_,
                         "all": _scores(clf, test)}
        return clf

    for name, update in SINGLE.items():
        fit(name, update)
        print(f"{name:24s} {results[name]}", flush=True)
    for fusion in args.fusions.split(","):
        fit(fusion, {}, fusion=fusion)
        print(f"{fusion:24s} {results[fusion]}", flush=True)
        name = f"{fusion}+dropout"
        clf = fit(name, {}, fusion=fusion, modality_dropout=args.dropout, aux_loss=args.aux)
        for m in clf.spec.modalities:
            results[name][f"without_{m}"] = _scores(clf, test, (m,))
        print(f"{name:24s} {results[name]}", flush=True)

    singles = ("image", "tabular", "text")
    best = max(singles, key=lambda k: results[k]["all"]["roc_auc"])
    best_auc = results[best]["all"]["roc_auc"]
    fused = [k for k in results if k not in SINGLE]
    margins = {k: round(results[k]["all"]["roc_auc"] - best_auc, 4) for k in fused}
    summary: dict[str, Any] = {
        "rows": args.rows, "seed": args.seed, "modality_dropout": args.dropout,
        "aux_loss": args.aux, "split": split.report.to_dict(), "models": results,
        "best_single": best, "best_single_auc": best_auc,
        "margin_over_best_single": margins,
        "every_strategy_beats_best_single": all(v > 0 for v in margins.values()),
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }
    if "gated+dropout" in results:
        gap = (results["tabular+text"]["all"]["roc_auc"]
               - results["gated+dropout"]["without_image"]["roc_auc"])
        summary["gated_without_image_gap_to_tabular_text"] = round(gap, 4)
        summary["gated_without_image_within_0.02"] = gap <= 0.02
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "fusion_strategies.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps({k: v for k, v in summary.items() if k not in ("models", "split")},
                     indent=1))


if __name__ == "__main__":
    main()
