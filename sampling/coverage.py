"""Coverage objectives for selection: ProbCover's ball cover and (U)Herding's kernel cover.

Both greedily pick the point that adds most to a coverage of the whole pool, with labelled
points counted as covering already. They differ in what "covered" means: inside a ball of
radius ``delta`` (ProbCover) or close under a Gaussian kernel, weighted by the model's
uncertainty (UHerding; with equal weights MaxHerding). Embeddings are L2-normalised first,
so radius and bandwidth are on the scale of self-supervised feature spaces both papers use.

Cost is quadratic in the points considered (a radius graph, a kernel matrix), so at most
``COVERAGE_MAX_POINTS`` unlabelled (and as many labelled) points take part, a seeded sample
on larger pools; the other unlabelled points follow in seeded random order.
"""

from __future__ import annotations

import numpy as np
import sklearn
from sklearn.neighbors import NearestNeighbors, radius_neighbors_graph

from sampling import clusters

COVERAGE_MAX_POINTS = 3000
PROBCOVER_PURITY = 0.95  # alpha in Yehuda et al. 2022: the largest radius keeping 95% pure balls
HERDING_NEIGHBOURS = 20  # bandwidth: median distance to this nearest neighbour
_MIN_RADIUS = 1e-3  # unit vectors: float noise of a zero distance is below this
_WORKING_MEMORY_MB = 64


def _normalised(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, np.finfo(x.dtype).tiny)


def _working_set(
    labeled: np.ndarray, seed: int | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(unlabelled taking part, labelled taking part, unlabelled left out) as indices."""
    rng = np.random.default_rng(seed)
    u, lab = np.flatnonzero(~labeled), np.flatnonzero(labeled)
    rest = np.empty(0, dtype=np.int64)
    if len(u) > COVERAGE_MAX_POINTS:
        perm = rng.permutation(len(u))
        u, rest = np.sort(u[perm[:COVERAGE_MAX_POINTS]]), u[perm[COVERAGE_MAX_POINTS:]]
    if len(lab) > COVERAGE_MAX_POINTS:
        lab = np.sort(rng.choice(lab, COVERAGE_MAX_POINTS, replace=False))
    return u, lab, rest


def purity_radius(x: np.ndarray, n_clusters: int, seed: int | None) -> float:
    """ProbCover's radius: the largest ``delta`` at which ``PROBCOVER_PURITY`` of the balls are
    pure, i.e. hold points of a single k-means cluster (the proxy for a class).

    A ball around ``x_i`` is pure while ``delta`` is below the distance from ``x_i`` to the
    nearest point of another cluster, so the purity at ``delta`` is the share of points whose
    distance exceeds it, and the radius is just below that distance's ``1 - alpha`` quantile
    (the paper scans a grid of radii for the same answer).
    """
    n_clusters = min(n_clusters, len(x))
    if n_clusters < 2:
        return _MIN_RADIUS
    labels, _ = clusters.kmeans(x, n_clusters, seed)
    other = np.full(len(x), np.inf)
    for c in np.unique(labels):
        inside = labels == c
        if inside.all():
            continue
        nn = NearestNeighbors(n_neighbors=1).fit(x[~inside])
        with sklearn.config_context(working_memory=_WORKING_MEMORY_MB):
            other[inside] = nn.kneighbors(x[inside])[0][:, 0]
    allowed = int(np.floor((1 - PROBCOVER_PURITY) * len(x) + 1e-9))  # impure balls allowed
    limit = float(np.sort(other)[allowed])  # a ball reaching this far is one impure too many
    if not np.isfinite(limit):
        return _MIN_RADIUS
    return max(float(np.nextafter(limit, 0)), _MIN_RADIUS)


def probcover(
    x: np.ndarray, labeled: np.ndarray, k: int, n_clusters: int, seed: int | None
) -> np.ndarray:
    """ProbCover (Yehuda et al., NeurIPS 2022) for the cold start: every unlabelled index.

    Greedy max coverage on the ``delta``-ball graph (``delta`` from `purity_radius`): each pick
    is the point whose ball holds the most points no labelled point or earlier pick covers.
    Once all is covered the paper samples at random; here, and after ``k`` picks, the rest come
    by how many uncovered points their ball holds, then by ball size (the dense regions first).
    """
    u, lab, rest = _working_set(labeled, seed)
    xs = _normalised(x[np.concatenate([u, lab])])
    delta = purity_radius(xs, n_clusters, seed)
    with sklearn.config_context(working_memory=_WORKING_MEMORY_MB):
        graph = radius_neighbors_graph(xs, delta, include_self=True).tocsr()
    graph.data[:] = 1  # symmetric 0/1 adjacency: row i = the ball around point i
    m = len(u)
    covered = np.zeros(len(xs), dtype=bool)
    if len(lab):
        covered[graph[m:].indices] = True
    size = np.asarray(graph[:m].sum(axis=1)).ravel()
    gain = size - np.asarray(graph[:m] @ covered.astype(np.float64)).ravel()
    gain = gain.astype(np.float64)
    picks: list[int] = []
    free = np.ones(m, dtype=bool)
    for _ in range(min(k, m)):
        j = int(np.argmax(np.where(free, gain, -1)))
        if gain[j] <= 0:
            break
        picks.append(j)
        free[j] = False
        ball = graph.indices[graph.indptr[j] : graph.indptr[j + 1]]
        newly = ball[~covered[ball]]
        covered[newly] = True
        gain -= np.asarray(graph[newly][:, :m].sum(axis=0)).ravel()
    left = np.flatnonzero(free)
    left = left[np.lexsort((left, -size[left], -gain[left]))]
    order = u[np.concatenate([np.asarray(picks, dtype=np.int64), left])]
    return np.concatenate([order, np.random.default_rng(seed).permutation(rest)])


def herding(
    x: np.ndarray,
    labeled: np.ndarray,
    k: int,
    seed: int | None,
    weights: np.ndarray | None = None,
) -> np.ndarray:
    """MaxHerding / UHerding (Bae et al., ICLR 2025): every unlabelled index.

    Greedy maximisation of the (weighted) generalised coverage
    ``sum_i w_i max_{s in S + labelled} k(x_i, s)`` with a Gaussian kernel
    ``k = exp(-|x - y|^2 / (2 sigma^2))``. Equal weights give MaxHerding, which like
    TypiClust and ProbCover seeks dense, uncovered regions; weights that grow with the
    model's uncertainty give UHerding, which moves towards the uncertain regions as the model
    learns (their "one method for every budget"). ``sigma`` is the median distance to the
    ``HERDING_NEIGHBOURS``-th nearest neighbour. After ``k`` picks the rest come by the gain
    they would add next.
    """
    u, lab, rest = _working_set(labeled, seed)
    xs = _normalised(x[np.concatenate([u, lab])]).astype(np.float64)
    m = len(u)
    sq = np.einsum("ij,ij->i", xs, xs)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2 * xs @ xs.T, 0)
    kth = min(HERDING_NEIGHBOURS, len(xs) - 1)
    sigma2 = float(np.median(np.partition(d2, kth, axis=1)[:, kth])) if kth > 0 else 0.0
    kern = np.exp(-d2 / (2 * max(sigma2, _MIN_RADIUS**2)))
    w = np.ones(len(xs)) if weights is None else weights[np.concatenate([u, lab])]
    cur = kern[:, m:].max(axis=1) if len(lab) else np.zeros(len(xs))
    free = np.ones(m, dtype=bool)
    picks: list[int] = []
    gain = np.zeros(m)
    for i in range(min(k, m) + 1):
        # Rounded so that equal columns (duplicates) tie exactly whatever BLAS's blocking.
        gain = np.round(w @ np.maximum(kern[:, :m] - cur[:, None], 0), 9)
        if i == min(k, m):
            break
        j = int(np.argmax(np.where(free, gain, -np.inf)))
        picks.append(j)
        free[j] = False
        np.maximum(cur, kern[:, j], out=cur)
    left = np.flatnonzero(free)
    left = left[np.lexsort((left, -gain[left]))]
    order = u[np.concatenate([np.asarray(picks, dtype=np.int64), left])]
    return np.concatenate([order, np.random.default_rng(seed).permutation(rest)])

