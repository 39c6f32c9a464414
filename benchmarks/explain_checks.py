"""synth-derm: do the image explanations point at the lesion, and do they depend on the model?

Usage:
    .venv/bin/python benchmarks/explain_checks.py [--run DIR] [--rows 1000] [--epochs N]
        [--out DIR] [--max-images 100]
    smoke test (about a minute):
    .venv/bin/python benchmarks/explain_checks.py --rows 120 --epochs 1 --max-images 8

Trains the fused synth-derm model (``configs/synth_derm.yaml``, ``train_run``) unless
``--run`` names a saved run, then on the held-out test rows:

* pointing game (target >= 0.8): on correctly classified positive (malignant) images, the
  share whose strongest region (``localise`` at threshold 0.9 of the positive part of the
  SmoothGrad-IG map, as ``explain`` does) contains the true lesion centre (``lesion_x``,
  ``lesion_y``); also reported for ``|attribution|``, for plain IG, for Grad-CAM, and for a
  chance reference (a circle of the same radius at the image centre);
* model randomisation (Adebayo et al. 2018): Spearman rank correlation of the maps of the
  trained model and of the same model with re-initialised weights (low is good);
* memory: peak RSS of a fresh process running one 224 px integrated-gradients
  explanation of an EfficientNet-Lite0 image model (target < 2 GB).

Writes ``OUT/explain_checks.json``.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np


def memory_probe(size: int, steps: int, internal_batch_size: int) -> dict[str, Any]:
    """One IG explanation of a 224 px EfficientNet-Lite0 image model in this process."""
    import torch

    from medfuse.encoders.image import ImageEncoder
    from medfuse.explain import integrated_gradients
    from medfuse.fusion import FusionModel

    torch.manual_seed(0)
    model = FusionModel({"image": ImageEncoder("tf_efficientnet_lite0", "builtin", size)},
                        n_classes=2).eval()
    batch = {"image": torch.randn(1, 3, size, size)}
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    amap = integrated_gradients(model, batch, 1, steps=steps,
                                internal_batch_size=internal_batch_size)
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"image_size": size, "steps": steps, "internal_batch_size": internal_batch_size,
            "map_shape": list(amap.shape), "rss_before_ig_mb": round(before, 1),
            "peak_rss_mb": round(peak, 1), "ig_seconds": round(seconds, 2),
            "target_mb": 2048, "target_met": peak < 2048}


def _train_or_load(args: argparse.Namespace) -> tuple[Any, Any]:
    from medfuse.config import load_config
    from medfuse.runs import load_model, train_run

    if args.run is not None:
        cfg = load_config(args.run / "config.yaml")
        return cfg, load_model(args.run)
    overrides = [
        f"data.dataset_options={{n_rows: {args.rows}, image_size: {args.image_size}, "
        f"seed: {args.seed}}}",
        f"evaluation.bootstrap={args.bootstrap}",
    ]
    if args.epochs is not None:
        overrides.append(f"train.max_epochs={args.epochs}")
    cfg = load_config("synth_derm", overrides)
    run = args.out / "run"
    t0 = time.perf_counter()
    metrics = train_run(cfg, run)
    print(f"trained in {time.perf_counter() - t0:.0f} s: test accuracy "
          f"{metrics['accuracy']:.3f}, ROC AUC {metrics['roc_auc']:.3f}", flush=True)
    return cfg, load_model(run)


def pointing_game(clf: Any, test: Any, cfg: Any, args: argparse.Namespace) -> dict[str, Any]:
    from medfuse.data.images import read_image
    from medfuse.explain import (
        grad_cam,
        localise,
        randomisation_check,
        randomise_weights,
        rank_correlation,
        to_original,
    )
    from medfuse.explain._common import BatchForward, fused_batch, split_batch
    from medfuse.explain.image import contains, ig_attributions, reduce_channels

    spec = cfg.data
    positive = spec.positive
    pred = clf.predict(test)
    truth = test[spec.target].astype(str).to_numpy()
    chosen = test[(truth == positive) & (pred == positive)].iloc[: args.max_images]
    fallback = chosen.empty  # e.g. a 1-epoch smoke model that never predicts positive
    if fallback:
        chosen = test[truth == positive].iloc[: args.max_images]
    target = list(clf.classes_).index(positive)
    model = clf.model_.eval()
    hits: dict[str, list[bool]] = {"smoothgrad_ig": [], "smoothgrad_ig_abs": [],
                                   "plain_ig": [], "grad_cam": [], "centre_reference": []}
    radii, t0 = [], time.perf_counter()
    rho: dict[str, list[float]] = {"smoothgrad_ig": [], "smoothgrad_ig_abs": [],
                                   "smoothgrad_ig_signed": [],
                                   "plain_ig": []}
    for start in range(0, len(chosen), args.chunk):
        rows = chosen.iloc[start : start + args.chunk]
        _, batch = fused_batch(clf, rows)
        keys, (images,), rest = split_batch(batch, ("image",))
        fwd = BatchForward(model, keys)
        attr = ig_attributions(fwd, images, target, args.steps, args.internal_batch_size, rest)
        plain = ig_attributions(fwd, images, target, args.steps, args.internal_batch_size,
                                rest, nt_samples=0)
        maps = {"smoothgrad_ig": reduce_channels(attr, "positive"),  # what explain() circles
                "smoothgrad_ig_abs": reduce_channels(attr, "abs"),
                "plain_ig": reduce_channels(plain, "abs"),
                "grad_cam": grad_cam(model, batch, target)}
        for i in range(len(rows)):
            row = rows.iloc[i]
            size = read_image(row[spec.image]).size
            x, y = float(row["lesion_x"]), float(row["lesion_y"])
            for name, m in maps.items():
                regions = to_original(localise(m[i], threshold=args.threshold), size,
                                      (m.shape[2], m.shape[1]))
                hits[name].append(bool(regions) and contains(regions[0], x, y))
                if name == "smoothgrad_ig" and regions:
                    radii.append(regions[0]["r"])
                    centre = {"x": size[0] / 2, "y": size[1] / 2, "r": regions[0]["r"]}
                    hits["centre_reference"].append(contains(centre, x, y))
        if start < args.randomisation_images:
            rho["smoothgrad_ig"] += randomisation_check(model, batch, target, steps=args.steps,
                                                        reduce="positive")
            rho["smoothgrad_ig_abs"] += randomisation_check(model, batch, target,
                                                            steps=args.steps)
            rho["smoothgrad_ig_signed"] += randomisation_check(
                model, batch, target, steps=args.steps, reduce="sum")
            rnd = randomise_weights(model)
            plain_rnd = ig_attributions(BatchForward(rnd, keys), images, target, args.steps,
                                        args.internal_batch_size, rest, nt_samples=0)
            rho["plain_ig"] += [rank_correlation(a, b) for a, b in
                                zip(maps["plain_ig"], reduce_channels(plain_rnd, "abs"),
                                    strict=True)]
    share = {k: round(float(np.mean(v)), 4) if v else None for k, v in hits.items()}
    return {
        "n_test": len(test), "n_explained": len(chosen),
        "explained": "all positive test images (none correctly classified)" if fallback
        else "correctly classified positive test images",
        "threshold": args.threshold, "pointing_game": share,
        "target": 0.8, "target_met": (share["smoothgrad_ig"] or 0.0) >= 0.8,
        "mean_region_radius_px": round(float(np.mean(radii)), 2) if radii else None,
        "randomisation_spearman": {k: {"mean": round(float(np.mean(v)), 4),
                                       "max": round(float(np.max(v)), 4), "n": len(v)}
                                   for k, v in rho.items() if v},
        "seconds": round(time.perf_counter() - t0, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, default=None, help="a saved synth-derm run directory")
    ap.add_argument("--rows", type=int, default=1000)
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=None, help="override train.max_epochs")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--bootstrap", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("runs/bench-explain"))
    ap.add_argument("--max-images", type=int, default=100)
    ap.add_argument("--randomisation-images", type=int, default=20)
    ap.add_argument("--threshold", type=float, default=0.9)
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--internal-batch-size", type=int, default=32)
    ap.add_argument("--chunk", type=int, default=4, help="test images explained at once")
    ap.add_argument("--skip-memory", action="store_true")
    ap.add_argument("--memory-probe", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.memory_probe:
        print(json.dumps(memory_probe(224, 32, 8)))
        return
    args.out.mkdir(parents=True, exist_ok=True)
    cfg, clf = _train_or_load(args)
    from medfuse.data import holdout_split, load_data

    df, _ = load_data(cfg.data)
    split = holdout_split(df, cfg.data, seed=cfg.train.seed)
    results: dict[str, Any] = {"rows": len(df), "run": str(args.run or args.out / "run")}
    results.update(pointing_game(clf, df.iloc[split.test], cfg, args))
    print(json.dumps({k: results[k] for k in ("n_explained", "pointing_game",
                                              "randomisation_spearman")}), flush=True)
    if not args.skip_memory:
        proc = subprocess.run([sys.executable, __file__, "--memory-probe"], check=True,
                              capture_output=True, text=True)
        results["memory_224px_ig"] = json.loads(proc.stdout.strip().splitlines()[-1])
        print(json.dumps(results["memory_224px_ig"]), flush=True)
    (args.out / "explain_checks.json").write_text(json.dumps(results, indent=1))
    print(f"wrote {args.out / 'explain_checks.json'}")


if __name__ == "__main__":
    main()
