"""Speed helpers: native bf16 detection, precision resolution, thread scopes, and the
device of the hot paths (CUDA where there is one, autocast per device, DataLoader options).

bf16 autocast only pays on CPUs that multiply bf16 natively (AVX512-BF16 or AMX);
elsewhere oneDNN emulates it and it is *slower* than fp32, so ``"auto"`` and
``"bf16-mixed"`` fall back to fp32 there.

>>> resolve_precision("32")
'32-true'
>>> resolve_precision("auto") in ("bf16-mixed", "32-true")
True
"""

from __future__ import annotations

import functools
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "32-true", "32", "bf16-mixed", "bf16", "16-mixed", "bf16-true")
_NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU feature flags of ``/proc/cpuinfo`` (empty where there is none)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.partition(":")[2].split())
    return frozenset()


@functools.lru_cache(maxsize=1)
def native_bf16() -> bool:
    """True when this CPU runs bf16 matmuls / convolutions natively (AVX512-BF16 or AMX).

    ``MEDFUSE_BF16=0`` / ``=1`` overrides the detection.
    """
    forced = os.environ.get("MEDFUSE_BF16")
    if forced in ("0", "1"):
        return forced == "1"
    if not any(f in cpu_flags() for f in _NATIVE_BF16_FLAGS):
        return False
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def _on_cpu(accelerator: str) -> bool:
    if accelerator == "cpu":
        return True
    return accelerator == "auto" and not (
        torch.cuda.is_available() or torch.backends.mps.is_available()
    )


def resolve_precision(precision: str, accelerator: str = "auto") -> str:
    """The Lightning precision to train with.

    ``"auto"`` is ``"bf16-mixed"`` where bf16 is native (measured on 2 cores: a 160 px
    EfficientNet-Lite0 training step 1.4x eager fp32, about as fast as fp32
    channels-last, with 30 % less peak memory at 224 px and the same Br35H accuracy; see
    ``medfuse benchmark``) and ``"32-true"`` elsewhere; ``"32"`` means ``"32-true"``;
    ``"bf16-mixed"`` on a CPU without native bf16 falls back to fp32 with a warning; on a
    GPU ``"auto"`` is ``"bf16-mixed"`` where bf16 is native, ``"16-mixed"`` before that.
    Anything else goes to Lightning unchanged.
    """
    if precision in ("32", "32-true"):
        return "32-true"
    cpu = _on_cpu(accelerator)
    if precision == "auto":
        if not cpu:  # a GPU: bf16 where it is native (Ampere and later), else fp16 + scaling
            gpu_bf16 = not torch.cuda.is_available() or torch.cuda.is_bf16_supported()
            return "bf16-mixed" if gpu_bf16 else "16-mixed"
        return "bf16-mixed" if native_bf16() else "32-true"
    if precision in ("bf16-mixed", "bf16") and cpu and not native_bf16():
        log.warning("precision %r: this CPU has no native bf16 (AVX512-BF16 / AMX), where "
                    "bf16 is slower than fp32; training in fp32 instead", precision)
        return "32-true"
    return "bf16-mixed" if precision == "bf16" else precision


def use_bf16(precision: str) -> bool:
    """bf16 autocast for CPU inference: ``precision`` asks for it (or ``auto``) and it is native.

    >>> use_bf16("32-true")
    False
    """
    return (precision == "auto" or precision.startswith("bf16")) and native_bf16()


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` torch intra-op threads (restored afterwards).

    Many tiny per-image ops (resize, normalise) lose more to thread synchronisation
    than they gain from a second core, badly so when another process shares the CPU;
    decoding threads run them single-threaded side by side instead.
    """
    before = torch.get_num_threads()
    if n == before:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


_MALLOC_TUNED = False


def tune_malloc() -> bool:
    """Keep freed memory for reuse instead of returning it to the kernel (glibc only).

    A CNN training step frees and re-allocates hundreds of MB of activations; glibc
    serves large blocks with ``mmap`` and gives them back at once, so every step pays
    ~200 000 page faults (zero-filling fresh pages). Raising the mmap and trim
    thresholds to their maxima (blocks up to 32 MB come from the heap and stay there)
    measured +20 % EfficientNet-Lite0 training steps on 2 cores. Done once per process;
    ``MEDFUSE_MALLOC=0`` leaves malloc alone. Returns whether the settings were applied.
    """
    global _MALLOC_TUNED
    if _MALLOC_TUNED:
        return True
    if os.environ.get("MEDFUSE_MALLOC") == "0" or not sys.platform.startswith("linux"):
        return False
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3
        ok = all((
            libc.mallopt(m_mmap_threshold, 32 << 20),
            libc.mallopt(m_trim_threshold, 1 << 30),
            libc.mallopt(m_top_pad, 64 << 20),
        ))
    except (OSError, AttributeError):  # not glibc (musl, ...)
        return False
    _MALLOC_TUNED = bool(ok)
    return _MALLOC_TUNED


# ---------------------------------------------------------------- devices
def resolve_device(accelerator: str = "auto") -> torch.device:
    """The torch device ``accelerator`` names: ``auto`` is CUDA where there is one.

    ``cpu``; ``gpu`` / ``cuda`` (an error without one); ``mps``; ``auto``: CUDA, else MPS,
    else the CPU. ``MEDFUSE_DEVICE`` (e.g. ``cpu``) overrides ``auto``.

    >>> resolve_device("cpu")
    device(type='cpu')
    """
    if accelerator == "auto":
        accelerator = os.environ.get("MEDFUSE_DEVICE", "auto")
    if accelerator == "cpu":
        return torch.device("cpu")
    if accelerator in ("gpu", "cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"train.accelerator={accelerator!r}, but torch sees no CUDA device "
                              f"(torch {torch.__version__}): install a CUDA build of torch, or "
                              "use train.accelerator=auto (the CPU here)")
        return torch.device("cuda")
    if accelerator == "mps":
        return torch.device("mps")
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def half_dtype(device: torch.device) -> torch.dtype:
    """The mixed-precision dtype of ``device``: bf16 where it is native, else fp16 (GPUs)."""
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16


def autocast(device: torch.device, enabled: bool) -> Any:
    """``torch.autocast`` for ``device`` in its mixed-precision dtype (a no-op if not enabled)."""
    if device.type == "cpu" and enabled and not native_bf16():
        enabled = False  # emulated bf16 is slower than fp32
    return torch.autocast(device.type, half_dtype(device), enabled=enabled)


def default_workers(device: torch.device, cpus: int | None = None) -> int:
    """DataLoader worker processes by default: a GPU waits on decoding, a CPU computes.

    With a GPU, ``min(8, cpus - 1)``; on the CPU the main process's threads use every
    core for the network, so workers only pay from ``cpus // 4`` (0 below 4 cores).
    """
    if cpus is None:
        cpus = (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                else os.cpu_count() or 1)
    if device.type == "cuda":
        return max(0, min(8, cpus - 1))
    return min(4, cpus // 4)


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """A batch's tensors on ``device`` (asynchronous copies from pinned memory)."""
    if device.type == "cpu":
        return batch
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v
            for k, v in batch.items()}


def loader_options(device: torch.device, num_workers: int | None) -> dict[str, Any]:
    """DataLoader keywords for ``device``: workers (``None``: :func:`default_workers`),
    persistent workers, and pinned memory for copies to a GPU."""
    workers = default_workers(device) if num_workers is None else num_workers
    return {"num_workers": workers, "persistent_workers": workers > 0,
            "pin_memory": device.type == "cuda"}


def onnx_providers() -> list[str]:
    """onnxruntime execution providers: CUDA first where installed and a GPU is present."""
    try:
        import onnxruntime as ort

        available = set(ort.get_available_providers())
    except ImportError:
        return ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" in available and torch.cuda.is_available():
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]
