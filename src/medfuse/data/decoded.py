"""Images decoded and resized once, kept on disk as 8-bit arrays keyed by content.

Decoding a JPEG and resizing it costs about as much as a third of an
EfficientNet-Lite0 forward pass, and every training epoch and every feature
extraction used to redo it. :class:`DecodedImages` stores the result of
:meth:`ImageTransform.pixels <medfuse.data.preprocess.ImageTransform.pixels>` (the
resized ``(3, size, size)`` uint8 image, before normalisation and augmentation) as
``root/<key>/<hh>/<sha1 of the file>.npy``; ``key`` names every setting that
changes those pixels (size, hair removal, resize method). Network inputs are then
bit-for-bit what they were without the cache.

>>> import tempfile, numpy as np
>>> from PIL import Image
>>> from medfuse.data.preprocess import ImageTransform
>>> folder = tempfile.mkdtemp()
>>> Image.fromarray(np.zeros((40, 30, 3), np.uint8)).save(folder + "/a.png")
>>> cache = DecodedImages(ImageTransform(16), root=folder + "/cache")
>>> cache.pixels(folder + "/a.png").shape, cache.misses, cache.pixels(folder + "/a.png").dtype
(torch.Size([3, 16, 16]), 1, torch.uint8)
>>> cache.misses, cache.hits
(1, 1)
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections.abc import Sequence
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medfuse.data.images import read_image
from medfuse.data.preprocess import ImageTransform

log = logging.getLogger(__name__)

#: how ``ImageTransform.pixels`` resizes (a change of method must change the key)
RESIZE_METHOD = "torchvision-resize-uint8-bilinear-antialias"
FORMAT_VERSION = 1


def default_root() -> Path:
    """``$MEDFUSE_HOME/decoded`` (``~/.cache/medfuse/decoded``)."""
    from medfuse.data.builtin import data_home

    return data_home() / "decoded"


def cache_key(transform: ImageTransform) -> dict[str, Any]:
    """Everything in ``transform`` that changes its 8-bit pixels (not mean / std)."""
    state = {k: v for k, v in transform.to_dict().items() if k not in ("mean", "std")}
    return {**state, "resize": RESIZE_METHOD, "version": FORMAT_VERSION}


class DecodedImages:
    """Resized 8-bit images ``(3, size, size)`` cached on disk by file content.

    Parameters
    ----------
    transform:
        The image transform whose :meth:`~ImageTransform.pixels` are cached.
    root:
        Cache folder (default ``$MEDFUSE_HOME/decoded``).
    write:
        Store newly decoded images (``False``: read what is there, write nothing).

    A file that cannot be written (read-only home, full disk) only costs speed: the
    cache stops writing and says so once. Files are written to a temporary name and
    renamed, so a concurrent reader never sees half an array; nothing is unpickled.
    """

    def __init__(self, transform: ImageTransform, root: str | Path | None = None,
                 write: bool = True) -> None:
        self.transform = transform
        key = cache_key(transform)
        blob = json.dumps(key, sort_keys=True)
        name = f"px{transform.size}-" + hashlib.sha1(blob.encode(),
                                                     usedforsecurity=False).hexdigest()[:12]
        self.dir = Path(root) if root is not None else default_root()
        self.dir = self.dir / name
        self.write = write
        self.hits = self.misses = 0
        self._lock = threading.Lock()
        if write:
            try:
                self.dir.mkdir(parents=True, exist_ok=True)
                (self.dir / "key.json").write_text(blob)
            except OSError as e:
                self._stop_writing(e)

    def _stop_writing(self, error: OSError) -> None:
        log.warning("decoded-image cache %s is not writable (%s); images are decoded "
                    "every time instead", self.dir, error)
        self.write = False

    def _path(self, digest: str) -> Path:
        return self.dir / digest[:2] / f"{digest}.npy"

    def pixels(self, path: str | os.PathLike[str]) -> torch.Tensor:
        """The resized uint8 image of the file at ``path`` (decoded only on a miss)."""
        from medfuse.data.digests import file_digest

        target = self._path(file_digest(Path(path)))
        try:
            arr = np.load(target, allow_pickle=False)
            if arr.dtype == np.uint8 and arr.shape == (3, self.transform.size,
                                                       self.transform.size):
                with self._lock:
                    self.hits += 1
                return torch.from_numpy(arr)
        except (OSError, ValueError, EOFError):  # absent, torn or foreign: decode again
            pass
        with self._lock:
            self.misses += 1
        pixels = self.transform.pixels(read_image(path)).contiguous()
        if self.write:
            try:
                target.parent.mkdir(exist_ok=True)
                tmp = target.with_suffix(f".{os.getpid()}.{id(pixels)}.tmp")
                with open(tmp, "wb") as fh:
                    np.save(fh, pixels.numpy(), allow_pickle=False)
                os.replace(tmp, target)
            except OSError as e:
                self._stop_writing(e)
        return pixels

    def batch(self, paths: Sequence[str], pool: Executor | None = None) -> torch.Tensor:
        """``(n, 3, size, size)`` uint8 pixels of ``paths`` (see :func:`load_pixels`)."""
        return load_pixels(paths, self.transform, self, pool)


def _one_thread() -> None:
    torch.set_num_threads(1)  # this decoding thread only (OpenMP settings are per thread)


def decoder_pool(threads: int) -> ThreadPoolExecutor:
    """Threads that decode images, each running torch's per-image ops single-threaded.

    Tiny per-image ops (resize, 8-bit to float) lose more to thread synchronisation than
    they gain from a second core, badly so when another process shares the CPU; Pillow
    and torch release the GIL, so decoding threads run side by side instead.
    """
    return ThreadPoolExecutor(max_workers=max(1, threads), initializer=_one_thread,
                              thread_name_prefix="medfuse-decode")


def pixel_futures(paths: Sequence[str], transform: ImageTransform,
                  cache: DecodedImages | None, pool: Executor) -> list[Future[torch.Tensor]]:
    """Start decoding ``paths`` on ``pool``; one future per image."""
    def one(path: str) -> torch.Tensor:
        return cache.pixels(path) if cache is not None else transform.pixels(read_image(path))

    return [pool.submit(one, p) for p in paths]


def load_pixels(paths: Sequence[str], transform: ImageTransform,
                cache: DecodedImages | None = None, pool: Executor | None = None) -> torch.Tensor:
    """``(n, 3, size, size)`` uint8 pixels of ``paths`` (through ``cache`` when given).

    Decoded by ``pool`` (see :func:`decoder_pool`) or, without one, here single-threaded.
    """
    from medfuse.perf import torch_threads

    if not paths:
        return torch.zeros((0, 3, transform.size, transform.size), dtype=torch.uint8)
    if pool is None:
        with torch_threads(1):
            images = [cache.pixels(p) if cache is not None else transform.pixels(read_image(p))
                      for p in paths]
    else:
        images = [f.result() for f in pixel_futures(paths, transform, cache, pool)]
    return torch.stack(images)


def training_cache(transform: ImageTransform) -> DecodedImages | None:
    """The default cache for training / feature-extraction images, or ``None``.

    ``MEDFUSE_IMAGE_CACHE=0`` turns it off; ``MEDFUSE_IMAGE_CACHE=/some/dir`` moves it
    (default ``$MEDFUSE_HOME/decoded``). Prediction never writes to it: images sent
    for prediction are not kept.
    """
    setting = os.environ.get("MEDFUSE_IMAGE_CACHE", "1")
    if setting.lower() in ("0", "false", "no", "off"):
        return None
    root = None if setting.lower() in ("1", "true", "yes", "on") else setting
    return DecodedImages(transform, root=root)
