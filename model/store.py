"""Persistent embedding cache shared by the server and the workers of one machine.

One SQLite file per project and backbone fingerprint: a new backbone (or new weights) gets a new
file, so stale vectors are never mixed in. Vectors are keyed by the image's content hash, and a
second table remembers which hash a task's image URL had, so a known task is served without
fetching its image again. SQLite in WAL mode lets several processes read and write at once, on
one machine only: WAL needs shared memory, which a network filesystem does not give, so a store
refuses to open on one. Another machine keeps a cache of its own (it is only a cache).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import sqlite3
import threading
from pathlib import Path

import numpy as np


# Filesystem types (as /proc/mounts names them) that are shared over a network.
NETWORK_FILESYSTEMS = frozenset({
    "nfs", "nfs4", "cifs", "smb3", "smbfs", "ceph", "glusterfs", "fuse.glusterfs", "fuse.sshfs",
    "lustre", "afs", "gpfs", "beegfs", "fuse.s3fs", "fuse.gcsfuse", "fuse.rclone",
    "fuse.juicefs", "fuse.cephfs"})


class UnsafeCacheLocation(ValueError):
    """The embedding cache was asked to live on a network filesystem."""


def content_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def filesystem_of(path: Path, mounts: str | None = None) -> str:
    """The type of the filesystem holding `path` by the longest mount point above it in
    `mounts` (/proc/mounts' text; read when None); "" when unknown."""
    if mounts is None:
        try:
            mounts = Path("/proc/mounts").read_text()
        except OSError:
            return ""
    target, best, kind = os.path.realpath(path), -1, ""
    for line in mounts.splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        point = fields[1].replace("\\040", " ")
        if (target == point or target.startswith(point.rstrip("/") + "/")) and len(point) > best:
            best, kind = len(point), fields[2]
    return kind


def check_cache_location(root: Path, mounts: str | None = None) -> None:
    """UnsafeCacheLocation when `root` is on a network filesystem."""
    kind = filesystem_of(root, mounts)
    if kind in NETWORK_FILESYSTEMS:
        raise UnsafeCacheLocation(
            f"the embedding cache {root} is on a network filesystem ({kind}), where SQLite's WAL "
            "mode corrupts or fails; set EMBEDDING_CACHE_DIR to a folder on this machine's disk")


class EmbeddingStore:
    def __init__(self, root: Path, project: int, fingerprint: str, dim: int):
        self.path = Path(root) / "embeddings" / fingerprint / f"project-{project}.sqlite"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        check_cache_location(self.path.parent)
        self.dim = dim
        self._lock = threading.Lock()  # one connection, used by the server's request threads
        # Autocommit mode: writes take the write lock up front (BEGIN IMMEDIATE), so two
        # processes writing at once wait for each other (busy timeout) instead of failing.
        self._db = sqlite3.connect(
            self.path, timeout=60, check_same_thread=False, isolation_level=None
        )
        # Two processes creating the same store at once (the server and a worker): SQLite
        # refuses the second's switch to WAL at once ("database is locked"), busy timeout or not.
        with open(self.path.with_suffix(".lock"), "a") as setup_lock:
            fcntl.flock(setup_lock, fcntl.LOCK_EX)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(
                """
                CREATE TABLE IF NOT EXISTS vectors (hash TEXT PRIMARY KEY, vec BLOB NOT NULL);
                CREATE TABLE IF NOT EXISTS tasks (
                    task INTEGER PRIMARY KEY, url TEXT NOT NULL, hash TEXT NOT NULL);
                """
            )

    def close(self) -> None:
        self._db.close()

    def _select_in(self, sql: str, keys: list) -> list[tuple]:
        """Rows of `sql ... IN (keys)`, in chunks SQLite accepts."""
        rows: list[tuple] = []
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            with self._lock:
                rows += self._db.execute(f"{sql} ({','.join('?' * len(chunk))})", chunk).fetchall()
        return rows

    def task_hashes(self, tasks: dict[int, str]) -> dict[int, str]:
        """Known content hashes for `{task: url}`; a task whose URL changed is not known."""
        rows = self._select_in("SELECT task, url, hash FROM tasks WHERE task IN", list(tasks))
        return {t: h for t, u, h in rows if tasks.get(t) == u}

    def get(self, hashes: list[str]) -> dict[str, np.ndarray]:
        rows = self._select_in(
            "SELECT hash, vec FROM vectors WHERE hash IN", list(dict.fromkeys(hashes))
        )
        return {h: np.frombuffer(v, dtype=np.float32) for h, v in rows}

    def task_vectors(self, tasks: dict[int, str]) -> dict[int, np.ndarray]:
        """Vectors of the known tasks among `{task: url}` (a task whose URL changed is unknown)."""
        known = self.task_hashes(tasks)
        vectors = self.get(list(known.values()))
        return {t: vectors[h] for t, h in known.items() if h in vectors}

    def put(self, vectors: dict[str, np.ndarray], tasks: dict[int, tuple[str, str]]) -> None:
        """Store `{hash: vector}` and `{task: (url, hash)}` in one transaction."""
        rows = [(h, np.asarray(v, dtype=np.float32).tobytes()) for h, v in vectors.items()]
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany(
                    "INSERT OR IGNORE INTO vectors (hash, vec) VALUES (?, ?)", rows
                )
                self._db.executemany(
                    "INSERT OR REPLACE INTO tasks (task, url, hash) VALUES (?, ?, ?)",
                    [(t, u, h) for t, (u, h) in tasks.items()],
                )
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
