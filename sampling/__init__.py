"""Acquisition and selection for active learning: numpy arrays in, an annotation order out.

No I/O here. ``rank`` is the entry point::

    from sampling import rank
    r = rank("margin", k=20, labeled=mask, probs=P, embeddings=E, seed=0)
    r.indices  # every unlabelled index, serve first to last
    r.scores   # float in [0, 1], non-decreasing: lower = served sooner

Modules: ``acquisition`` (uncertainty scores from probabilities), ``coreset``
(farthest-first and BADGE seeding), ``clusters`` (k-means, typicality, round-robin),
``coverage`` (ProbCover's ball cover, MaxHerding/UHerding's kernel cover), ``inputs`` (the
checked pool), ``strategies`` (composition, the ``auto`` rule and its evidence).
``STOCHASTIC_STRATEGIES`` names the strategies that need ``[n, c, T]`` stochastic passes.
"""

from sampling.strategies import STOCHASTIC_STRATEGIES, STRATEGIES, Ranking, rank

__all__ = ["STOCHASTIC_STRATEGIES", "STRATEGIES", "Ranking", "rank"]
