"""The labelled image folder a simulation replays: its images, classes and embeddings."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"})


def scan_folder(root: Path) -> tuple[list[Path], np.ndarray, list[str]]:
    """Images under one subfolder per class, sorted so indices are stable between runs."""
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"{root} is not a folder")
    classes, files, labels = [], [], []
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        found = sorted(
            p for p in sub.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
        )
        if found:
            labels += [len(classes)] * len(found)
            classes.append(sub.name)
            files += found
    if not files:
        raise ValueError(
            f"{root} holds no images: expected one subfolder per class, e.g. {root}/cat/1.jpg"
        )
    if len(classes) < 2:
        raise ValueError(f"{root} has a single class ({classes[0]}); at least two are needed")
    return files, np.asarray(labels, dtype=np.int64), classes


def read_file(path: str) -> bytes:
    return Path(path).read_bytes()


def folder_key(root: Path) -> int:
    """A stable per-folder id for the cache file, so folders sharing one cache don't evict."""
    return int(hashlib.sha256(str(Path(root).resolve()).encode()).hexdigest()[:8], 16)


def embed_folder(
    root: Path,
    files: list[Path],
    backbone,
    cache: Path,
    fetch: Callable[[str], bytes] = read_file,
    progress: bool = True,
) -> tuple[np.ndarray, np.ndarray, dict[str, str]]:
    """Embeddings of the readable files (through the live loop's cache), their indices, errors.

    A file already embedded under the same path is neither read nor decoded again.
    """
    from model.embeddings import EmbeddingStore, embed_tasks

    store = EmbeddingStore(cache, folder_key(root), backbone.fingerprint, backbone.dim)
    try:
        tasks = {i: str(p) for i, p in enumerate(files)}
        vectors, errors = embed_tasks(backbone, store, tasks, fetch, progress=progress)
    finally:
        store.close()
    kept = np.array(sorted(vectors), dtype=np.int64)
    x = np.stack([vectors[i] for i in kept]) if len(kept) else np.zeros((0, backbone.dim))
    return x.astype(np.float32), kept, {tasks[i]: err for i, err in sorted(errors.items())}
