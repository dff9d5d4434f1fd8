"""Persistent embedding cache shared by the server and every worker.

One SQLite file per project and backbone fingerprint: a new backbone (or new weights) gets a new
file, so stale vectors are never mixed in. Vectors are keyed by the image's content hash, and a
second table remembers which hash a task's image URL had, so a known task is served without
fetching its image again. SQLite in WAL mode lets several processes read and write at once.
"""

from __future__ import annotations

import fcntl
import hashlib
import sqlite3
import threading
from pathlib import Path

import numpy as np


def content_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class EmbeddingStore:
    def __init__(self, root: Path, project: int, fingerprint: str, dim: int):
        self.path = Path(root) / "embeddings" / fingerprint / f"project-{project}.sqlite"
        self.path.parent.mkdir(parents=True, exist_ok=True)
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
