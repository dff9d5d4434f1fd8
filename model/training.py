"""One training run: held-out evaluation, then a head fitted on every label."""

from __future__ import annotations

import time

import numpy as np

from model.evaluation import evaluate
from model.head import Head, predict_proba, train_head


def holdout_mask(n: int, fraction: float, seed: int, min_labels: int = 10) -> np.ndarray:
    """A random held-out slice; none while there are too few labels to spare any."""
    mask = np.zeros(n, dtype=bool)
    if n >= min_labels and fraction > 0:
        k = max(1, int(round(n * fraction)))
        mask[np.random.default_rng(seed).permutation(n)[:k]] = True
    return mask


def fit(
    x: np.ndarray,
    y: np.ndarray,
    classes: list[str],
    *,
    heldout: np.ndarray | None = None,
    seed: int = 0,
    hidden: int = 0,
) -> tuple[Head, dict]:
    """Train a head on `x, y` and measure it on the `heldout` rows.

    The metrics come from a head that never saw the held-out rows; the head returned is then
    refitted on all rows for as many epochs as early stopping found best, so no label is wasted.
    """
    start = time.perf_counter()
    y = np.asarray(y, dtype=np.int64)
    heldout = np.zeros(len(y), dtype=bool) if heldout is None else np.asarray(heldout, dtype=bool)
    metrics = None
    epochs = 300
    if heldout.any() and (~heldout).any():
        probe, report = train_head(x[~heldout], y[~heldout], len(classes), seed=seed, hidden=hidden)
        pred = predict_proba(probe, x[heldout]).argmax(1)
        metrics = evaluate(y[heldout], pred, classes)
        epochs = report.best_epoch
    head, report = train_head(
        x, y, len(classes), seed=seed, hidden=hidden, max_epochs=epochs,
        val_fraction=0.0 if metrics else 0.15,
    )
    meta = {
        "classes": list(classes),
        "n_labels": int(len(y)),
        "label_counts": {c: int((y == i).sum()) for i, c in enumerate(classes)},
        "n_heldout": int(heldout.sum()),
        "metrics": metrics,
        "train": {"epochs": report.epochs, "seed": seed, "hidden": hidden},
        "train_seconds": round(time.perf_counter() - start, 4),
    }
    return head, meta
