"""The audit log of ``medfuse serve``: one SQLite row per prediction with the time, the
model's sha256, a sha256 of the inputs, the outputs and the latency -- never the raw image
or text.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from medfuse.serve.inputs import Inputs

AUDIT_FILE = "audit.sqlite"


class AuditLog:
    """Append-only SQLite log of predictions (hashes and outputs, no raw inputs)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        with self._connect() as con:
            con.execute(
                "CREATE TABLE IF NOT EXISTS predictions (id INTEGER PRIMARY KEY AUTOINCREMENT, "
                "time TEXT NOT NULL, model_sha256 TEXT NOT NULL, input_sha256 TEXT NOT NULL, "
                "outputs TEXT NOT NULL, latency_ms REAL NOT NULL, status INTEGER NOT NULL)"
            )

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=30)

    def write(self, model_sha: str, input_sha: str, outputs: dict[str, Any],
              latency_ms: float, status: int = 200) -> None:
        """Append one row."""
        row = (datetime.now(timezone.utc).isoformat(timespec="milliseconds"), model_sha,
               input_sha, json.dumps(outputs, default=float), float(latency_ms), status)
        with self._lock, self._connect() as con:
            con.execute("INSERT INTO predictions (time, model_sha256, input_sha256, outputs, "
                        "latency_ms, status) VALUES (?, ?, ?, ?, ?, ?)", row)

    def rows(self) -> list[dict[str, Any]]:
        """Every row, oldest first (for tests and inspection)."""
        with self._connect() as con:
            con.row_factory = sqlite3.Row
            return [dict(r) for r in con.execute("SELECT * FROM predictions ORDER BY id")]


def input_sha256(inputs: Inputs) -> str:
    """sha256 over the image bytes, the tabular values and the text (canonical JSON)."""
    digest = hashlib.sha256()
    digest.update(hashlib.sha256(inputs.image or b"").digest())
    digest.update(json.dumps(inputs.tabular, sort_keys=True, default=str).encode())
    digest.update(json.dumps(inputs.text).encode())
    return digest.hexdigest()
