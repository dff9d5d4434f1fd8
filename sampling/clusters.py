"""Cluster helpers for representative sampling: k-means, typicality and round-robin order.

All memory stays linear in the number of points: scikit-learn's k-means works on chunks of
samples, and nearest neighbours are searched per cluster under a bounded working memory.
"""

from __future__ import annotations

import warnings

import numpy as np
import sklearn
from sklearn.cluster import KMeans, MiniBatchKMeans
from sklearn.exceptions import ConvergenceWarning
from sklearn.neighbors import NearestNeighbors

# TypiClust's reference implementation runs full KMeans up to 50 clusters and
# MiniBatchKMeans (batches of 5000) above; Lloyd iterations cost O(n * clusters * d).
FULL_KMEANS_MAX_CLUSTERS = 50
MINIBATCH_SIZE = 5000
KMEANS_MAX_ITER = 100
# Centroids are fitted on a seeded sample of at most this many points (at least 50 per
# cluster), then every point is assigned: on 100k+ pools the fit is the whole cost, and
# 50 points per centroid place it well (faiss's k-means samples 256 per centroid).
KMEANS_FIT_SAMPLE = 20_000
KMEANS_FIT_PER_CLUSTER = 50
TYPICALITY_NEIGHBOURS = 20  # K in TypiClust's typicality (Hacohen et al. 2022).
_KNN_WORKING_MEMORY_MB = 64


def kmeans(x: np.ndarray, n_clusters: int, seed: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Cluster ``x [n, d]``; return ``(labels [n], centres [n_clusters, d])``.

    With fewer distinct points than clusters some clusters come out empty; that is fine
    for every caller (they only visit clusters that have members), so the warning is muted.
    """
    if n_clusters <= FULL_KMEANS_MAX_CLUSTERS:
        model = KMeans(n_clusters, n_init=1, max_iter=KMEANS_MAX_ITER, random_state=seed)
    else:
        model = MiniBatchKMeans(
            n_clusters, batch_size=MINIBATCH_SIZE, n_init=1, max_iter=KMEANS_MAX_ITER,
            random_state=seed,
        )
    n_fit = max(KMEANS_FIT_SAMPLE, KMEANS_FIT_PER_CLUSTER * n_clusters)
    sample = x
    if len(x) > n_fit:
        rows = np.random.default_rng(seed).choice(len(x), n_fit, replace=False)
        sample = x[np.sort(rows)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(sample)
    labels = model.predict(x)
    return labels.astype(np.int64), model.cluster_centers_


def mean_knn_distance(x: np.ndarray) -> np.ndarray:
    """Mean Euclidean distance from each row of ``x`` to its K nearest other rows.

    TypiClust's typicality is the inverse of this; ``K = min(20, len(x) // 2)`` as in the
    reference code, so small clusters measure density among half their members. A lone
    point gets 0.
    """
    s = len(x)
    if s < 2:
        return np.zeros(s)
    nn = NearestNeighbors(n_neighbors=min(TYPICALITY_NEIGHBOURS, s // 2))
    with sklearn.config_context(working_memory=_KNN_WORKING_MEMORY_MB):
        dist, _ = nn.fit(x).kneighbors()  # no query: each point is not its own neighbour
    return dist.mean(axis=1)


def distance_to_centre(x: np.ndarray, centres: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Euclidean distance from each row of ``x`` to its own centre, in row chunks."""
    out = np.empty(len(x), dtype=np.float64)
    rows = max(1, (1 << 20) // max(1, x.shape[1]))
    for start in range(0, len(x), rows):
        diff = x[start : start + rows] - centres[labels[start : start + rows]]
        out[start : start + rows] = np.einsum("ij,ij->i", diff, diff)
    return np.sqrt(out)


def round_robin(
    cluster: np.ndarray,
    priority: np.ndarray,
    cluster_rank: np.ndarray,
    tier: np.ndarray | None = None,
) -> np.ndarray:
    """Order points by visiting clusters in turn, best point of each cluster first.

    Args:
        cluster: cluster id of each point.
        priority: within a cluster, lower is taken first (ties: lower position).
        cluster_rank: for each point, the rank of its cluster in the visiting order.
        tier: optional per-point tier; every point of tier 0 comes before any of tier 1.

    Returns positions into the inputs: round 0 takes the best point of every cluster in
    ``cluster_rank`` order, round 1 the second best, and so on; exhausted clusters are
    skipped.
    """
    m = len(cluster)
    pos = np.arange(m)
    by_cluster = np.lexsort((pos, priority, cluster))
    sorted_cluster = cluster[by_cluster]
    run_start = np.r_[0, np.flatnonzero(np.diff(sorted_cluster)) + 1]
    run_len = np.diff(np.r_[run_start, m])
    within = pos - np.repeat(run_start, run_len)
    round_ = np.empty(m, dtype=np.int64)
    round_[by_cluster] = within
    keys = (pos, cluster_rank, round_) if tier is None else (pos, cluster_rank, round_, tier)
    return np.lexsort(keys)
