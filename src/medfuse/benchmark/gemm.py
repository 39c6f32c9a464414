"""The machine's fp32 matmul throughput, and FLOPs per image of the image backbone.

``gemm_gflops``: best of a few square fp32 ``torch.matmul`` calls (4096 x 4096, 2048 in
quick mode) with torch's default threads; a matmul of n x n by n x n is 2 n^3 FLOPs.
``flops_per_image``: ``torch.utils.flop_counter.FlopCounterMode`` over one forward pass
of EfficientNet-Lite0 (convolutions and matmuls; a multiply-add counts as 2 FLOPs).
"""

from __future__ import annotations

import time
from typing import Any

from medfuse.benchmark._runner import Context, run_job


def matmul_gflops(n: int, reps: int, dtype: str = "float32") -> dict[str, float]:
    """Best and median GFLOP/s of ``reps`` n x n matmuls (after one warm-up)."""
    import torch

    dt = getattr(torch, dtype)
    a = torch.randn(n, n).to(dt)
    b = torch.randn(n, n).to(dt)
    torch.matmul(a, b)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        torch.matmul(a, b)
        times.append(time.perf_counter() - t0)
    times.sort()
    flops = 2.0 * n**3
    return {"best": flops / times[0] / 1e9, "median": flops / times[len(times) // 2] / 1e9}


def flops_per_image(size: int, backbone: str = "tf_efficientnet_lite0") -> float:
    """FLOPs of one forward pass of the (avg-pooled) backbone on one ``size`` px image."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from medfuse.encoders.image import ImageEncoder

    enc = ImageEncoder(backbone, pretrained="none", image_size=size, freeze=True).eval()
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        enc(torch.zeros(1, 3, size, size))
    return float(counter.get_total_flops())


def measure(quick: bool = False) -> dict[str, Any]:
    """The job: fp32 (and bf16) GEMM throughput + backbone FLOPs per image."""
    import torch

    from medfuse.perf import native_bf16

    n, reps = (2048, 5) if quick else (4096, 6)
    fp32 = matmul_gflops(n, reps)
    bf16 = matmul_gflops(n, reps, "bfloat16") if native_bf16() else None
    sizes = {px: flops_per_image(px) for px in (160, 224, 288)}
    return {
        "matrix_size": n, "reps": reps, "threads": torch.get_num_threads(),
        "gemm_gflops": round(fp32["best"], 1), "gemm_gflops_median": round(fp32["median"], 1),
        "bf16_gemm_gflops": round(bf16["best"], 1) if bf16 else None,
        "backbone": "tf_efficientnet_lite0",
        "flops_per_image": {str(k): v for k, v in sizes.items()},
        "flop_convention": "torch.utils.flop_counter (convolutions + matmuls; a multiply-add "
                           "is 2 FLOPs)",
    }


def section(ctx: Context) -> dict[str, Any]:
    return run_job(ctx, "gemm", "gemm:measure", quick=ctx.quick)
