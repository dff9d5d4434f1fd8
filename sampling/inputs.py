"""The pool every strategy sees: ``rank``'s arguments checked once, in one place.

Why apart from the strategies: every strategy relies on the same guarantees (shapes agree,
probabilities are probabilities, embeddings are finite), so they are checked before any
strategy runs and named in the error a caller gets.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sampling import acquisition

PROB_SUM_TOLERANCE = 1e-2


@dataclass(frozen=True)
class Pool:
    labeled: np.ndarray  # bool [n]
    unlabeled: np.ndarray  # int64 [m], ascending
    probs: np.ndarray | None  # [n, c] or [n, c, T]
    embeddings: np.ndarray | None  # [n, d], C-contiguous float32/float64
    confidence: np.ndarray | None = None  # [n] in [0, 1], given instead of being derived

    def uncertainty_score(self, score) -> np.ndarray:
        """`score(probs)` [n], or the confidence given for every item (several questions)."""
        return self.confidence if self.confidence is not None else score(self.mean_probs)

    @property
    def mean_probs(self) -> np.ndarray:
        return acquisition.mean_probs(self.probs)


def _as_float_array(name: str, a: object, ndims: tuple[int, ...]) -> np.ndarray:
    a = np.asarray(a)
    if a.dtype not in (np.float32, np.float64):
        if not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
            raise ValueError(f"{name} must be numeric, got dtype {a.dtype}")
        a = a.astype(np.float64)
    if a.ndim not in ndims:
        shapes = " or ".join({2: "[n, c]", 3: "[n, c, T]"}.get(d, "[n, d]") for d in ndims)
        raise ValueError(f"{name} must have shape {shapes}, got {a.shape}")
    return np.ascontiguousarray(a)


def check_inputs(labeled: object, probs: object, embeddings: object,
                 confidence: object = None) -> Pool:
    """A `Pool` of the arguments, or ValueError naming what is wrong with them."""
    p = e = conf = None
    sizes: dict[str, int] = {}
    if confidence is not None:
        conf = np.asarray(confidence, dtype=np.float64)
        if conf.ndim != 1 or not np.all((conf >= 0) & (conf <= 1)):
            raise ValueError("confidence must be a 1-D array of numbers in [0, 1]")
        sizes["confidence"] = conf.shape[0]
    if probs is not None:
        p = _as_float_array("probs", probs, (2, 3))
        if p.shape[1] == 0:
            raise ValueError("probs must have at least one class column")
        sums = p.sum(axis=1)  # NaN/inf make the sum non-finite, so this checks those too
        if not np.all(np.abs(sums - 1) <= PROB_SUM_TOLERANCE):
            raise ValueError("probs must be probabilities: finite, each row summing to 1")
        sizes["probs"] = p.shape[0]
    if embeddings is not None:
        e = _as_float_array("embeddings", embeddings, (2,))
        if not np.all(np.isfinite(e.sum(axis=1))):
            raise ValueError("embeddings must be finite")
        sizes["embeddings"] = e.shape[0]
    if labeled is not None:
        lab = np.asarray(labeled)
        if lab.dtype != bool or lab.ndim != 1:
            raise ValueError(f"labeled must be a 1-D boolean mask, got {lab.dtype} {lab.shape}")
        sizes["labeled"] = lab.shape[0]
    elif sizes:
        lab = np.zeros(next(iter(sizes.values())), dtype=bool)
    else:
        raise ValueError("pass labeled, probs or embeddings so the pool size is known")
    if len(set(sizes.values())) > 1:
        raise ValueError(f"inputs disagree on the pool size n: {sizes}")
    return Pool(lab, np.flatnonzero(~lab).astype(np.int64), p, e, conf)


def check_needs(name: str, needs: tuple[str, ...], pool: Pool) -> None:
    """ValueError when `pool` lacks an input strategy `name` needs."""
    if pool.confidence is not None and "class probs" in needs:
        raise ValueError(f"strategy {name!r} needs one question's class probabilities; with a "
                         "confidence over several questions use margin, entropy, "
                         "least_confidence, bald, uherding, cluster_margin or a geometric one")
    for need in needs:
        if pool.confidence is not None and need in ("probs", "stochastic probs"):
            continue  # the confidence stands for the probabilities
        if need == "embeddings" and pool.embeddings is None:
            raise ValueError(f"strategy {name!r} needs embeddings")
        if need == "probs" and pool.probs is None:
            raise ValueError(f"strategy {name!r} needs probs")
        if need == "stochastic probs" and (
            pool.probs is None or pool.probs.ndim != 3 or pool.probs.shape[2] < 2
        ):
            got = "none" if pool.probs is None else list(pool.probs.shape)
            raise ValueError(
                f"strategy {name!r} needs probs of shape [n, c, T] from T >= 2 stochastic "
                f"passes (got {got})"
            )
