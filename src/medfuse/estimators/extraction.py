"""Frozen image features, fast: decode once, overlap decoding with the forward pass.

:func:`encode_images` is the loop behind hybrid feature extraction:

* images are decoded and resized by a few threads (:func:`~medfuse.data.decoded.decoder_pool`)
  through the on-disk :class:`~medfuse.data.decoded.DecodedImages` cache, the next
  chunk while the network works on this one;
* a whole batch is normalised at once (not image by image) and made channels-last
  (oneDNN's fast convolution layout);
* the network runs in onnxruntime (``backend="onnx"``: fp32, the frozen encoder
  exported once per weights / size / pooling into ``$MEDFUSE_HOME/onnx``, with
  TensorFlow-style "same" padding fixed for that size (:func:`static_same_padding`);
  features within 1e-4 of eager PyTorch), or in PyTorch under ``inference_mode``, channels-last,
  optionally with bf16 autocast (``bf16=True``, on CPUs with native bf16: a few per
  cent relative error, see ``medfuse benchmark``).

Measured on 2 cores (one batch of 32 at 224 px, ``medfuse benchmark``): bf16
channels-last PyTorch is ~3x eager fp32 NCHW PyTorch, onnxruntime fp32 ~3.2x as
exported by ``torch.onnx`` and ~1.4x more with the padding fixed; ``torch.compile``
takes ~45 s to compile, more than a few thousand images cost, so it is not used.

>>> import torch
>>> from medfuse.encoders.image import ImageEncoder
>>> enc = ImageEncoder("small_cnn", pretrained="none", image_size=32, freeze=True)
>>> encode_images(enc, enc.transform, []).shape
(0, 256)
"""

from __future__ import annotations

import hashlib
import logging
import os
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from medfuse.data.decoded import DecodedImages, decoder_pool, pixel_futures
from medfuse.data.preprocess import ImageTransform

log = logging.getLogger(__name__)

CHUNK = 128  # images decoded ahead of the network
BACKENDS = ("auto", "onnx", "torch")
OPSET = 17
ONNX_CHUNK = 16  # images per onnxruntime call (memory; see OnnxEncoder.__call__)
EXPORT = "static-same-pad"  # how encoders are exported (part of the ONNX file's key)


def static_same_padding(module: torch.nn.Module, *example: Any) -> torch.nn.Module:
    """A copy of ``module`` whose TF-style "same" convolutions pad by fixed amounts.

    timm's ``Conv2dSame`` (the ``tf_*`` ports, e.g. ``tf_efficientnet_lite0``) computes
    its padding from the input's shape at every call; exported to ONNX that becomes a
    chain of Shape / Gather / Ceil / Pad nodes before each strided convolution, which
    keeps onnxruntime from fusing the padding and activation into the convolution
    (~1.4x slower here). For inputs of the size of ``example`` (``module``'s arguments)
    every padding is known: each such convolution becomes a constant zero pad and a
    plain convolution (same weights, same output; the batch size stays free).
    """
    import copy

    from timm.layers import Conv2dSame
    from timm.layers.padding import get_same_padding

    out = copy.deepcopy(module).eval()
    shapes: dict[str, tuple[int, int]] = {}
    hooks = [m.register_forward_pre_hook(
                 lambda _m, args, name=name: shapes.__setitem__(name, tuple(args[0].shape[-2:])))
             for name, m in out.named_modules() if isinstance(m, Conv2dSame)]
    with torch.no_grad():
        out(*example)
    for hook in hooks:
        hook.remove()
    for name, (h, w) in shapes.items():
        conv = out.get_submodule(name)
        assert isinstance(conv, Conv2dSame)
        (kh, kw), (sh, sw), (dh, dw) = conv.kernel_size, conv.stride, conv.dilation
        ph, pw = get_same_padding(h, kh, sh, dh), get_same_padding(w, kw, sw, dw)
        plain = torch.nn.Conv2d(conv.in_channels, conv.out_channels, (kh, kw), (sh, sw), 0,
                                (dh, dw), conv.groups, bias=conv.bias is not None)
        plain.load_state_dict(conv.state_dict())
        pad = torch.nn.ZeroPad2d((pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))
        out.set_submodule(name, torch.nn.Sequential(pad, plain))
    return out


def decode_threads() -> int:
    """Decoding threads: one per core, at most 4 (``MEDFUSE_DECODE_THREADS`` overrides)."""
    value = os.environ.get("MEDFUSE_DECODE_THREADS")
    if value and value.isdigit() and int(value) > 0:
        return int(value)
    return max(1, min(4, os.cpu_count() or 1))


def encode_images(
    encoder: torch.nn.Module,
    transform: ImageTransform,
    paths: Sequence[str],
    batch_size: int = 64,
    bf16: bool = False,
    decoded: DecodedImages | None = None,
    progress: bool = False,
    threads: int | None = None,
    chunk: int = CHUNK,
    backend: str = "torch",
    device: torch.device | None = None,
) -> np.ndarray:
    """Features ``(n, output_dim)`` (float32) of the images at ``paths``, in order.

    ``decoded`` caches the decoded, resized pixels on disk (a second pass over the same
    files decodes nothing); ``bf16`` runs the network under bf16 autocast (only ask for
    it where :func:`medfuse.perf.native_bf16`); ``backend`` is ``"torch"``, ``"onnx"``
    (onnxruntime, fp32; ignores ``bf16``) or ``"auto"`` (onnx unless ``bf16``, torch
    when onnxruntime is missing or the export fails); ``device`` where the network runs
    (default: CUDA where there is one; see :func:`network`).
    """
    from medfuse.perf import tune_malloc

    tune_malloc()
    encoder.eval()
    run = network(encoder, transform.size, backend, bf16, device)
    dim = int(getattr(encoder, "output_dim", 0))
    if not paths:
        return np.zeros((0, dim), np.float32)
    paths = list(paths)
    starts = list(range(0, len(paths), chunk))
    outs: list[np.ndarray] = []
    bar: Any = None
    if progress:
        from rich.progress import Progress

        bar = Progress(transient=True)
        task = bar.add_task(f"extracting features ({len(paths)} images)", total=len(paths))
        bar.start()
    try:
        with decoder_pool(threads or decode_threads()) as pool, torch.inference_mode():
            ahead: list[Future[torch.Tensor]] = pixel_futures(
                paths[: chunk], transform, decoded, pool)
            for k in range(len(starts)):
                current = ahead
                if k + 1 < len(starts):  # decode the next chunk while this one runs
                    nxt = paths[starts[k + 1]: starts[k + 1] + chunk]
                    ahead = pixel_futures(nxt, transform, decoded, pool)
                pixels = torch.stack([f.result() for f in current])
                for b in range(0, len(pixels), batch_size):
                    outs.append(run(transform.normalize(pixels[b: b + batch_size])))
                if bar is not None:
                    bar.update(task, advance=len(current))
    finally:
        if bar is not None:
            bar.stop()
    return np.concatenate(outs).astype(np.float32, copy=False)


def network(encoder: torch.nn.Module, size: int, backend: str = "torch", bf16: bool = False,
            device: torch.device | None = None) -> Callable[[torch.Tensor], np.ndarray]:
    """A function from a normalised batch to float32 features, on ``backend``.

    ``device`` (default: CUDA where there is one, see :func:`medfuse.perf.resolve_device`):
    on a GPU the network runs there in PyTorch (``bf16``: under autocast in the GPU's
    mixed-precision dtype), or in onnxruntime's CUDA provider where that is installed;
    on the CPU ``"auto"`` means onnxruntime unless ``bf16``.
    """
    from medfuse.errors import check_option
    from medfuse.perf import autocast, onnx_providers, resolve_device

    check_option("backend", backend, BACKENDS, "encode_images")
    device = device or resolve_device()
    on_gpu = device.type != "cpu"
    onnx_gpu = on_gpu and onnx_providers()[0] == "CUDAExecutionProvider"
    if backend == "onnx" or (backend == "auto" and not bf16 and (not on_gpu or onnx_gpu)):
        try:
            return OnnxEncoder(encoder, size)
        except Exception as e:  # no onnxruntime, an op without ONNX export, ...
            if backend == "onnx":
                raise
            log.info("onnxruntime extraction unavailable (%s: %s); using PyTorch",
                     type(e).__name__, e)
    encoder.to(device)

    def run(x: torch.Tensor) -> np.ndarray:
        if on_gpu:
            x = x.pin_memory().to(device, non_blocking=True)
        x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), autocast(device, bf16):
            out: np.ndarray = encoder(x).float().cpu().numpy()
        return out

    return run


def onnx_dir() -> Path:
    """``$MEDFUSE_HOME/onnx``: exported frozen encoders."""
    from medfuse.data.builtin import data_home

    return data_home() / "onnx"


class OnnxEncoder:
    """A frozen image encoder exported to ONNX (once, cached) and run by onnxruntime.

    The file is keyed by the module's weights, class, pooling, views, input size and the
    torch / opset versions; threads follow torch's, without spinning (decoding threads
    share the cores).
    """

    _sessions: ClassVar[dict[Path, Any]] = {}

    def __init__(self, encoder: torch.nn.Module, size: int, folder: Path | None = None) -> None:
        import onnxruntime as ort

        from medfuse.data.digests import module_digest

        key = "|".join([type(encoder).__name__, module_digest(encoder), str(size),
                        str(getattr(encoder, "pool", "")), str(getattr(encoder, "views", "")),
                        torch.__version__.split("+")[0], str(OPSET), EXPORT])
        name = hashlib.sha1(key.encode(), usedforsecurity=False).hexdigest()[:20]
        self.path = (folder or onnx_dir()) / f"encoder-{name}.onnx"
        if self.path not in OnnxEncoder._sessions:
            if not self.path.is_file():
                self._export(encoder, size)
            options = ort.SessionOptions()
            options.intra_op_num_threads = torch.get_num_threads()
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            from medfuse.perf import onnx_providers

            OnnxEncoder._sessions[self.path] = ort.InferenceSession(
                str(self.path), options, providers=onnx_providers())
        self.session = OnnxEncoder._sessions[self.path]
        self.input = self.session.get_inputs()[0].name

    def _export(self, encoder: torch.nn.Module, size: int) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(f".{os.getpid()}.tmp")
        example = torch.zeros(2, 3, size, size)
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(static_same_padding(encoder, example), (example,), str(tmp),
                              input_names=["image"], output_names=["features"], opset_version=OPSET,
                              dynamic_axes={"image": {0: "batch"}, "features": {0: "batch"}},
                              dynamo=False)
        os.replace(tmp, self.path)

    def __call__(self, x: torch.Tensor) -> np.ndarray:
        # onnxruntime's arena keeps the largest activations it has seen: 16 images per
        # call run as fast as 64 here and need far less memory (Lite0 at 288 px with the
        # mirror view: ~1.9 GB peak instead of ~5.2 GB at 64)
        arr = x.contiguous().numpy()
        outs = [self.session.run(None, {self.input: arr[i:i + ONNX_CHUNK]})[0]
                for i in range(0, len(arr), ONNX_CHUNK)]
        if not outs:
            return np.asarray(self.session.run(None, {self.input: arr})[0], dtype=np.float32)
        return np.concatenate(outs).astype(np.float32, copy=False)
