"""Content digests: the identity of an image file (whatever its name or folder) and of a
network's weights.

Splits group byte-identical copies by it, and the feature and pixel caches key on it.
A file's digest is remembered by ``(path, size, mtime)`` in this process and in a small
SQLite store (``$MEDFUSE_HOME/hashes.sqlite``, see :class:`HashStore`), so a second run
over the same unchanged files reads none of them; the same store keeps their perceptual
hashes, one row per file, written incrementally (not one JSON file rewritten whole).

>>> import tempfile, pathlib
>>> p = pathlib.Path(tempfile.mkdtemp()) / "a.bin"; _ = p.write_bytes(b"abc")
>>> file_digest(p)
'a9993e364706816aba3e25717850c26c9cd0d89d'
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import logging
import os
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger(__name__)

_DIGESTS: dict[tuple[str, int, int], str] = {}
_LOCK = threading.Lock()
#: SQLite's limit on parameters per statement is 32766 nowadays; stay well below
_BATCH = 900


def _stat_key(path: str | Path) -> tuple[str, int, int]:
    st = os.stat(path)
    return (os.path.abspath(path), st.st_size, st.st_mtime_ns)


def _sha1(path: str | Path) -> str:
    digest = hashlib.sha1(usedforsecurity=False)
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


class HashStore:
    """File digests by ``(path, size, mtime)`` and perceptual hashes by digest, in SQLite.

    One row per file, written in one transaction per batch; readers and writers in several
    processes (cross-validation folds, DDP ranks, a service) share it safely (WAL journal,
    busy timeout). A store that cannot be opened or written (read-only home, full disk)
    only costs speed: it says so once and turns itself off.
    """

    def __init__(self, path: str | Path | None = None) -> None:
        if path is None:
            from medfuse.data.builtin import data_home

            path = data_home() / "hashes.sqlite"
        self.path = Path(path)
        self._conn: sqlite3.Connection | None = None
        self._failed = False
        self._lock = threading.RLock()  # one connection, used by one thread at a time

    def _db(self) -> sqlite3.Connection | None:
        if self._conn is None and not self._failed:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                conn = sqlite3.connect(self.path, timeout=60, check_same_thread=False,
                                       isolation_level=None)
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                conn.execute("CREATE TABLE IF NOT EXISTS files (path TEXT PRIMARY KEY, "
                             "size INTEGER, mtime_ns INTEGER, sha1 TEXT)")
                conn.execute("CREATE TABLE IF NOT EXISTS phash (sha1 TEXT, views INTEGER, "
                             "value BLOB, PRIMARY KEY (sha1, views))")
                self._conn = conn
            except (OSError, sqlite3.Error) as e:
                self._fail(e)
        return self._conn

    def _fail(self, error: Exception) -> None:
        if not self._failed:
            log.warning("hash store %s is not usable (%s); files are hashed again each run",
                        self.path, error)
        self._failed = True
        self._conn = None

    def _select(self, sql: str, keys: Sequence[str]) -> list[tuple[object, ...]]:
        rows: list[tuple[object, ...]] = []
        with self._lock:
            db = self._db()
            if db is None:
                return rows
            try:
                self._select_into(db, sql, keys, rows)
            except sqlite3.Error as e:
                self._fail(e)
        return rows

    @staticmethod
    def _select_into(db: sqlite3.Connection, sql: str, keys: Sequence[str],
                     rows: list[tuple[object, ...]]) -> None:
        for start in range(0, len(keys), _BATCH):
            part = keys[start : start + _BATCH]
            rows += db.execute(sql.format(",".join("?" * len(part))), part).fetchall()

    def _write(self, sql: str, rows: Iterable[tuple[object, ...]]) -> None:
        with self._lock:
            db = self._db()
            if db is None:
                return
            try:
                db.execute("BEGIN IMMEDIATE")
                db.executemany(sql, rows)
                db.execute("COMMIT")
            except sqlite3.Error as e:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
                self._fail(e)

    def digests(self, keys: Sequence[tuple[str, int, int]]) -> dict[str, str]:
        """Known digests (absolute path -> sha1) of files whose size and mtime still match."""
        wanted = {k[0]: k for k in keys}
        rows = self._select("SELECT path, size, mtime_ns, sha1 FROM files WHERE path IN ({})",
                            list(wanted))
        return {str(p): str(d) for p, size, mtime, d in rows
                if (p, size, mtime) == wanted.get(str(p))}

    def put_digests(self, entries: Iterable[tuple[tuple[str, int, int], str]]) -> None:
        self._write("INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?)",
                    ((k[0], k[1], k[2], d) for k, d in entries))

    def phashes(self, digests: Sequence[str], views: int) -> dict[str, list[int]]:
        """Known perceptual hashes (``views`` 64-bit values each) by file digest."""
        rows = self._select(f"SELECT sha1, value FROM phash WHERE views = {int(views)} "
                            "AND sha1 IN ({})", list(dict.fromkeys(digests)))
        out = {}
        for d, blob in rows:
            value = np.frombuffer(blob, dtype="<u8")  # type: ignore[call-overload]
            if len(value) == views:
                out[str(d)] = [int(x) for x in value]
        return out

    def put_phashes(self, entries: Iterable[tuple[str, Sequence[int]]], views: int) -> None:
        self._write("INSERT OR REPLACE INTO phash VALUES (?, ?, ?)",
                    ((d, int(views), np.asarray(v, dtype="<u8").tobytes())
                     for d, v in entries))

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


_STORES: dict[tuple[str, int], HashStore] = {}


def hash_store() -> HashStore:
    """The store of ``$MEDFUSE_HOME``: one per home and process (a connection never crosses
    a fork, e.g. into DataLoader workers)."""
    from medfuse.data.builtin import data_home

    key = (str(data_home() / "hashes.sqlite"), os.getpid())
    with _LOCK:
        if key not in _STORES:
            _STORES[key] = HashStore(key[0])
        return _STORES[key]


_PENDING: list[tuple[tuple[str, int, int], str]] = []
#: digests of single files (:func:`file_digest`) are written to the store in batches this big
PENDING_BATCH = 256


def flush_pending() -> None:
    """Write the digests :func:`file_digest` computed and has not stored yet."""
    with _LOCK:
        batch = list(_PENDING)
        _PENDING.clear()
    if batch:
        hash_store().put_digests(batch)


atexit.register(flush_pending)


def file_digests(paths: Sequence[str | Path], workers: int = 4,
                 store: HashStore | None = None, defer: bool = False) -> list[str]:
    """sha1 of each file's bytes, reading only files not seen unchanged before.

    Unchanged means same absolute path, size and mtime (like ``git`` and ``make``); the
    answers are remembered in this process and in :func:`hash_store`. ``defer`` queues new
    digests and writes them with the next :data:`PENDING_BATCH` (or at exit) instead of now.
    """
    keys = [_stat_key(p) for p in paths]
    out: dict[tuple[str, int, int], str] = {}
    with _LOCK:
        for k in keys:
            if k in _DIGESTS:
                out[k] = _DIGESTS[k]
    missing = list(dict.fromkeys(k for k in keys if k not in out))
    if not missing:
        return [out[k] for k in keys]
    store = store or hash_store()
    known = store.digests(missing)
    out.update((k, known[k[0]]) for k in missing if k[0] in known)
    todo = [k for k in missing if k not in out]
    paths_todo = [k[0] for k in todo]
    if len(todo) > 1 and workers > 1:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            digests = list(pool.map(_sha1, paths_todo))
    else:
        digests = [_sha1(p) for p in paths_todo]
    fresh = list(zip(todo, digests, strict=True))
    out.update(fresh)
    with _LOCK:
        _DIGESTS.update((k, out[k]) for k in missing)
        if defer:
            _PENDING.extend(fresh)
        full = len(_PENDING) >= PENDING_BATCH
    if not defer:
        store.put_digests(fresh)
    elif full:
        flush_pending()
    return [out[k] for k in keys]


def file_digest(path: str | Path) -> str:
    """sha1 of a file's bytes (content key of the feature cache); see :func:`file_digests`.

    One file at a time (e.g. per image a DataLoader reads): a new digest is written to the
    store with the next batch, so an epoch over new images pays no transaction per image.
    """
    return file_digests([path], workers=1, defer=True)[0]


def module_digest(module: torch.nn.Module) -> str:
    """sha1 over a module's state dict (names, shapes, values): its weights' identity."""
    digest = hashlib.sha1(usedforsecurity=False)
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        t = tensor.detach().cpu().contiguous()
        digest.update(str(tuple(t.shape)).encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()
