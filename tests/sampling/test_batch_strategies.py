"""Known answers for the diversity strategies: typiclust, kmeans, badge, cluster_margin."""

import numpy as np
from scipy.spatial.distance import cdist

from sampling import rank
from sampling.coreset import kmeanspp_outer


def blob(centre, n, scale, rng):
    return np.asarray(centre, dtype=float) + scale * rng.standard_normal((n, 2))


def most_typical(x, members):
    """Independent typicality: smallest mean distance to the K = min(20, s // 2) nearest."""
    d = cdist(x[members], x[members])
    np.fill_diagonal(d, np.inf)
    kk = min(20, len(members) // 2)
    mean = np.sort(d, axis=1)[:, :kk].mean(axis=1)
    return members[np.argmin(mean)]


def two_blobs_and_outliers(outliers=True):
    rng = np.random.default_rng(0)
    a = blob([0, 0], 30, 1.0, rng)
    b = blob([20, 0], 20, 1.0, rng)
    out = blob([100, 100], 3, 0.5, rng)[: 3 if outliers else 0]
    return np.vstack([a, b, out])  # A = 0..29, B = 30..49, outliers = 50..52


def test_typiclust_cold_start_picks_most_typical_point_of_each_cluster_biggest_first():
    x = two_blobs_and_outliers(outliers=False)
    r = rank("typiclust", k=2, embeddings=x, seed=0)
    assert r.indices[0] == most_typical(x, np.arange(30))
    assert r.indices[1] == most_typical(x, np.arange(30, 50))


def test_typiclust_prefers_clusters_without_labels():
    x = two_blobs_and_outliers(outliers=False)
    labeled = np.zeros(len(x), dtype=bool)
    labeled[3] = True  # blob A is covered
    r = rank("typiclust", k=1, labeled=labeled, embeddings=x, seed=0)
    assert 30 <= r.indices[0] < 50


def test_typiclust_serves_tiny_outlier_clusters_last():
    x = two_blobs_and_outliers()
    r = rank("typiclust", k=3, embeddings=x, seed=0)
    assert set(r.indices[-3:].tolist()) == {50, 51, 52}
    assert r.indices[2] < 30  # the third pick is A's next most typical, not an outlier


def test_kmeans_picks_the_point_at_each_centroid_largest_cluster_first():
    # Symmetric blobs of 9, 5 and 3 points: each centroid is exactly its middle point.
    def cross(c, reach):
        offs = [(0, 0)] + [(s * r, 0) for r in range(1, reach + 1) for s in (1, -1)]
        offs += [(0, s * r) for r in range(1, reach + 1) for s in (1, -1)] if reach else []
        return np.asarray(c, dtype=float) + np.asarray(offs, dtype=float)

    big, mid = cross([0, 0], 2), cross([50, 0], 1)
    small = np.array([[0.0, 50], [1, 50], [-1, 50]])
    x = np.vstack([mid, small, big])  # mid = 0..4, small = 5..7, big = 8..16
    r = rank("kmeans", k=3, embeddings=x, seed=0)
    assert r.indices[:3].tolist() == [8, 0, 5]
    # Round 2 continues with the nearest remaining point of each cluster, lowest index.
    assert r.indices[3:6].tolist() == [9, 1, 6]


def test_badge_first_pick_has_the_largest_gradient_norm():
    rng = np.random.default_rng(3)
    p = rng.dirichlet(np.ones(4), size=60)
    x = rng.standard_normal((60, 5))
    onehot = np.eye(4)[p.argmax(axis=1)]
    norms = np.linalg.norm(onehot - p, axis=1) * np.linalg.norm(x, axis=1)
    assert rank("badge", k=1, probs=p, embeddings=x, seed=0).indices[0] == np.argmax(norms)


def test_badge_never_picks_a_duplicate_of_a_pick_while_others_remain():
    p = np.array([[0.5, 0.5], [0.5, 0.5], [0.7, 0.3], [1.0, 0.0]])
    x = np.array([[1.0, 1.0], [1.0, 1.0], [-1.0, 2.0], [3.0, 0.0]])
    for seed in range(20):
        r = rank("badge", k=2, probs=p, embeddings=x, seed=seed)
        assert r.indices[0] == 0  # largest gradient norm; tie with 1 goes to the lower index
        assert r.indices[1] in (2, 3)


def test_badge_distances_equal_those_of_the_materialised_gradient_embeddings():
    rng = np.random.default_rng(5)
    p = rng.dirichlet(np.ones(3), size=40)
    x = rng.standard_normal((40, 6))
    a = np.eye(3)[p.argmax(axis=1)] - p
    g = (a[:, :, None] * x[:, None, :]).reshape(40, -1)
    excluded = np.zeros(40, dtype=bool)
    excluded[:5] = True
    picks, mind = kmeanspp_outer(a, x, 6, excluded, np.random.default_rng(0))
    assert not np.isin(picks, np.arange(5)).any()
    expected = cdist(g, g[picks], "sqeuclidean").min(axis=1)
    free = ~excluded
    free[picks] = False
    np.testing.assert_allclose(mind[free], expected[free], rtol=1e-9, atol=1e-9)


def test_cluster_margin_spreads_the_batch_over_clusters():
    # Blob A holds the four lowest margins; plain margin would spend the batch there.
    x = np.array([[0, 0], [0, 1], [1, 0], [1, 1], [50, 50], [50, 51], [51, 50], [51, 51.0]])
    m = np.array([0.01, 0.02, 0.03, 0.04, 0.5, 0.6, 0.7, 0.8])
    p = np.stack([(1 + m) / 2, (1 - m) / 2], axis=1)
    assert set(rank("margin", k=2, probs=p).indices[:2].tolist()) == {0, 1}
    r = rank("cluster_margin", k=2, probs=p, embeddings=x, seed=0)
    assert set(r.indices[:2].tolist()) == {0, 4}  # lowest margin of each cluster
    assert set(r.indices[2:4].tolist()) == {1, 5}  # the round-robin continues


def test_cluster_margin_with_one_pick_is_margin():
    rng = np.random.default_rng(2)
    p = rng.dirichlet(np.ones(3), size=50)
    x = rng.standard_normal((50, 4))
    a = rank("cluster_margin", k=1, probs=p, embeddings=x, seed=0)
    assert np.array_equal(a.indices, rank("margin", k=1, probs=p).indices)


def test_random_depends_on_the_seed_only():
    labeled = np.zeros(30, dtype=bool)
    a = rank("random", k=5, labeled=labeled, seed=1)
    assert np.array_equal(a.indices, rank("random", k=5, labeled=labeled, seed=1).indices)
    assert not np.array_equal(a.indices, rank("random", k=5, labeled=labeled, seed=2).indices)


def test_kmeans_fitted_on_a_sample_still_finds_every_blob(monkeypatch):
    from sampling import clusters

    monkeypatch.setattr(clusters, "KMEANS_FIT_SAMPLE", 40)
    monkeypatch.setattr(clusters, "KMEANS_FIT_PER_CLUSTER", 10)
    rng = np.random.default_rng(4)
    centres = np.array([[0, 0], [30, 0], [0, 30], [30, 30]])
    x = np.vstack([blob(c, 100, 1.0, rng) for c in centres])  # blob i = rows 100 i ..
    r = rank("kmeans", k=4, embeddings=x, seed=0)
    assert sorted(r.indices[:4] // 100) == [0, 1, 2, 3]
    r = rank("typiclust", k=4, embeddings=x, seed=0)
    assert sorted(r.indices[:4] // 100) == [0, 1, 2, 3]
