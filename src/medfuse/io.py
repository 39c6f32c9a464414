"""Run directories: files + ``manifest.json`` (sha256 of every file, library versions).

Weights are safetensors and everything else is JSON / YAML / CSV: no pickle is
ever loaded from a run directory.

Every file of a run directory is written atomically (:func:`atomic_path`,
:func:`atomic_write_bytes`, :func:`atomic_write_text`): into a temporary file in the
same folder, flushed to disk, then renamed over the target. A crash or a kill leaves
either the old file or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import secrets
from collections.abc import Iterator
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from medfuse.errors import MedfuseError

MANIFEST = "manifest.json"
#: the run report: a view rebuilt at will (``medfuse report``), so never in the manifest
REPORT_FILE = "report.html"
_LIBRARIES = ("medfuse", "torch", "torchvision", "timm", "lightning", "transformers",
              "gensim", "scikit-learn", "numpy", "pandas")


class RunDirError(MedfuseError, ValueError):
    """A run directory is missing, incomplete or altered."""


def _fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path`` atomically.

    For libraries that write by file name (``safetensors``, ``skops``, XGBoost,
    ``pandas.to_csv``): the temporary name keeps ``path``'s suffix, is flushed to disk
    (fsync) and renamed over ``path`` (``os.replace``) when the block ends. If the block
    raises, the temporary file is removed and ``path`` is left as it was.

    >>> import tempfile
    >>> target = Path(tempfile.mkdtemp()) / "a.txt"
    >>> with atomic_path(target) as tmp:
    ...     _ = tmp.write_text("hello")
    >>> target.read_text(), sorted(p.name for p in target.parent.iterdir())
    ('hello', ['a.txt'])
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp{path.suffix}")
    try:
        yield tmp
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(path.parent)


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_path`)."""
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "xb") as fh:
        fh.write(data)
    return path


def atomic_write_text(path: str | Path, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_path`)."""
    return atomic_write_bytes(path, text.encode(encoding))


def atomic_write_json(path: str | Path, data: Any, **dumps: Any) -> Path:
    """``json.dumps(data, indent=1, **dumps)`` written to ``path`` atomically."""
    return atomic_write_text(path, json.dumps(data, **{"indent": 1, **dumps}))


def sha256(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def library_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in _LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def write_manifest(run: Path, files: list[str]) -> dict[str, Any]:
    """Record sha256 of ``files`` (relative to ``run``) in ``run/manifest.json``."""
    manifest = {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "versions": library_versions(),
        "files": {name: sha256(run / name) for name in sorted(files)},
    }
    atomic_write_json(run / MANIFEST, manifest)
    return manifest


def add_to_manifest(run: Path, files: list[str]) -> dict[str, Any]:
    """Record sha256 of ``files`` (relative to ``run``) in the run's existing manifest."""
    path = run / MANIFEST
    manifest: dict[str, Any] = json.loads(path.read_text())
    manifest.setdefault("files", {}).update({name: sha256(run / name) for name in files})
    manifest["files"] = dict(sorted(manifest["files"].items()))
    atomic_write_json(path, manifest)
    return manifest


def verify_manifest(run: Path, required: tuple[str, ...] = ()) -> dict[str, Any]:
    """Check every file in the manifest exists with its recorded sha256.

    Raises :class:`RunDirError` naming the missing or altered files.
    """
    if not run.is_dir():
        raise RunDirError(f"run directory '{run}' does not exist; train one with `medfuse train`")
    path = run / MANIFEST
    if not path.is_file():
        raise RunDirError(
            f"'{path}' is missing, so the run's files cannot be checked; "
            "re-save the model (FusionClassifier.save) or retrain"
        )
    try:
        manifest: dict[str, Any] = json.loads(path.read_text())
        files: dict[str, str] = manifest.get("files", {})
        if not isinstance(files, dict):
            raise ValueError("'files' is not a mapping")
    except (ValueError, AttributeError) as exc:  # JSONDecodeError, not UTF-8, a list, ...
        raise RunDirError(
            f"'{path}' is not a valid manifest ({exc}), so the run's files cannot be "
            "checked: it was altered or corrupted. Restore it or retrain."
        ) from None
    missing = [f for f in (*required, *files) if not (run / f).is_file()]
    if missing:
        raise RunDirError(f"run directory '{run}' lacks {sorted(set(missing))}; retrain or restore")
    altered = [f for f, digest in files.items() if sha256(run / f) != digest]
    if altered:
        raise RunDirError(
            f"file(s) {altered} in '{run}' do not match their sha256 in manifest.json: they were "
            "altered or corrupted after saving. Restore the originals or retrain."
        )
    return manifest
