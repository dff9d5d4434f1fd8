"""Known answers for the coverage and disagreement strategies: probcover, maxherding,
uherding, dropquery."""

import numpy as np
import pytest

from sampling import rank
from sampling.coverage import purity_radius
from tests.sampling.helpers import assert_valid_ranking


def blobs(sizes, spread=0.05, seed=0):
    """Tight blobs on the unit circle (directions matter: embeddings are normalised)."""
    rng = np.random.default_rng(seed)
    angles = np.linspace(0, np.pi, len(sizes), endpoint=False)
    parts = [np.array([np.cos(a), np.sin(a)]) + spread * rng.standard_normal((s, 2))
             for a, s in zip(angles, sizes)]  # fmt: skip
    return np.vstack(parts)  # blob i = rows sum(sizes[:i]) ..


SIZES = (40, 25, 12)
BLOB = np.repeat(np.arange(3), SIZES)


@pytest.mark.parametrize("name", ["probcover", "maxherding", "uherding"])
def test_cold_start_takes_one_point_per_blob_largest_first(name):
    x = blobs(SIZES)
    r = rank(name, k=3, embeddings=x, seed=0)
    assert BLOB[r.indices[:3]].tolist() == [0, 1, 2]


@pytest.mark.parametrize("name", ["probcover", "maxherding", "uherding"])
def test_a_labelled_blob_counts_as_covered(name):
    x = blobs(SIZES)
    labeled = np.zeros(len(x), dtype=bool)
    labeled[[0, 1]] = True  # the largest blob has labels
    r = rank(name, k=2, labeled=labeled, embeddings=x, seed=0)
    assert_valid_ranking(r, labeled)
    assert BLOB[r.indices[:2]].tolist() == [1, 2]


def test_probcover_radius_keeps_95_percent_of_balls_pure():
    x = blobs(SIZES)
    delta = purity_radius(x, 3, seed=0)
    d = np.linalg.norm(x[:, None] - x[None], axis=2)
    impure = ((d <= delta) & (BLOB[:, None] != BLOB[None])).any(axis=1)
    assert impure.mean() <= 0.05
    assert delta > np.median(np.sort(d, axis=1)[:, 5])  # still reaches well into a blob


def test_uherding_moves_to_the_uncertain_blob_once_a_model_exists():
    x = blobs(SIZES)
    p = np.tile([0.99, 0.01], (len(x), 1))
    p[BLOB == 2] = [0.5, 0.5]  # the model is unsure only about the smallest blob
    assert BLOB[rank("maxherding", k=1, probs=p, embeddings=x).indices[0]] == 0
    assert BLOB[rank("uherding", k=1, probs=p, embeddings=x).indices[0]] == 2


def test_dropquery_spreads_the_batch_over_the_points_whose_prediction_flips():
    x = blobs(SIZES)
    passes = np.zeros((len(x), 2, 4))
    passes[:, 0, :] = 1.0  # every pass says class 0 ...
    flips = np.r_[0:5, 40:45]  # ... except for five points of each of the two largest blobs
    passes[flips, :, 1] = [0.0, 1.0]  # one of four passes says class 1
    r = rank("dropquery", k=2, probs=passes, embeddings=x, seed=0)
    assert sorted(BLOB[r.indices[:2]].tolist()) == [0, 1]
    assert set(r.indices[:10].tolist()) == set(flips.tolist())  # candidates before the rest


def test_dropquery_fills_a_short_candidate_set_by_doubt():
    x = blobs(SIZES)
    m = np.linspace(0.1, 0.9, len(x))  # margins; no prediction ever flips
    p = np.stack([(1 + m) / 2, (1 - m) / 2], axis=1)
    r = rank("dropquery", k=3, probs=np.repeat(p[:, :, None], 3, axis=2), embeddings=x)
    assert sorted(r.indices[:3].tolist()) == [0, 1, 2]  # the three lowest margins
    assert r.indices[3:].tolist() == list(range(3, len(x)))


@pytest.mark.parametrize("name", ["probcover", "maxherding", "uherding"])
def test_large_pools_are_sampled_and_still_fully_ordered(name, monkeypatch):
    from sampling import coverage

    monkeypatch.setattr(coverage, "COVERAGE_MAX_POINTS", 30)
    x = blobs((60, 40, 20))
    labeled = np.zeros(len(x), dtype=bool)
    labeled[::7] = True
    r = rank(name, k=3, labeled=labeled, embeddings=x, seed=0)
    assert_valid_ranking(r, labeled)
