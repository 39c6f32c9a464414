"""Frozen-feature extraction on Br35H: medfuse against a plain eager PyTorch loop.

Both read the same JPEG files and run EfficientNet-Lite0 (timm
``tf_efficientnet_lite0``, the builtin ImageNet weights) at 224 px, batch 32:

* **naive**: what one writes by hand. A ``Dataset`` that opens each file with PIL and
  applies torchvision (v2) transforms (to tensor, resize, scale, normalise) every time,
  a ``DataLoader`` with default settings, eager fp32 in NCHW layout under ``no_grad``.
* **medfuse**: :func:`medfuse.hybrid.extract_image_features` (what ``HybridClassifier``
  runs): decoding threads overlapping the network through the decoded-image cache,
  whole-batch normalisation, the network in onnxruntime (fp32; the default) or in
  PyTorch with bf16 autocast + channels-last (``precision: bf16-mixed``, CPUs with
  native bf16). ``cold`` starts from an empty decoded-image cache (every image decoded:
  the first run), ``warm`` runs again over the filled cache.

Both pipelines give the network bit-identical inputs, so the naive loop's features are
the fp32 reference of the parity check (cosine similarity, relative error, and the
5-fold grouped cross-validated accuracy of a logistic regression on each).

A third job times the network alone on one batch of 32 real images in each variant
(eager fp32 NCHW, channels-last, bf16 + channels-last, ``torch.compile``-d bf16 +
channels-last, onnxruntime fp32 exported as is and with its "same" padding fixed as
medfuse exports it), to show where the speed comes from.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from medfuse.benchmark._runner import Context, run_job

SIZE, BATCH = 224, 32


def br35h_sample(n: int | None) -> tuple[list[str], list[str]]:
    """Paths and labels of ``n`` Br35H images spread over both classes (all if None)."""
    from medfuse.data.builtin import load_dataset

    df, _ = load_dataset("br35h")
    if n is not None and n < len(df):
        step = len(df) / n
        df = df.iloc[[int(i * step) for i in range(n)]]
    return df["image_path"].tolist(), df["tumor"].astype(str).tolist()


def plain_lite0() -> Any:
    """timm's EfficientNet-Lite0 without classifier, with the builtin ImageNet weights."""
    import timm

    from medfuse.encoders.image import load_builtin_lite0

    model = timm.create_model("tf_efficientnet_lite0", num_classes=0)
    load_builtin_lite0(model)
    return model.eval()


def naive(n: int | None, features: str, size: int = SIZE, batch_size: int = BATCH
          ) -> dict[str, Any]:
    """The job: the plain eager loop (PIL + torchvision per image, default DataLoader)."""
    import torch
    from PIL import Image
    from torchvision.transforms import v2 as T  # noqa: N812

    paths, _ = br35h_sample(n)
    model = plain_lite0()
    transform = T.Compose([
        T.PILToTensor(),
        T.Resize((size, size), antialias=True),
        T.ToDtype(torch.float32, scale=True),
        T.Normalize([0.5, 0.5, 0.5], [0.5, 0.5, 0.5]),
    ])

    class Files(torch.utils.data.Dataset[torch.Tensor]):
        def __len__(self) -> int:
            return len(paths)

        def __getitem__(self, i: int) -> torch.Tensor:
            out: torch.Tensor = transform(Image.open(paths[i]).convert("RGB"))
            return out

    t0 = time.perf_counter()
    outs = []
    with torch.no_grad():
        for x in torch.utils.data.DataLoader(Files(), batch_size=batch_size):
            outs.append(model(x).numpy())
    seconds = time.perf_counter() - t0
    np.save(features, np.concatenate(outs))
    return {"images": len(paths), "seconds": round(seconds, 2),
            "img_per_s": round(len(paths) / seconds, 1), "threads": torch.get_num_threads()}


def medfuse(n: int | None, features: str, cache_root: str, size: int = SIZE,
            batch_size: int = BATCH, precision: str = "32-true", warm: bool = True
            ) -> dict[str, Any]:
    """The job: medfuse's extraction, from an empty then a filled decoded-image cache.

    ``precision`` as ``HybridClassifier``'s: ``"bf16-mixed"`` runs PyTorch under bf16
    autocast (where native), anything else onnxruntime in fp32.
    """
    import torch

    from medfuse.data.decoded import DecodedImages
    from medfuse.encoders.image import ImageEncoder
    from medfuse.estimators.extraction import network
    from medfuse.estimators.hybrid import extract_image_features
    from medfuse.perf import native_bf16

    paths, _ = br35h_sample(n)
    enc = ImageEncoder("tf_efficientnet_lite0", "builtin", size, freeze=True).eval()
    bf16 = precision.startswith("bf16") and native_bf16()
    backend = "torch" if bf16 else "auto"
    used = type(network(enc, size, backend, bf16)).__name__  # exports the ONNX file once
    runs: dict[str, Any] = {}
    feats = None
    for name in ("cold", "warm") if warm else ("cold",):
        decoded = DecodedImages(enc.transform, root=cache_root)
        t0 = time.perf_counter()
        out = extract_image_features(enc, enc.transform, paths, batch_size=batch_size,
                                     bf16=bf16, progress=False, decoded=decoded,
                                     backend=backend)
        seconds = time.perf_counter() - t0
        runs[name] = {"seconds": round(seconds, 2), "img_per_s": round(len(paths) / seconds, 1),
                      "decoded": decoded.misses, "from_cache": decoded.hits}
        feats = out if feats is None else feats
    assert feats is not None
    np.save(features, feats)
    return {"images": len(paths), "bf16": bf16,
            "backend": "onnxruntime fp32" if used == "OnnxEncoder" else
            ("PyTorch bf16 autocast" if bf16 else "PyTorch fp32") + ", channels-last",
            "threads": torch.get_num_threads(), **runs}


def variants(quick: bool = False, size: int = SIZE, batch_size: int = BATCH,
             work: str | None = None) -> dict[str, Any]:
    """The job: the network alone on one batch, in each execution variant (img/s)."""
    import torch

    from medfuse.data.decoded import load_pixels
    from medfuse.data.preprocess import ImageTransform
    from medfuse.perf import native_bf16

    paths, _ = br35h_sample(batch_size)
    transform = ImageTransform(size)
    x = transform.normalize(load_pixels(paths, transform))
    x_cl = x.contiguous(memory_format=torch.channels_last)
    model = plain_lite0()
    reps, rounds = (2, 1) if quick else (8, 2)
    bf16 = native_bf16()

    def timed(fn: Any, inp: Any, warm: int = 1) -> float:
        for _ in range(warm):
            fn(inp)
        t0 = time.perf_counter()
        for _ in range(reps):
            fn(inp)
        return reps * batch_size / (time.perf_counter() - t0)

    def autocast(fn: Any) -> Any:
        def run(inp: Any) -> Any:
            with torch.autocast("cpu", torch.bfloat16):
                return fn(inp)
        return run

    out: dict[str, Any] = {"batch": batch_size, "size": size, "reps": reps,
                           "threads": torch.get_num_threads(), "img_per_s": {}}
    speeds = out["img_per_s"]
    extra: dict[str, Any] = {}
    with torch.inference_mode():
        for _ in range(rounds):  # alternating rounds; the better of each is kept
            round_ = {"eager_fp32_nchw": timed(model, x),
                      "channels_last_fp32": timed(model, x_cl)}
            if bf16:
                round_["bf16_channels_last"] = timed(autocast(model), x_cl)
            for k, v in round_.items():
                speeds[k] = round(max(speeds.get(k, 0.0), v), 1)
    if bf16 and not quick:
        compiled = torch.compile(model)
        t0 = time.perf_counter()
        with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16):
            compiled(x_cl)
            extra["compile_seconds"] = round(time.perf_counter() - t0, 1)
            speeds["compiled_bf16_channels_last"] = round(timed(compiled, x_cl, warm=2), 1)
    try:
        onnx = _onnx(model, x, reps, Path(work) if work else None)
        extra["onnx_export_seconds"] = onnx.pop("onnx_export_seconds")
        speeds.update(onnx)
    except Exception as e:  # onnx export is optional here
        extra["onnx_error"] = f"{type(e).__name__}: {e}"
    base = speeds["eager_fp32_nchw"]
    out["speedup"] = {k: round(v / base, 2) for k, v in speeds.items()}
    return {**out, **extra}


def _onnx(model: Any, x: Any, reps: int, work: Path | None) -> dict[str, float]:
    """onnxruntime fp32 img/s of ``model`` exported as is (its TF-style "same" padding
    computed at run time) and as medfuse exports it (padding fixed for ``x``'s size)."""
    import tempfile
    import warnings

    import onnxruntime as ort
    import torch

    from medfuse.estimators.extraction import static_same_padding

    folder = work or Path(tempfile.mkdtemp(prefix="medfuse-onnx-"))
    out: dict[str, float] = {}
    for name, module in (("onnxruntime_fp32_dynamic_pad", model),
                         ("onnxruntime_fp32", static_same_padding(model, x[:1]))):
        path = folder / f"{name}.onnx"
        t0 = time.perf_counter()
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(module, (x,), str(path), input_names=["image"],
                              output_names=["features"], dynamic_axes={"image": {0: "batch"}},
                              opset_version=17, dynamo=False)
        if name == "onnxruntime_fp32":
            out["onnx_export_seconds"] = round(time.perf_counter() - t0, 1)
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        feed = {"image": x.numpy()}
        session.run(None, feed)
        t0 = time.perf_counter()
        for _ in range(reps):
            session.run(None, feed)
        out[name] = round(reps * len(x) / (time.perf_counter() - t0), 1)
        path.unlink(missing_ok=True)
    return out


def parity(n: int | None, reference: str, candidates: dict[str, str], folds: int = 5
           ) -> dict[str, Any]:
    """The job: each candidate's features against the fp32 reference, and CV accuracy."""
    import pandas as pd

    from medfuse.config import DataSpec
    from medfuse.data.splits import group_labels, kfold_splits
    from medfuse.estimators.hybrid import head_pipeline

    ref = np.load(reference)
    paths, labels = br35h_sample(n)
    spec = DataSpec(image="image_path", target="tumor", positive="yes")
    df = pd.DataFrame({"image_path": paths, "tumor": labels})
    groups, _ = group_labels(df, spec)
    splits, _ = kfold_splits(df, spec, folds, seed=0, groups=groups)
    y = (df["tumor"] == "yes").to_numpy().astype(int)

    def cv_accuracy(X: np.ndarray) -> float:
        acc = []
        for train, test in splits:
            head = head_pipeline("lr", {"C": 0.5}, "none", 0, True, dense=True)
            head.fit(X[train], y[train])
            acc.append(float((head.predict(X[test]) == y[test]).mean()))
        return round(float(np.mean(acc)), 4)

    base = cv_accuracy(ref)
    out: dict[str, Any] = {"images": len(ref), "cv_folds": folds,
                           "cv_accuracy_fp32_reference": base}
    for name, path in candidates.items():
        b = np.load(path)
        cos = (ref * b).sum(1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(b, axis=1)
                                  + 1e-12)
        rel = np.linalg.norm(ref - b, axis=1) / (np.linalg.norm(ref, axis=1) + 1e-12)
        acc = cv_accuracy(b)
        out[name] = {
            "cosine_min": round(float(cos.min()), 6), "cosine_mean": round(float(cos.mean()), 6),
            "relative_error_median": float(np.median(rel)),
            "relative_error_max": float(rel.max()),
            "max_abs_error": float(np.abs(ref - b).max()),
            "cv_accuracy": acc, "cv_accuracy_delta": round(acc - base, 4),
        }
    return out


def section(ctx: Context) -> dict[str, Any]:
    from medfuse.perf import native_bf16

    n = 64 if ctx.quick else None
    work = ctx.work("extraction")
    ref = str(work / "naive_features.npy")
    cands = {"medfuse": str(work / "medfuse_features.npy")}
    naive_r = run_job(ctx, "extraction-naive", "extraction:naive", n=n, features=ref)
    med_r = run_job(ctx, "extraction-medfuse", "extraction:medfuse", n=n,
                    features=cands["medfuse"], cache_root=str(work / "decoded"))
    bf16_r = None
    if native_bf16():
        cands["medfuse_bf16"] = str(work / "medfuse_bf16_features.npy")
        bf16_r = run_job(ctx, "extraction-medfuse-bf16", "extraction:medfuse", n=n,
                         features=cands["medfuse_bf16"], cache_root=str(work / "decoded-bf16"),
                         precision="bf16-mixed", warm=False)
    var_r = run_job(ctx, "extraction-variants", "extraction:variants", quick=ctx.quick,
                    work=str(work))
    par_r: dict[str, Any] = {"error": "skipped: an extraction job failed"}
    jobs = [naive_r, med_r] + ([bf16_r] if bf16_r else [])
    if not any("error" in j for j in jobs):
        par_r = run_job(ctx, "extraction-parity", "extraction:parity", n=n, reference=ref,
                        candidates=cands)
    _remove_tree(work / "decoded")
    _remove_tree(work / "decoded-bf16")
    return {"naive": naive_r, "medfuse": med_r, "medfuse_bf16": bf16_r, "variants": var_r,
            "parity": par_r, "image_size": SIZE, "batch_size": BATCH}


def _remove_tree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)
