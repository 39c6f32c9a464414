"""Content digests: the identity of an image file (whatever its name or folder) and of a
network's weights.

Splits group byte-identical copies by it, and the feature and pixel caches key on it.

>>> import tempfile, pathlib
>>> p = pathlib.Path(tempfile.mkdtemp()) / "a.bin"; _ = p.write_bytes(b"abc")
>>> file_digest(p)
'a9993e364706816aba3e25717850c26c9cd0d89d'
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch

_DIGESTS: dict[tuple[str, int, int], str] = {}


def file_digest(path: str | Path) -> str:
    """sha1 of a file's bytes (content key of the feature cache).

    Remembered per process for an unchanged file (same path, size and mtime), so the
    folds of one cross-validation hash each image once.
    """
    st = os.stat(path)
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key in _DIGESTS:
        return _DIGESTS[key]
    digest = hashlib.sha1(usedforsecurity=False)
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    _DIGESTS[key] = digest.hexdigest()
    return _DIGESTS[key]


def module_digest(module: torch.nn.Module) -> str:
    """sha1 over a module's state dict (names, shapes, values): its weights' identity."""
    digest = hashlib.sha1(usedforsecurity=False)
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        t = tensor.detach().cpu().contiguous()
        digest.update(str(tuple(t.shape)).encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()
