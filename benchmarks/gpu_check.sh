#!/usr/bin/env bash
# One short GPU check (under 8 minutes on one GPU): the device tests, a fused 1-epoch Br35H
# fine-tune, frozen feature extraction and a served prediction, on CUDA, each printed in
# images per second beside the same work on this machine's CPU.
#
#   benchmarks/gpu_check.sh [OUT]       # default OUT: runs/gpu_check
#
# Needs the project's virtual environment (make setup) with a CUDA build of torch; it
# downloads nothing (Br35H and the EfficientNet weights come from the installed wheels).
# Writes OUT/gpu_check.json and prints a table; exits non-zero when a check fails.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/gpu_check}
PY=${PY:-.venv/bin/python}
mkdir -p "$OUT"
export MEDFUSE_HOME="$(cd "$OUT" && pwd)/home"

# GPU_CHECK_DEVICES=cpu runs the same steps on the CPU only (a smoke test of this script);
# GPU_CHECK_TESTS=0 skips step 1
export GPU_CHECK_DEVICES=${GPU_CHECK_DEVICES:-cuda cpu}
"$PY" - <<'EOF'
import os, torch, sys
if "cuda" not in os.environ["GPU_CHECK_DEVICES"]:
    print("CPU only (GPU_CHECK_DEVICES)")
elif not torch.cuda.is_available():
    sys.exit("gpu_check: torch sees no CUDA device (torch %s); nothing to check" % torch.__version__)
else:
    print("GPU:", torch.cuda.get_device_name(0), "| bf16:", torch.cuda.is_bf16_supported(),
          "| torch", torch.__version__)
EOF

echo "== 1. tests that touch devices (on CUDA where the code resolves 'auto')"
[ "${GPU_CHECK_TESTS:-1}" = 0 ] || "$PY" -m pytest -q -x -p no:randomly tests/test_devices.py tests/test_hamming.py \
  tests/test_estimator.py tests/test_hybrid.py tests/test_explain.py tests/test_serve.py 2>&1 | tail -3

echo "== 2-4. fine-tune, extraction, served prediction: CUDA vs CPU"
"$PY" - "$OUT" <<'EOF'
import json, os, socket, subprocess, sys, time, urllib.request, base64
from pathlib import Path

import torch

out = Path(sys.argv[1])
results = {"gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def fine_tune(device: str, rows: int) -> dict:
    """One fused epoch on Br35H rows (train split), the shipped config, on ``device``."""
    from medfuse.benchmark.training import br35h_split
    from medfuse.config import load_config
    from medfuse.runs import estimator_from_config

    cfg = load_config("br35h", ["train.max_epochs=1", f"train.accelerator={device}"])
    train, valid, _ = br35h_split(rows)  # rows spread over the table, duplicate-grouped
    clf = estimator_from_config(cfg)
    clf.progress = False
    t0 = time.perf_counter()
    clf.fit(train, valid)
    seconds = time.perf_counter() - t0
    clf.save(out / f"br35h_{device}")
    return {"rows": len(train), "seconds": round(seconds, 1),
            "img_per_s": round(len(train) / seconds, 1)}


def extraction(device: str, n: int) -> dict:
    """Frozen EfficientNet-Lite0 features of ``n`` Br35H images, cold pixel cache."""
    from medfuse.config import load_config
    from medfuse.data import load_data
    from medfuse.encoders.image import ImageEncoder
    from medfuse.estimators.extraction import encode_images

    cfg = load_config("br35h_hybrid")
    df, _ = load_data(cfg.data)
    paths = df[cfg.data.image].astype(str).tolist()[:n]
    enc = ImageEncoder("tf_efficientnet_lite0", "builtin", 224, freeze=True).eval()
    encode_images(enc, enc.transform, paths[:64], device=torch.device(device),
                  backend="torch")  # warm-up: kernels and allocator
    t0 = time.perf_counter()
    feats = encode_images(enc, enc.transform, paths, device=torch.device(device),
                          backend="torch", bf16=device == "cuda")
    seconds = time.perf_counter() - t0
    return {"images": len(feats), "seconds": round(seconds, 1),
            "img_per_s": round(len(feats) / seconds, 1)}


def served(run: Path, device: str) -> dict:
    """``medfuse serve`` on ``run``: one warm-up, then 20 predictions, per second."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]
    env = {**os.environ, "MEDFUSE_DEVICE": device}
    proc = subprocess.Popen([sys.executable, "-m", "medfuse.cli", "serve", str(run), "--port",
                             str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(120):
            try:
                urllib.request.urlopen(url + "/health", timeout=1); break
            except OSError:
                time.sleep(1)
        from medfuse.data import load_data
        from medfuse.config import load_config
        df, _ = load_data(load_config("br35h").data)
        img = base64.b64encode(Path(df["image_path"].iloc[0]).read_bytes()).decode()
        body = json.dumps({"image": img}).encode()
        req = lambda: urllib.request.urlopen(urllib.request.Request(
            url + "/api/predict", body, {"Content-Type": "application/json"}), timeout=60).read()
        first = json.loads(req())
        t0 = time.perf_counter()
        for _ in range(20):
            req()
        seconds = time.perf_counter() - t0
        return {"probabilities": first["probabilities"], "img_per_s": round(20 / seconds, 1)}
    finally:
        proc.terminate(); proc.wait(30)


sizes = {"cuda": (3000, 3000), "cpu": (300, 256)}  # the CPU gets a sample: same work per image
devices = os.environ["GPU_CHECK_DEVICES"].split()
for device in devices:
    rows, n = sizes[device]
    results[device] = {"fine_tune": fine_tune(device, rows), "extraction": extraction(device, n)}
    results[device]["served"] = served(out / f"br35h_{device}", device)
(out / "gpu_check.json").write_text(json.dumps(results, indent=1))
print(f"{'check':<34}" + "".join(f"{d.upper() + ' img/s':>12}" for d in devices))
for key, label in (("fine_tune", "fused 1-epoch Br35H fine-tune"),
                   ("extraction", "frozen extraction (224 px)"), ("served", "served prediction")):
    print(f"{label:<34}" + "".join(f"{results[d][key]['img_per_s']:>12}" for d in devices))
print("written:", out / "gpu_check.json")
EOF
