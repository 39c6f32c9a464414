"""Run directories: files + ``manifest.json`` (sha256 of every file, library versions).

Weights are safetensors and everything else is JSON / YAML / CSV: no pickle is
ever loaded from a run directory.
"""

from __future__ import annotations

import hashlib
import json
import platform
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from medfuse.errors import MedfuseError

MANIFEST = "manifest.json"
_LIBRARIES = ("medfuse", "torch", "torchvision", "timm", "lightning", "transformers",
              "gensim", "scikit-learn", "numpy", "pandas")


class RunDirError(MedfuseError, ValueError):
    """A run directory is missing, incomplete or altered."""


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
    (run / MANIFEST).write_text(json.dumps(manifest, indent=1))
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
    manifest: dict[str, Any] = json.loads(path.read_text())
    files: dict[str, str] = manifest.get("files", {})
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
