"""Known answers for the uncertainty strategies: the right item comes first, with its score."""

import numpy as np
import pytest

from sampling import rank
from sampling.acquisition import bald, entropy, least_confidence, margin


def test_least_confidence_serves_lowest_top_probability_first():
    p = np.array([[0.9, 0.1, 0.0], [0.4, 0.3, 0.3], [0.5, 0.5, 0.0]])
    r = rank("least_confidence", k=1, probs=p)
    assert r.indices.tolist() == [1, 2, 0]
    np.testing.assert_allclose(r.scores, [0.4, 0.5, 0.9])


def test_margin_serves_smallest_top2_gap_first():
    # Same rows as above: margin disagrees with least-confidence on rows 1 and 2.
    p = np.array([[0.9, 0.1, 0.0], [0.4, 0.3, 0.3], [0.5, 0.5, 0.0]])
    r = rank("margin", k=1, probs=p)
    assert r.indices.tolist() == [2, 1, 0]
    np.testing.assert_allclose(r.scores, [0.0, 0.1, 0.8])


def test_entropy_score_is_one_minus_normalised_entropy():
    p = np.array([[1.0, 0, 0, 0], [0.5, 0.5, 0, 0], [0.25, 0.25, 0.25, 0.25]])
    np.testing.assert_allclose(entropy(p), [1.0, 0.5, 0.0], atol=1e-12)
    r = rank("entropy", k=1, probs=p)
    assert r.indices.tolist() == [2, 1, 0]


def test_entropy_prefers_spread_out_uncertainty_that_margin_ignores():
    p = np.array([[0.5, 0.5, 0, 0], [0.4, 0.2, 0.2, 0.2]])
    assert rank("margin", k=1, probs=p).indices.tolist() == [0, 1]
    assert rank("entropy", k=1, probs=p).indices.tolist() == [1, 0]


def test_bald_serves_disagreement_between_passes_first():
    # Passes along the last axis. Row 0: both passes say 50/50 (aleatoric, nothing to
    # learn); row 1: passes contradict each other (epistemic); row 2: both confident.
    p = np.array(
        [
            [[0.5, 0.5], [0.5, 0.5]],
            [[1.0, 0.0], [0.0, 1.0]],
            [[1.0, 1.0], [0.0, 0.0]],
        ]
    )
    np.testing.assert_allclose(bald(p), [1.0, 0.0, 1.0], atol=1e-12)
    r = rank("bald", k=1, probs=p)
    assert r.indices.tolist() == [1, 0, 2]  # 0 and 2 tie at 1.0: lower index first
    # The mean prediction of rows 0 and 1 is identical, so entropy cannot tell them apart.
    assert rank("entropy", k=1, probs=p).indices.tolist() == [0, 1, 2]


def test_non_bald_strategies_use_the_mean_over_passes():
    rng = np.random.default_rng(0)
    pt = rng.dirichlet(np.ones(5), size=(40, 3)).transpose(0, 2, 1)
    for name in ("least_confidence", "margin", "entropy"):
        a = rank(name, k=5, probs=pt)
        b = rank(name, k=5, probs=pt.mean(axis=2))
        assert np.array_equal(a.indices, b.indices)
        np.testing.assert_allclose(a.scores, b.scores)


def test_single_class_means_no_uncertainty():
    p = np.ones((3, 1))
    for fn in (least_confidence, margin, entropy):
        np.testing.assert_allclose(fn(p), 1.0)
    np.testing.assert_allclose(bald(np.ones((3, 1, 2))), 1.0)


@pytest.mark.parametrize("c", [2, 7, 64, 65, 300])
def test_margin_matches_a_full_sort(c):
    rng = np.random.default_rng(c)
    p = rng.dirichlet(np.ones(c), size=5000).astype(np.float32)
    s = np.sort(p, axis=1)
    np.testing.assert_allclose(margin(p), s[:, -1] - s[:, -2], atol=1e-7)
    rows = np.arange(0, len(p), 7)
    p[rows, (p[rows].argmax(axis=1) + 1) % c] = p[rows].max(axis=1)  # tie for the top class
    assert np.all(margin(p)[rows] == 0)


def test_labelled_items_are_never_served():
    p = np.array([[0.5, 0.5], [0.6, 0.4], [0.9, 0.1]])
    r = rank("margin", k=1, labeled=np.array([True, False, False]), probs=p)
    assert r.indices.tolist() == [1, 2]
