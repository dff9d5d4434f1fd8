"""Persistent embedding cache shared by the server and every worker.

One SQLite file per project and backbone fingerprint: a new backbone (or new weights) gets a new
file, so stale vectors are never mixed in. Vectors are keyed by the image's content hash, and a
second table remembers which hash a task's image URL had, so a known task is served without
fetching its image again. SQLite in WAL mode lets several processes read and write at once.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from tqdm import tqdm


def content_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class EmbeddingStore:
    def __init__(self, root: Path, project: int, fingerprint: str, dim: int):
        self.path = Path(root) / "embeddings" / fingerprint / f"project-{project}.sqlite"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.dim = dim
        self._lock = threading.Lock()  # one connection, used by the server's request threads
        self._db = sqlite3.connect(self.path, timeout=30, check_same_thread=False)
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

    def put(self, vectors: dict[str, np.ndarray], tasks: dict[int, tuple[str, str]]) -> None:
        """Store `{hash: vector}` and `{task: (url, hash)}` in one transaction."""
        with self._lock, self._db:
            self._db.executemany(
                "INSERT OR IGNORE INTO vectors (hash, vec) VALUES (?, ?)",
                [(h, np.asarray(v, dtype=np.float32).tobytes()) for h, v in vectors.items()],
            )
            self._db.executemany(
                "INSERT OR REPLACE INTO tasks (task, url, hash) VALUES (?, ?, ?)",
                [(t, u, h) for t, (u, h) in tasks.items()],
            )


def embed_tasks(
    backbone,
    store: EmbeddingStore,
    tasks: dict[int, str],
    fetch: Callable[[str], bytes],
    *,
    batch_size: int = 32,
    workers: int = 4,
    progress: bool = False,
) -> tuple[dict[int, np.ndarray], dict[int, str]]:
    """Embeddings of `{task: image url}`, computing only what the store does not know yet.

    Images are fetched and decoded in a thread pool while the backbone runs on the previous batch.
    Returns `({task: vector}, {task: error})`: a task whose image cannot be fetched or decoded
    gets an error and the others still get their vectors.
    """
    from model.images import decode_image

    known = store.task_hashes(tasks)
    vectors = store.get(list(known.values()))
    out = {t: vectors[h] for t, h in known.items() if h in vectors}
    errors: dict[int, str] = {}
    todo = [t for t in tasks if t not in out]
    if not todo:
        return out, errors

    def load(task: int):
        try:
            data = fetch(tasks[task])
            return task, content_hash(data), data, None
        except Exception as exc:  # reported per task, never fatal for the batch
            return task, None, None, str(exc) or type(exc).__name__

    def decode(item):
        task, digest, data, err = item
        if err is not None:
            return item, None
        try:
            return item, decode_image(data)
        except Exception as exc:
            return (task, digest, None, str(exc)), None

    bar = tqdm(total=len(todo), desc="embedding", unit="img", disable=not progress)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = pool.map(lambda t: decode(load(t)), todo)
        batch: list[tuple[int, str, object]] = []

        def flush() -> None:
            if not batch:
                return
            cached = store.get([d for _, d, _ in batch])
            fresh = [(t, d, img) for t, d, img in batch if d not in cached]
            vecs = backbone.embed_batch([img for _, _, img in fresh])
            new = {d: v for (_, d, _), v in zip(fresh, vecs)}
            cached.update(new)
            store.put(new, {t: (tasks[t], d) for t, d, _ in batch})
            for t, d, _ in batch:
                out[t] = cached[d]
            bar.update(len(batch))
            batch.clear()

        for (task, digest, _, err), img in results:
            if err is not None:
                errors[task] = err
                bar.update(1)
                continue
            batch.append((task, digest, img))
            if len(batch) >= batch_size:
                flush()
        flush()
    bar.close()
    return out, errors
