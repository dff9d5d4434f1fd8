"""One confidence per item from several heads: how a label config that asks several questions
about an image, or a multiple-choice question, is ranked.

Each head's uncertainty is computed on its own: a single-choice head's by an acquisition over
its classes, a multiple-choice head's per label, as a two-class problem (present or not), then
aggregated over its labels by their mean or by the least confident label (`max` uncertainty).
The questions' confidences are combined by their mean, or a weighted mean. The result is a
confidence in ``[0, 1]`` per item, lower = more informative, that ``rank(confidence=...)``
orders by.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from sampling import acquisition

ACQUISITIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "least_confidence": acquisition.least_confidence,
    "margin": acquisition.margin,
    "entropy": acquisition.entropy,
    "bald": acquisition.bald,
}
LABEL_AGGREGATES = ("mean", "max")


def _score(name: str, probs: np.ndarray) -> np.ndarray:
    if name not in ACQUISITIONS:
        raise ValueError(f"unknown acquisition {name!r}; valid: {', '.join(ACQUISITIONS)}")
    if name == "bald":
        if probs.ndim != 3:
            raise ValueError("bald needs stochastic passes [n, c, T]")
        return acquisition.bald(probs)
    return ACQUISITIONS[name](acquisition.mean_probs(probs))


def _binary(name: str, probs: np.ndarray) -> np.ndarray:
    """`name` of each label as a two-class problem (present or not): [n, L] from [n, L(, T)].

    Closed forms for the mean-probability acquisitions (a pool of 10^6 images with 20 labels
    would otherwise stack a 320 MB array); BALD reads the passes."""
    if name == "bald":
        n, labels = probs.shape[:2]
        two = np.stack([probs, 1.0 - probs], axis=2)  # [n, L, 2, T]
        return _score(name, two.reshape(n * labels, *two.shape[2:])).reshape(n, labels)
    p = np.clip(acquisition.mean_probs(probs), 0.0, 1.0)
    if name == "margin":
        return np.abs(2 * p - 1)
    if name == "least_confidence":
        return np.maximum(p, 1 - p)
    if name == "entropy":
        with np.errstate(divide="ignore", invalid="ignore"):
            h = -np.nan_to_num(p * np.log(p)) - np.nan_to_num((1 - p) * np.log(1 - p))
        return np.clip(1 - h / np.log(2), 0.0, 1.0)
    return _score(name, probs)  # raises: unknown acquisition


def head_confidence(probs: np.ndarray, multiple: bool, *, acquisition: str = "margin",
                    label_aggregate: str = "mean") -> np.ndarray:
    """Confidence [n] of one head: `probs` [n, c] (or [n, c, T]) over a single-choice question's
    classes, or each label's own probability for a multiple-choice question."""
    probs = np.asarray(probs, dtype=np.float64)
    if not multiple:
        return _score(acquisition, probs)
    if label_aggregate not in LABEL_AGGREGATES:
        raise ValueError(f"label_aggregate must be one of {LABEL_AGGREGATES}, "
                         f"got {label_aggregate!r}")
    n, labels = probs.shape[:2]
    if labels == 0:
        return np.ones(n)
    per_label = _binary(acquisition, probs)
    return per_label.mean(axis=1) if label_aggregate == "mean" else per_label.min(axis=1)


def combined_confidence(probs: Sequence[np.ndarray], multiple: Sequence[bool], *,
                        acquisition: str = "margin", label_acquisition: str = "margin",
                        label_aggregate: str = "mean",
                        weights: Sequence[float] | None = None) -> np.ndarray:
    """Confidence [n] over several heads: the (weighted) mean of `head_confidence` of each.

    `acquisition` scores single-choice heads, `label_acquisition` each label of a
    multiple-choice head (``bald`` on stochastic passes for either)."""
    if not probs or len(probs) != len(multiple):
        raise ValueError("give one probability array and one `multiple` flag per head")
    w = np.ones(len(probs)) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != (len(probs),) or (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"weights must be one non-negative number per head, not all zero: {weights}")
    scores = [head_confidence(p, m, acquisition=label_acquisition if m else acquisition,
                              label_aggregate=label_aggregate) for p, m in zip(probs, multiple)]
    return np.clip(np.average(np.stack(scores), axis=0, weights=w), 0.0, 1.0)


def rank_inputs(strategy: str, probs: dict[str, np.ndarray], multiple: dict[str, bool], *,
                label_uncertainty: str = "margin", label_aggregate: str = "mean",
                weights: dict[str, float] | None = None
                ) -> tuple[str, np.ndarray | None, np.ndarray | None]:
    """`(strategy, probs, confidence)` for `rank`, from the heads' `probs` by question name and
    every question's kind in `multiple` (the label config's questions).

    One single-choice question ranks by its probabilities, as always; several questions or a
    multiple-choice one by `combined_confidence` (a question's weight from `weights`, 1 when
    absent). BADGE and DropQuery need one question's class probabilities: there they give way
    to Cluster-Margin, the batch strategy closest to them that a confidence can drive."""
    if not probs or (len(multiple) == 1 and not any(multiple.values())):
        return strategy, next(iter(probs.values()), None), None
    names = list(probs)
    confidence = combined_confidence(
        [probs[q] for q in names], [multiple[q] for q in names],
        acquisition=strategy if strategy in ACQUISITIONS else "margin",
        label_acquisition="bald" if strategy == "bald" else label_uncertainty,
        label_aggregate=label_aggregate,
        weights=[(weights or {}).get(q, 1.0) for q in names])
    return ("cluster_margin" if strategy in ("badge", "dropquery") else strategy), None, confidence
