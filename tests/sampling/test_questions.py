"""Ranking by a confidence that combines several questions' heads."""

import numpy as np
import pytest

from sampling import rank
from sampling.questions import combined_confidence, head_confidence
from tests.sampling.helpers import assert_valid_ranking


def test_a_label_near_its_threshold_is_uncertain_and_max_takes_the_worst_label():
    p = np.array([[0.5, 0.99], [0.99, 0.01], [0.9, 0.9]])  # per-label probabilities
    mean = head_confidence(p, True, acquisition="margin", label_aggregate="mean")
    worst = head_confidence(p, True, acquisition="margin", label_aggregate="max")
    np.testing.assert_allclose(worst, [0.0, 0.98, 0.8])  # binary margin |2p - 1|
    np.testing.assert_allclose(mean, [0.49, 0.98, 0.8])
    entropy = head_confidence(p, True, acquisition="entropy", label_aggregate="max")
    assert entropy.argmin() == 0 and entropy.argmax() == 1


def test_questions_combine_by_mean_or_by_weights():
    single = np.array([[0.5, 0.5], [1.0, 0.0]])  # margin 0 and 1
    multi = np.array([[1.0], [0.5]])  # margin 1 and 0
    even = combined_confidence([single, multi], [False, True])
    np.testing.assert_allclose(even, [0.5, 0.5])
    species_first = combined_confidence([single, multi], [False, True], weights=[3, 1])
    np.testing.assert_allclose(species_first, [0.25, 0.75])
    with pytest.raises(ValueError, match="weights"):
        combined_confidence([single, multi], [False, True], weights=[0, 0])


def test_bald_per_label_reads_stochastic_passes():
    agree = np.full((1, 1, 4), 0.5)  # unsure but consistent: no mutual information
    disagree = np.array([[[0.0, 1.0, 0.0, 1.0]]])
    c = combined_confidence([np.concatenate([agree, disagree])], [True], label_acquisition="bald")
    assert c[1] < c[0]


def test_rank_orders_by_a_given_confidence_and_keeps_its_contract():
    conf = np.array([0.9, 0.1, 0.5, 0.0, 0.7])
    labeled = np.array([False, False, False, True, False])
    emb = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    r = rank("margin", k=2, labeled=labeled, confidence=conf)
    assert r.indices.tolist() == [1, 2, 4, 0]
    assert_valid_ranking(r, labeled)
    for name in ("auto", "entropy", "bald", "uherding", "cluster_margin", "kcenter"):
        assert_valid_ranking(rank(name, k=2, labeled=labeled, confidence=conf, embeddings=emb),
                             labeled)
    with pytest.raises(ValueError, match="class probabilities"):
        rank("badge", k=2, labeled=labeled, confidence=conf, embeddings=emb)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        rank("margin", k=2, confidence=np.array([2.0]))


@pytest.mark.parametrize("name", ["margin", "entropy", "least_confidence"])
def test_per_label_closed_forms_match_the_two_class_acquisitions(name):
    from sampling.questions import ACQUISITIONS

    p = np.random.default_rng(0).random((50, 3))
    two = np.stack([p, 1 - p], axis=2).reshape(150, 2)
    want = ACQUISITIONS[name](two).reshape(50, 3).mean(1)
    np.testing.assert_allclose(head_confidence(p, True, acquisition=name), want, atol=1e-9)


def test_rank_inputs_combine_by_the_settings_and_leave_one_question_alone():
    from sampling.questions import rank_inputs

    rng = np.random.default_rng(0)
    p = rng.random((50, 2))
    probs = {"parity": p / p.sum(1, keepdims=True), "traits": rng.random((50, 3))}
    kinds = {"parity": False, "traits": True}
    for weights, aggregate, strategy, ranked_by in (
            ({}, "mean", "margin", "margin"), ({"traits": 3.0}, "max", "entropy", "entropy"),
            ({}, "mean", "badge", "cluster_margin")):
        name, given, confidence = rank_inputs(strategy, probs, kinds, label_aggregate=aggregate,
                                              weights=weights)
        assert (name, given) == (ranked_by, None)
        want = combined_confidence(
            [probs["parity"], probs["traits"]], [False, True],
            acquisition=strategy if strategy != "badge" else "margin",
            label_acquisition="margin", label_aggregate=aggregate,
            weights=[weights.get("parity", 1.0), weights.get("traits", 1.0)])
        np.testing.assert_allclose(confidence, want)
    # One single-choice question ranks by its own probabilities, whatever the strategy.
    name, given, confidence = rank_inputs("badge", {"parity": probs["parity"]}, {"parity": False})
    assert name == "badge" and given is probs["parity"] and confidence is None
    assert rank_inputs("margin", {}, kinds) == ("margin", None, None)  # no head answers yet
