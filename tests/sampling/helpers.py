"""Shared checks and hypothesis generators for the sampling tests."""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays


def assert_valid_ranking(r, labeled: np.ndarray) -> None:
    """The contract every strategy owes Label Studio."""
    unlabeled = np.flatnonzero(~np.asarray(labeled, dtype=bool))
    assert r.indices.dtype == np.int64
    assert np.array_equal(np.sort(r.indices), unlabeled), "not a permutation of the unlabelled set"
    assert r.scores.shape == r.indices.shape
    assert np.all(np.isfinite(r.scores))
    assert np.all((r.scores >= 0) & (r.scores <= 1))
    assert np.all(np.diff(r.scores) >= 0), "scores must be non-decreasing along the order"


@st.composite
def pools(draw, max_n: int = 24):
    """Random pools, often degenerate: n = 0, one class, duplicate rows, all labelled."""
    n = draw(st.integers(0, max_n))
    c = draw(st.integers(1, 4))
    d = draw(st.integers(1, 3))
    t = draw(st.integers(2, 3))
    n_unique = draw(st.integers(1, max(1, n)))  # < n means duplicated rows
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    base_e = draw(arrays(dtype, (n_unique, d), elements=st.floats(-50, 50, width=32)))
    raw = draw(arrays(np.float64, (n_unique, c, t), elements=st.floats(0, 1)))
    raw[raw.sum(axis=1, keepdims=True).repeat(c, axis=1) == 0] = 1.0
    base_p = raw / raw.sum(axis=1, keepdims=True)
    rows = draw(arrays(np.int64, n, elements=st.integers(0, n_unique - 1)))
    labeled = draw(arrays(np.bool_, n))
    return {
        "labeled": labeled,
        "probs_t": base_p[rows],
        "embeddings": base_e[rows],
        "k": draw(st.integers(1, n + 5)),
        "seed": draw(st.integers(0, 2**32 - 1)),
    }
