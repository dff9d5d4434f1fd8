"""Greedy coverage selection: farthest-first traversal and BADGE's k-means++ seeding.

Both keep one running vector ``mind[i]`` = squared distance from point ``i`` to its
nearest chosen centre, so a pick costs one matrix-vector product (two for BADGE) plus a
few passes over an ``n``-vector, and extra memory stays linear in ``n`` (no ``n x k``
distance matrix).
Squared distances come from ``|x|^2 + |c|^2 - 2 x.c`` with the norms computed once.

Points that are labelled or already chosen hold ``-inf`` (farthest-first) or ``0``
(D^2 sampling) and can never be picked again.
"""

from __future__ import annotations

import numpy as np

# Squared distances below 64 eps x the largest squared norm are float noise (the
# cancellation error of |x|^2 + |c|^2 - 2 x.c grows like sqrt(d) eps |x|^2). Treating them
# as 0 makes duplicates exact ties, so ties break by lowest index as promised.
_NOISE_EPS = 64
_BLOCK_BYTES = 64 << 20  # temporaries of the labelled-set initialisation stay below this.


def _sq_norms(x: np.ndarray) -> np.ndarray:
    return np.einsum("ij,ij->i", x, x)


def _noise_floor(sq: np.ndarray) -> float:
    return float(_NOISE_EPS * np.finfo(sq.dtype).eps * sq.max()) if sq.size else 0.0


def _min_sqdist_to(
    x: np.ndarray, sq: np.ndarray, centres: np.ndarray, floor: float, mind: np.ndarray
) -> None:
    """Lower ``mind`` in place to each row's squared distance to the nearest of ``centres``.

    Centres are taken in blocks so the ``n x block`` Gram temporary stays under
    ``_BLOCK_BYTES`` (one column at the least): memory linear in ``n``, BLAS-3 speed.
    """
    n = x.shape[0]
    block = max(1, _BLOCK_BYTES // max(1, n * x.itemsize))
    for start in range(0, centres.size, block):
        idx = centres[start : start + block]
        g = x @ x[idx].T
        g *= -2
        g += sq[:, None]
        g += sq[idx][None, :] - floor
        np.maximum(g, 0, out=g)
        np.minimum(mind, g.min(axis=1), out=mind)


def farthest_first(
    x: np.ndarray, k: int, excluded: np.ndarray, start: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Greedy k-center (Gonzalez 1985; Sener & Savarese 2018's core-set).

    Each pick is the point farthest from every labelled point and every earlier pick,
    which gives a cover radius within 2x of the optimal k-center (Gonzalez 1985).

    Args:
        x: ``[n, d]`` float32/float64 C-contiguous embeddings.
        k: number of picks (stops early if the pool runs out).
        excluded: boolean ``[n]``, True for labelled points; they act as existing centres.
        start: first pick when nothing is excluded (there is no "farthest" yet).

    Returns:
        ``(picks, mind)``: the picks in order, and every point's squared distance to its
        nearest centre afterwards, less the float-noise floor and clamped at 0 (only the
        order matters here); ``-inf`` for labelled and picked points.
    """
    n = x.shape[0]
    sq = _sq_norms(x)
    floor = _noise_floor(sq)
    mind = np.full(n, np.inf, dtype=x.dtype)
    centres = np.flatnonzero(excluded)
    if centres.size:
        _min_sqdist_to(x, sq, centres, floor, mind)
    mind[centres] = -np.inf

    picks: list[int] = []
    t = np.empty(n, dtype=x.dtype)
    for i in range(k):
        j = start if (i == 0 and not centres.size and start is not None) else int(np.argmax(mind))
        if mind[j] == -np.inf:  # every point is a centre already
            break
        picks.append(j)
        # t = |x|^2 + |x_j|^2 - 2 x.x_j - floor, clamped at 0; one sgemv/dgemv plus
        # in-place passes over n-vectors (no temporaries).
        np.matmul(x, x[j] * -2, out=t)
        t += sq
        t += sq[j] - floor
        np.maximum(t, 0, out=t)
        np.minimum(mind, t, out=mind)
        mind[j] = -np.inf
    return np.asarray(picks, dtype=np.int64), mind


def kmeanspp_outer(
    a: np.ndarray, x: np.ndarray, k: int, excluded: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """k-means++ seeding over the rows of ``g_i = a_i (outer) x_i`` without forming them.

    BADGE (Ash et al. 2020) seeds k-means++ on gradient embeddings of dimension ``c*d``;
    materialising them is ``n*c*d`` floats (sklearn's ``kmeans_plusplus`` needs that
    matrix). Since ``<a_i (x) x_i, a_j (x) x_j> = <a_i, a_j> <x_i, x_j>``, each pick needs
    only two matrix-vector products, ``a @ a_j`` and ``x @ x_j``.

    As in BADGE's reference code, the first pick is the largest gradient norm and each
    later one is drawn with probability proportional to its squared distance to the
    nearest pick. If every remaining distance is 0 (duplicates, or zero gradients from a
    confident model) the lowest remaining index is taken.

    Returns ``(picks, mind)`` with ``mind`` the final squared distances (0 for excluded
    and picked points).
    """
    n = x.shape[0]
    dtype = np.result_type(a.dtype, x.dtype)
    sq = (_sq_norms(a) * _sq_norms(x)).astype(dtype, copy=False)
    floor = _noise_floor(sq)
    free = ~excluded
    mind = np.where(free, np.inf, 0).astype(dtype)
    picks: list[int] = []
    ta = np.empty(n, dtype=dtype)
    tx = np.empty(n, dtype=dtype)
    for i in range(k):
        if not free.any():
            break
        if i == 0:
            j = int(np.argmax(np.where(free, sq, -np.inf)))
        else:
            cum = np.cumsum(mind, dtype=np.float64)
            if cum[-1] > 0:
                j = int(np.searchsorted(cum, rng.random() * cum[-1], side="right"))
                j = min(j, n - 1)
                while mind[j] == 0:  # float edge: r rounded up to the total
                    j -= 1
            else:
                j = int(np.argmax(free))
        picks.append(j)
        np.matmul(a, a[j], out=ta)
        np.matmul(x, x[j], out=tx)
        ta *= tx
        ta *= -2
        ta += sq
        ta += sq[j]
        ta[ta < floor] = 0  # snap, not shift: the values are sampling weights here
        np.minimum(mind, ta, out=mind)
        free[j] = False
        mind[j] = 0  # excluded points start at 0 and t >= 0, so they stay at 0
    return np.asarray(picks, dtype=np.int64), mind
