"""Choosing among the classes a label config still offers: serving, ordering and evaluation
alike propose only those, so an old version answers the way it is judged."""

from __future__ import annotations

from collections.abc import Collection, Sequence

import numpy as np


def allowed_classes(head_classes: Sequence[str], offered: Collection[str]) -> list[int]:
    """Indices into `head_classes` of the classes `offered` still has."""
    return [i for i, c in enumerate(head_classes) if c in offered]


def best_allowed(probs: np.ndarray, head_classes: Sequence[str],
                 offered: Collection[str]) -> np.ndarray:
    """Per row of `probs` [n, len(head_classes)], the index into `head_classes` of the most
    probable class `offered` still has (the first on a tie); -1 when it offers none of them."""
    allowed = allowed_classes(head_classes, offered)
    if not allowed or len(probs) == 0:
        return np.full(len(probs), -1, dtype=np.int64)
    return np.asarray(allowed, dtype=np.int64)[np.asarray(probs)[:, allowed].argmax(1)]
