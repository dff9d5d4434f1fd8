"""Acquisition and selection for active learning: numpy arrays in, an annotation order out.

No I/O here. ``rank`` is the entry point::

    from sampling import rank
    r = rank("margin", k=20, labeled=mask, probs=P, embeddings=E, seed=0)
    r.indices  # every unlabelled index, serve first to last
    r.scores   # float in [0, 1], non-decreasing: lower = served sooner

Modules: ``acquisition`` (uncertainty scores from probabilities), ``coreset``
(farthest-first and BADGE seeding), ``clusters`` (k-means, typicality, round-robin),
``strategies`` (composition, the ``auto`` rule and its evidence).
"""

from sampling.strategies import STRATEGIES, Ranking, rank

__all__ = ["STRATEGIES", "Ranking", "rank"]
