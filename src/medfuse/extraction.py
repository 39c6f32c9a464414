"""Frozen image features, fast: decode once, overlap decoding with the forward pass.

:func:`encode_images` is the loop behind hybrid feature extraction:

* images are decoded and resized by a few threads (:func:`~medfuse.data.decoded.decoder_pool`)
  through the on-disk :class:`~medfuse.data.decoded.DecodedImages` cache, the next
  chunk while the network works on this one;
* a whole batch is normalised at once (not image by image) and made channels-last
  (oneDNN's fast convolution layout);
* the forward pass runs under ``inference_mode`` and, where the CPU multiplies bf16
  natively, bf16 autocast (features within ~1e-2 relative error of fp32: see
  ``medfuse benchmark``).

>>> import torch
>>> from medfuse.encoders.image import ImageEncoder
>>> enc = ImageEncoder("small_cnn", pretrained="none", image_size=32, freeze=True)
>>> encode_images(enc, enc.transform, []).shape
(0, 256)
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import Future
from typing import Any

import numpy as np
import torch

from medfuse.data.decoded import DecodedImages, decoder_pool, pixel_futures
from medfuse.data.preprocess import ImageTransform

CHUNK = 128  # images decoded ahead of the network


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
) -> np.ndarray:
    """Features ``(n, output_dim)`` (float32) of the images at ``paths``, in order.

    ``decoded`` caches the decoded, resized pixels on disk (a second pass over the same
    files decodes nothing); ``bf16`` runs the network under bf16 autocast (only ask for
    it where :func:`medfuse.perf.native_bf16`).
    """
    encoder.eval()
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
        with decoder_pool(threads or decode_threads()) as pool, torch.inference_mode(), \
                torch.autocast("cpu", torch.bfloat16, enabled=bf16):
            ahead: list[Future[torch.Tensor]] = pixel_futures(
                paths[: chunk], transform, decoded, pool)
            for k in range(len(starts)):
                current = ahead
                if k + 1 < len(starts):  # decode the next chunk while this one runs
                    nxt = paths[starts[k + 1]: starts[k + 1] + chunk]
                    ahead = pixel_futures(nxt, transform, decoded, pool)
                pixels = torch.stack([f.result() for f in current])
                for b in range(0, len(pixels), batch_size):
                    x = transform.normalize(pixels[b: b + batch_size])
                    x = x.contiguous(memory_format=torch.channels_last)
                    outs.append(encoder(x).float().numpy())
                if bar is not None:
                    bar.update(task, advance=len(current))
    finally:
        if bar is not None:
            bar.stop()
    return np.concatenate(outs).astype(np.float32, copy=False)
