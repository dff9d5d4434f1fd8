"""Batch extraction of embeddings: decoding overlaps the forward pass, memory stays bounded,
and the store (`model.store`) means an image is embedded once."""

from __future__ import annotations

import itertools
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
from tqdm import tqdm

from model.store import EmbeddingStore, content_hash

__all__ = ["EmbeddingStore", "TaskMatrix", "content_hash", "embed_files", "embed_tasks",
           "prefetch_map"]

T = TypeVar("T")
R = TypeVar("R")


def prefetch_map(fn: Callable[[T], R], items: Iterable[T], workers: int, ahead: int) -> Iterator[R]:
    """`map(fn, items)` in `workers` threads, in order, with at most `ahead` results pending.

    The bound keeps memory flat: images are decoded just ahead of the forward pass instead of
    the whole pool up front.
    """
    items = iter(items)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending = deque(pool.submit(fn, item) for item in itertools.islice(items, ahead))
        while pending:
            done = pending.popleft()
            for item in itertools.islice(items, 1):
                pending.append(pool.submit(fn, item))
            yield done.result()


def _quiet(progress: bool | None, n: int) -> bool | None:
    """tqdm's `disable`: None (auto) shows a bar for long runs when stderr is a terminal."""
    if progress is None:
        return None if n >= 500 else True
    return not progress


def default_workers() -> int:
    """Decode threads: enough to keep the forward pass fed, but leave it the cores it needs."""
    return max(2, min(8, os.cpu_count() or 2))


def embed_tasks(
    backbone,
    store: EmbeddingStore,
    tasks: dict[int, str],
    fetch: Callable[[str], bytes],
    *,
    batch_size: int = 32,
    workers: int | None = None,
    progress: bool | None = None,
) -> tuple[dict[int, np.ndarray], dict[int, str]]:
    """Embeddings of `{task: image url}`, computing only what the store does not know yet.

    Worker threads fetch, hash, decode and preprocess images a bounded number of batches ahead
    while the backbone runs on the current batch; an image whose content the store knows
    (another task, same bytes) is not decoded at all. Returns `({task: vector}, {task: error})`:
    a task whose image cannot be fetched or decoded gets an error, the others their vectors.
    `progress=None` shows a bar for long runs on a terminal.
    """
    from model.images import decode_image

    out = store.task_vectors(tasks)
    errors: dict[int, str] = {}
    todo = [t for t in tasks if t not in out]
    if not todo:
        return out, errors

    def load(task: int):
        """(task, hash, vector if known, preprocessed tensor, error)"""
        try:
            data = fetch(tasks[task])
            digest = content_hash(data)
            known = store.get([digest]).get(digest)
            if known is not None:
                return task, digest, known, None, None
            img = decode_image(data, target=backbone.resize_size)
            return task, digest, None, backbone.preprocess(img), None
        except Exception as exc:  # noqa: BLE001 - reported per task, never fatal for the batch
            return task, None, None, None, str(exc) or type(exc).__name__

    bar = tqdm(total=len(todo), desc="embedding", unit="img", disable=_quiet(progress, len(todo)))
    batch: list[tuple[int, str, torch.Tensor]] = []
    links: dict[int, tuple[str, str]] = {}  # tasks whose image content the store already knew
    computed: dict[str, np.ndarray] = {}  # vectors stored during this call, by content hash

    def flush() -> None:
        vecs = backbone.embed_tensors(torch.stack([x for _, _, x in batch])) if batch else []
        new = {d: v for (_, d, _), v in zip(batch, vecs)}
        links.update({t: (tasks[t], d) for t, d, _ in batch})
        if links:
            store.put(new, links)
        # Another process may have stored the same image first: everyone uses the stored vector.
        computed.update(store.get(list(new)) if new else {})
        for t, d, _ in batch:
            out[t] = computed[d]
        bar.update(len(batch))
        batch.clear()
        links.clear()

    for task, digest, vec, tensor, err in prefetch_map(
        load, todo, workers or default_workers(), ahead=2 * batch_size
    ):
        if err is not None:
            errors[task] = err
            bar.update(1)
        elif vec is not None or digest in computed:
            out[task] = vec if vec is not None else computed[digest]
            links[task] = (tasks[task], digest)
            bar.update(1)
        else:
            batch.append((task, digest, tensor))
            if len(batch) >= batch_size:
                flush()
    flush()
    bar.close()
    return out, errors


def embed_files(
    backbone,
    paths: Iterable[Path],
    *,
    batch_size: int = 32,
    workers: int | None = None,
) -> Iterator[tuple[Path, np.ndarray | None, str | None]]:
    """`(path, vector, None)`, or `(path, None, error)` for a file that cannot be read as an
    image, for every path; decoding runs ahead of the forward pass as in `embed_tasks`.
    Errors come out as soon as they are found, vectors a batch at a time."""
    from model.images import decode_image

    def load(path: Path):
        try:
            img = decode_image(Path(path).read_bytes(), target=backbone.resize_size)
            return path, backbone.preprocess(img), None
        except Exception as exc:  # noqa: BLE001 - one unreadable file never stops the others
            return path, None, str(exc) or type(exc).__name__

    batch: list[tuple[Path, torch.Tensor]] = []

    def flush():
        vecs = backbone.embed_tensors(torch.stack([x for _, x in batch]))
        out = [(p, v, None) for (p, _), v in zip(batch, vecs)]
        batch.clear()
        return out

    for path, tensor, err in prefetch_map(load, paths, workers or default_workers(),
                                          ahead=2 * batch_size):
        if err is not None:
            yield path, None, err
            continue
        batch.append((path, tensor))
        if len(batch) >= batch_size:
            yield from flush()
    if batch:
        yield from flush()


class TaskMatrix:
    """A project's task embeddings kept in one array between retrains, so that ranking 10^5
    tasks does not read and stack 10^5 vectors from the store every time: only tasks it does not
    hold yet, or whose image URL changed, are asked for. Memory: tasks x dim float32 (100,000 x
    512: 0.2 GB), what one ranking needed anyway. Not thread-safe: a worker runs one job at a time.
    """

    def __init__(self, dim: int):
        self.urls: dict[int, str] = {}
        self.rows: dict[int, int] = {}
        self._matrix = np.empty((0, dim), dtype=np.float32)
        self._used = 0

    def take(
        self,
        urls: dict[int, str],
        vectors_of: Callable[[dict[int, str]], tuple[dict[int, np.ndarray], dict[int, str]]],
    ) -> tuple[list[int], np.ndarray, dict[int, str]]:
        """`(ids, embeddings [len(ids), dim], {task: error})` for `{task: url}`: `ids` are the
        tasks with a vector, in `urls`' order. `vectors_of` (the store, embedding what it
        lacks) is asked only for the tasks this matrix does not hold under the same URL. The
        embeddings are a view of the kept array when the tasks are all of it in order (a
        retrain's usual case), else a copy; never write to them."""
        missing = {t: u for t, u in urls.items() if self.urls.get(t) != u}
        errors: dict[int, str] = {}
        if missing:
            vectors, errors = vectors_of(missing)
            for task in missing.keys() - vectors.keys():  # its URL changed and it failed now
                self.urls.pop(task, None)
                self.rows.pop(task, None)
            self._add({t: missing[t] for t in vectors}, vectors)
        ids = [t for t in urls if t in self.rows]
        rows = np.fromiter((self.rows[t] for t in ids), dtype=np.int64, count=len(ids))
        if not np.array_equal(rows, np.arange(len(rows))):
            if 2 * len(ids) < len(self.rows):
                return ids, self._matrix[rows], errors
            self._relayout(ids)  # most of it, in another order: the next time it is a view
        return ids, self._matrix[: len(ids)], errors

    def _relayout(self, first: list[int]) -> None:
        """Put the rows of `first` first, in that order, then the others."""
        wanted = set(first)
        order = first + [t for t in self.rows if t not in wanted]
        rows = np.fromiter((self.rows[t] for t in order), dtype=np.int64, count=len(order))
        self._matrix = self._matrix[rows]
        self._used = len(order)
        self.rows = {t: i for i, t in enumerate(order)}

    def _add(self, urls: dict[int, str], vectors: dict[int, np.ndarray]) -> None:
        new = [t for t in urls if t not in self.rows]
        need = self._used + len(new)
        if need > len(self._matrix):  # grow by doubling: tasks arrive a few at a time too
            grown = np.empty((max(need, 2 * len(self._matrix)), self._matrix.shape[1]),
                             dtype=np.float32)
            grown[: self._used] = self._matrix[: self._used]
            self._matrix = grown
        for task in new:
            self.rows[task] = self._used
            self._used += 1
        if urls:
            rows = np.fromiter((self.rows[t] for t in urls), dtype=np.int64, count=len(urls))
            self._matrix[rows] = np.stack([vectors[t] for t in urls])
            self.urls.update(urls)
