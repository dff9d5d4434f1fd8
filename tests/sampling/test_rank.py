"""The rank() contract for every strategy, the auto rule, and input errors."""

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings

from sampling import STOCHASTIC_STRATEGIES, STRATEGIES, Ranking, rank
from sampling.strategies import resolve_auto
from tests.sampling.helpers import assert_valid_ranking, pools

CONCRETE = [s for s in STRATEGIES if s != "auto"]
NEEDS_EMBEDDINGS = {"kcenter", "typiclust", "kmeans", "badge", "cluster_margin", "probcover",
                    "maxherding", "uherding", "dropquery"}
NEEDS_PROBS = {"least_confidence", "margin", "entropy", "bald", "badge", "cluster_margin",
               "dropquery"}


def inputs_for(name, pool):
    stochastic = name in STOCHASTIC_STRATEGIES or name == "auto"
    probs = pool["probs_t"] if stochastic else pool["probs_t"].mean(axis=2)
    return {"labeled": pool["labeled"], "probs": probs, "embeddings": pool["embeddings"]}


# --- invariants over random and degenerate pools --------------------------------------


@pytest.mark.parametrize("name", STRATEGIES)
@settings(max_examples=40, deadline=None)
@given(pool=pools())
def test_every_strategy_orders_exactly_the_unlabelled_set_reproducibly(name, pool):
    kwargs = inputs_for(name, pool)
    r = rank(name, k=pool["k"], seed=pool["seed"], **kwargs)
    assert_valid_ranking(r, pool["labeled"])
    again = rank(name, k=pool["k"], seed=pool["seed"], **kwargs)
    assert np.array_equal(r.indices, again.indices)
    assert np.array_equal(r.scores, again.scores)
    assert r.strategy in CONCRETE


@pytest.mark.parametrize("name", [s for s in CONCRETE if s != "random"])
@settings(max_examples=15, deadline=None)
@given(pool=pools(max_n=12))
def test_identical_items_are_served_in_index_order(name, pool):
    """Ties break stably: with every row identical, nothing but the index separates them."""
    n = len(pool["labeled"])
    pool = dict(pool)
    pool["probs_t"] = np.broadcast_to(pool["probs_t"][:1], pool["probs_t"].shape).copy()
    pool["embeddings"] = np.broadcast_to(pool["embeddings"][:1], pool["embeddings"].shape).copy()
    r = rank(name, k=pool["k"], seed=pool["seed"], **inputs_for(name, pool))
    expected = np.flatnonzero(~pool["labeled"])
    if name == "kcenter" and not pool["labeled"].any() and n:
        # The seeded start comes first; after it every point is at distance 0.
        expected = np.r_[r.indices[0], expected[expected != r.indices[0]]]
    assert r.indices.tolist() == expected.tolist()


@pytest.mark.parametrize("name", CONCRETE)
def test_k_larger_than_pool_and_empty_pools(name):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 3))
    pt = rng.dirichlet(np.ones(3), size=(6, 2)).transpose(0, 2, 1)
    probs = pt if name in STOCHASTIC_STRATEGIES else pt.mean(axis=2)
    labeled = np.array([True, False, True, False, False, False])
    r = rank(name, k=100, labeled=labeled, probs=probs, embeddings=x)
    assert_valid_ranking(r, labeled)
    everything = np.ones(6, dtype=bool)
    r = rank(name, k=3, labeled=everything, probs=probs, embeddings=x)
    assert r.indices.size == 0 and r.scores.size == 0
    r = rank(name, k=3, labeled=np.zeros(0, bool), probs=probs[:0], embeddings=x[:0])
    assert r.indices.size == 0


def test_ranking_is_immutable():
    r = rank("random", k=2, labeled=np.zeros(4, dtype=bool))
    assert isinstance(r, Ranking)
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.strategy = "margin"
    with pytest.raises(ValueError):
        r.indices[0] = 3


# --- the auto rule --------------------------------------------------------------------


def auto_choice(n_labeled, k, probs=True, embeddings=True, c=4):
    p = np.full((1, c), 1 / c) if probs else None
    return resolve_auto(n_labeled, k, p, embeddings)


def test_auto_covers_the_pool_before_a_model_then_takes_the_margin():
    for n_labeled, k in ((0, 10), (5, 10), (500, 10)):
        assert auto_choice(n_labeled, k, probs=False) == "maxherding"  # no model yet
    for n_labeled, k in ((0, 10), (19, 200), (500, 10), (50, 200)):
        assert auto_choice(n_labeled, k) == "margin"


def test_auto_falls_back_when_embeddings_are_missing():
    assert auto_choice(0, 10, probs=False, embeddings=False) == "random"
    assert auto_choice(0, 10, embeddings=False) == "margin"
    assert auto_choice(500, 100, embeddings=False) == "margin"


def test_ranking_reports_what_auto_resolved_to():
    rng = np.random.default_rng(0)
    labeled = np.zeros(60, dtype=bool)
    p = rng.dirichlet(np.ones(3), size=60)
    x = rng.standard_normal((60, 2))
    r = rank("auto", k=5, labeled=labeled, embeddings=x)
    assert r.strategy == "maxherding"
    assert np.array_equal(r.indices, rank("maxherding", k=5, labeled=labeled, embeddings=x).indices)
    labeled[:10] = True
    assert rank("auto", k=5, labeled=labeled, probs=p, embeddings=x).strategy == "margin"
    r = rank("auto", k=5, labeled=labeled, probs=p)
    assert r.strategy == "margin"
    assert np.array_equal(r.indices, rank("margin", k=5, labeled=labeled, probs=p).indices)


# --- errors a caller can make ---------------------------------------------------------


def test_unknown_strategy_lists_the_valid_names():
    with pytest.raises(ValueError, match="unknown strategy 'coreset'.*kcenter.*cluster_margin"):
        rank("coreset", k=1, labeled=np.zeros(3, dtype=bool))


@pytest.mark.parametrize("name", sorted(NEEDS_EMBEDDINGS))
def test_missing_embeddings_are_named(name):
    p = np.full((4, 2, 2), 0.5)  # stochastic passes, so only the embeddings are missing
    with pytest.raises(ValueError, match=f"strategy '{name}' needs embeddings"):
        rank(name, k=1, probs=p)


@pytest.mark.parametrize("name", sorted(NEEDS_PROBS - {"bald"}))
def test_missing_probs_are_named(name):
    with pytest.raises(ValueError, match=f"strategy '{name}' needs probs"):
        rank(name, k=1, embeddings=np.zeros((4, 2)))


@pytest.mark.parametrize("name", sorted(STOCHASTIC_STRATEGIES))
def test_stochastic_strategies_need_stochastic_passes(name):
    x = np.zeros((4, 2))
    with pytest.raises(ValueError, match=rf"'{name}' needs probs of shape \[n, c, T\]"):
        rank(name, k=1, probs=np.full((4, 2), 0.5), embeddings=x)
    with pytest.raises(ValueError, match="T >= 2"):
        rank(name, k=1, probs=np.full((4, 2, 1), 0.5), embeddings=x)


def test_the_stochastic_registry_names_bald_and_dropquery():
    assert STOCHASTIC_STRATEGIES == {"bald", "dropquery"}


def test_missing_inputs_are_reported_even_for_an_empty_pool():
    with pytest.raises(ValueError, match="needs embeddings"):
        rank("kcenter", k=1, labeled=np.ones(3, dtype=bool))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"k": 0}, "k must be a positive integer"),
        ({"k": 2.5}, "k must be a positive integer"),
        ({"labeled": np.array([0, 2])}, "boolean mask"),
        ({"labeled": np.zeros(5, dtype=bool)}, "disagree on the pool size"),
        ({"probs": np.array([[2.0, 1.0]] * 4)}, "summing to 1"),
        ({"probs": np.array([[np.nan, 1.0]] * 4)}, "summing to 1"),
        ({"probs": np.full(4, 0.5)}, r"shape \[n, c\] or \[n, c, T\]"),
        ({"embeddings": np.array([[np.inf, 0]] * 4)}, "finite"),
        ({"embeddings": np.zeros((4, 2, 1))}, "shape"),
    ],
)
def test_malformed_inputs_are_rejected(kwargs, message):
    args = {
        "k": 1,
        "labeled": np.zeros(4, dtype=bool),
        "probs": np.full((4, 2), 0.5),
        "embeddings": np.zeros((4, 2)),
    }
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        rank("badge", **args)


def test_pool_size_must_come_from_somewhere():
    with pytest.raises(ValueError, match="pool size"):
        rank("random", k=1)
