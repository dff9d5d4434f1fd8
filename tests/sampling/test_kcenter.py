"""kcenter is greedy farthest-first, and therefore a 2-approximation of optimal k-center."""

from itertools import combinations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.spatial.distance import cdist

from sampling import rank
from tests.sampling.helpers import assert_valid_ranking


def reference_order(x, labeled, k, first):
    """Textbook farthest-first in float64 with the full distance matrix, then the rest by
    distance to the nearest centre (farthest first), ties to the lower index."""
    d = cdist(x, x, "sqeuclidean")
    centres = list(np.flatnonzero(labeled))
    picks = []
    for i in range(min(k, int((~labeled).sum()))):
        if i == 0 and not centres:
            j = first
        else:
            dist = d[:, centres].min(axis=1)
            dist[labeled] = -1
            dist[picks] = -1
            j = int(np.argmax(dist))
        picks.append(j)
        centres.append(j)
    rest = [i for i in np.flatnonzero(~labeled) if i not in picks]
    dist = d[:, centres].min(axis=1)
    rest.sort(key=lambda i: (-dist[i], i))
    return picks + rest


def cover_radius(x, pool, centres):
    return cdist(x[pool], x[list(centres)]).min(axis=1).max()


def test_known_answer_on_a_line():
    x = np.array([[0.0], [1], [2], [10], [11], [20]])
    labeled = np.array([True, False, False, False, False, False])
    r = rank("kcenter", k=3, labeled=labeled, embeddings=x)
    # 20 is farthest from 0; then 10 (from {0, 20}); then 2. Rest: 1 and 11 are both at
    # distance 1 from a centre, so the lower index comes first.
    assert r.indices.tolist() == [5, 3, 2, 1, 4]
    np.testing.assert_allclose(r.scores, [0, 0.25, 0.5, 0.75, 1])


def test_without_labels_the_start_is_seeded_and_the_next_pick_is_farthest_from_it():
    x = np.random.default_rng(0).standard_normal((50, 4))
    starts = set()
    for seed in range(8):
        r = rank("kcenter", k=2, embeddings=x, seed=seed)
        first, second = r.indices[:2]
        assert second == np.argmax(((x - x[first]) ** 2).sum(axis=1))
        assert np.array_equal(r.indices, rank("kcenter", k=2, embeddings=x, seed=seed).indices)
        starts.add(int(first))
    assert len(starts) > 1, "the start should depend on the seed"


def test_duplicates_are_not_picked_while_new_points_remain():
    x = np.array([[0.0, 0], [0, 0], [5, 5], [5, 5], [9, 0]], dtype=np.float32)
    r = rank("kcenter", k=3, labeled=np.array([True, False, False, False, False]), embeddings=x)
    assert set(r.indices[:2].tolist()) == {2, 4}
    assert r.indices[2] == 1  # every remaining point is a duplicate (distance 0): lowest index


@settings(max_examples=60, deadline=None)
@given(
    pts=arrays(np.float64, (12, 2), elements=st.integers(-5, 5).map(float)),
    labeled=arrays(np.bool_, 12),
    k=st.integers(1, 14),
    seed=st.integers(0, 1000),
    float32=st.booleans(),
)
def test_matches_textbook_farthest_first(pts, labeled, k, seed, float32):
    # Integer coordinates make every distance exact, so ties must break identically.
    x = pts.astype(np.float32) if float32 else pts
    r = rank("kcenter", k=k, labeled=labeled, embeddings=x, seed=seed)
    assert_valid_ranking(r, labeled)
    if len(r.indices):
        assert r.indices.tolist() == reference_order(pts, labeled, k, int(r.indices[0]))


@settings(max_examples=40, deadline=None)
@given(
    x=arrays(np.float64, (10, 2), elements=st.floats(-10, 10)),
    labeled=arrays(np.bool_, 10).filter(lambda m: m.sum() <= 3),
    seed=st.integers(0, 1000),
)
def test_cover_radius_within_twice_the_brute_forced_optimum(x, labeled, seed):
    k = 3
    pool = np.flatnonzero(~labeled)
    lab = np.flatnonzero(labeled).tolist()
    kk = min(k, len(pool))
    r = rank("kcenter", k=k, labeled=labeled, embeddings=x, seed=seed)
    greedy = cover_radius(x, pool, lab + r.indices[:kk].tolist())
    optimum = min(cover_radius(x, pool, lab + list(s)) for s in combinations(pool, kk))
    assert greedy <= 2 * optimum + 1e-6


def test_large_labelled_set_is_handled_in_blocks(monkeypatch):
    # Shrink the block budget so the labelled-set initialisation runs in many blocks.
    from sampling import coreset

    monkeypatch.setattr(coreset, "_BLOCK_BYTES", 8 * 64)
    rng = np.random.default_rng(1)
    x = rng.integers(-20, 20, size=(200, 3)).astype(np.float64)
    labeled = rng.random(200) < 0.4
    r = rank("kcenter", k=15, labeled=labeled, embeddings=x)
    assert r.indices.tolist() == reference_order(x, labeled, 15, None)
