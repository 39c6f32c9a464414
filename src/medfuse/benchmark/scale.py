"""How medfuse's cost grows with the rows: each stage timed alone, at growing sizes.

For each row count (generated ``synth-derm`` rows, 32 px images; the largest 64k rows)
every stage runs in its own process, so its seconds and peak RSS are its own:

* ``validate``: read the table and check every row (images decoded);
* ``group``: content digests, perceptual hashes under the eight flips / rotations and
  near-duplicate grouping, from an empty cache (:func:`medfuse.data.splits.group_labels`);
* ``extract``: a hybrid fit from cold caches: decode, frozen EfficientNet-Lite0 features,
  logistic-regression head;
* ``fit_hybrid``: the same fit again, the features now cached (the head and the
  tabular / text preprocessing);
* ``fit_fused``: one fused epoch (image + tabular + text);
* ``predict``: the fused model's probabilities for every row (images decoded afresh).

``seconds`` is the stage's own work, without process start-up and imports (``wall_seconds``
has those). ``exponent`` is ``e`` in seconds ~ rows^e between the smallest and the largest
row counts; ``exponent_last`` the same between the two largest, where fixed costs weigh
least. ``near_duplicates`` times the grouping search alone on random 64-bit hashes
(8 views each), 100k and 1M rows.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

from medfuse.benchmark._runner import Context, run_job

ROWS = (1000, 4000, 16000, 64000)
QUICK_ROWS = (100, 200)
NEAR_DUPLICATE_ROWS = (100_000, 1_000_000)
QUICK_NEAR_DUPLICATE_ROWS = (20_000,)
SIZE = 32  # px: the images' side, small so that 64k rows fit this benchmark's time
STAGES = ("validate", "group", "extract", "fit_hybrid", "fit_fused", "predict")


def generate(rows: int, folder: str, size: int = SIZE) -> dict[str, Any]:
    """The job: ``rows`` synth-derm rows (PNG images and ``table.csv``) in ``folder``."""
    from medfuse.data.synth import make_synth_derm

    t0 = time.perf_counter()
    df = make_synth_derm(folder, n_rows=rows, image_size=size, seed=0)
    df.to_csv(Path(folder) / "table.csv", index=False)
    return {"rows": len(df), "seconds": round(time.perf_counter() - t0, 2)}


def _config(folder: str, kind: str, flips: bool = True) -> Any:
    """synth-derm's shipped config on ``folder``'s table; ``flips`` groups near copies under
    flips and rotations (the costly search), else the split groups patients only: blobs
    drawn afresh on similar skin match by chance, and at 64k rows those chance links join
    most rows into one group, leaving nothing to fit on."""
    from medfuse.config import load_config

    overrides = [f"model.image_size={SIZE}", "train.max_epochs=1", "train.batch_size=64"]
    if kind == "hybrid":
        overrides += ["model.kind=hybrid", "model.head=lr", "train.precision=32-true"]
    cfg = load_config("synth_derm", overrides)
    split = cfg.data.split.model_copy(update={"dedupe_flips": flips, "dedupe_images": flips})
    data = cfg.data.model_copy(update={"dataset": None, "dataset_options": {},
                                       "table": str(Path(folder) / "table.csv"),
                                       "split": split})
    return cfg.model_copy(update={"data": data})


def _split(cfg: Any) -> tuple[Any, Any, Any, Any]:
    from medfuse.data import holdout_split, load_data

    df, _ = load_data(cfg.data, check_images="none")
    split = holdout_split(df, cfg.data, seed=cfg.train.seed)
    return df, df.iloc[split.train], df.iloc[split.valid], df.iloc[split.test]


def stage(which: str, folder: str) -> dict[str, Any]:
    """The job: one stage on the rows in ``folder`` (see the module's docstring)."""
    from medfuse.runs import estimator_from_config

    out: dict[str, Any] = {}
    if which == "validate":
        from medfuse.data import load_data

        cfg = _config(folder, "fused")
        t0 = time.perf_counter()
        df, _ = load_data(cfg.data)
        out["rows"] = len(df)
    elif which == "group":
        from medfuse.data import load_data
        from medfuse.data.splits import group_labels

        cfg = _config(folder, "fused")
        df, _ = load_data(cfg.data, check_images="none")
        t0 = time.perf_counter()
        _, report = group_labels(df, cfg.data)
        out.update(groups=report.n_groups, duplicate_images=report.duplicate_images)
    elif which in ("extract", "fit_hybrid", "fit_fused"):
        cfg = _config(folder, "fused" if which == "fit_fused" else "hybrid", flips=False)
        _, train, valid, _ = _split(cfg)
        clf = estimator_from_config(cfg)
        clf.progress = False
        t0 = time.perf_counter()
        clf.fit(train, valid)
        if which == "fit_fused":
            clf.save(Path(folder) / "fused_model")
        out["train_rows"] = len(train)
    elif which == "predict":
        from medfuse.data import load_data
        from medfuse.estimators.fused import FusionClassifier

        df, _ = load_data(_config(folder, "fused").data, check_images="none")
        clf = FusionClassifier.load(Path(folder) / "fused_model")
        clf.progress = False
        t0 = time.perf_counter()
        proba = clf.predict_proba(df)
        out["rows"] = len(proba)
    else:
        raise ValueError(f"unknown stage {which!r}; one of {STAGES}")
    out["seconds"] = round(time.perf_counter() - t0, 3)
    return out


def near_duplicates(n: int, max_distance: int = 6, seed: int = 0) -> dict[str, Any]:
    """The job: near-duplicate pairs among ``n`` random 64-bit hashes under 8 views."""
    import numpy as np

    from medfuse.data.hamming import near_pairs, plan

    h = np.random.default_rng(seed).integers(0, 2**64 - 1, size=(n, 8), dtype=np.uint64)
    t0 = time.perf_counter()
    pairs = near_pairs(h, max_distance)
    return {"n": n, "views": 8, "max_distance": max_distance, "blocks": plan(n, 8, max_distance),
            "pairs": len(pairs), "seconds": round(time.perf_counter() - t0, 2)}


def exponent(rows: list[int], seconds: list[float | None], a: int = 0,
             b: int = -1) -> float | None:
    """``e`` in seconds ~ rows^e between the ``a``-th and ``b``-th sizes (None if unmeasured)."""
    if len(rows) < 2:
        return None
    ra, rb, sa, sb = rows[a], rows[b], seconds[a], seconds[b]
    if not sa or not sb or sa <= 0 or sb <= 0 or ra == rb:
        return None
    return round(math.log(sb / sa) / math.log(rb / ra), 3)


def section(ctx: Context, rows: tuple[int, ...] | None = None) -> dict[str, Any]:
    sizes = list(rows or (QUICK_ROWS if ctx.quick else ROWS))
    stages: dict[str, dict[str, list[Any]]] = {
        s: {"seconds": [], "wall_seconds": [], "peak_rss_mb": [], "errors": []} for s in STAGES}
    generated = []
    for n in sizes:
        folder = ctx.work(f"scale/{n}")
        env = {"MEDFUSE_HOME": str(folder / "home"), "MEDFUSE_IMAGE_CACHE": "1"}
        generated.append(run_job(ctx, f"scale-generate-{n}", "scale:generate", rows=n,
                                 folder=str(folder / "data")))
        for s in STAGES:
            r = run_job(ctx, f"scale-{s}-{n}", "scale:stage", env=env, which=s,
                        folder=str(folder / "data"))
            stages[s]["seconds"].append(r.get("seconds"))
            stages[s]["wall_seconds"].append(r.get("wall_seconds"))
            stages[s]["peak_rss_mb"].append(r.get("peak_rss_mb"))
            stages[s]["errors"].append(r.get("error"))
        _remove_images(folder)
    out: dict[str, Any] = {"rows": sizes, "image_size": SIZE, "stages": {}}
    for s, d in stages.items():
        out["stages"][s] = {
            "seconds": d["seconds"], "wall_seconds": d["wall_seconds"],
            "peak_rss_mb": d["peak_rss_mb"], "exponent": exponent(sizes, d["seconds"]),
            "exponent_last": exponent(sizes, d["seconds"], -2, -1),
            **({"errors": d["errors"]} if any(d["errors"]) else {}),
        }
    out["generate_seconds"] = [g.get("seconds") for g in generated]
    dups = [run_job(ctx, f"scale-near-duplicates-{n}", "scale:near_duplicates", n=n)
            for n in (QUICK_NEAR_DUPLICATE_ROWS if ctx.quick else NEAR_DUPLICATE_ROWS)]
    out["near_duplicates"] = {key: [d.get(key) for d in dups] for key in
                              ("n", "seconds", "peak_rss_mb", "blocks", "pairs")}
    out["near_duplicates"]["errors"] = [d["error"] for d in dups if "error" in d]
    return out


def _remove_images(folder: Path) -> None:
    """The generated rows and caches (64k rows hold a few hundred MB); results stay."""
    import shutil

    for sub in ("data", "home"):
        shutil.rmtree(folder / sub, ignore_errors=True)
