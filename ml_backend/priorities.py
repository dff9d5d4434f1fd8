"""The order of a project's unlabelled tasks: one prediction each, score = priority.

Label Studio's "Uncertainty sampling" serves the unlabelled task whose prediction of the project's
`model_version` has the lowest score, respecting task locks (so two annotators never get the same
task). A plan holds, under one version, one prediction per unlabelled task: its `result` is the
pre-annotation and its `score` the priority from `sampling.rank`, every unlabelled task ranked;
Label Studio gets the head of it (`publish.push_head`). Putting a plan in Label Studio and making
the queue follow it is `publish`; deleting old versions is `pruning`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ml_backend.label_config import LabelConfig
from ml_backend.ownership import model_name
from ml_backend.pool import Pool
from ml_backend.runtime import Runtime
from model.classes import best_allowed
from model.head import predict_proba
from model.versions import ModelVersion
from sampling import STOCHASTIC_STRATEGIES, rank

# Tasks whose image cannot be loaded still get a prediction (or they would be served before
# nothing else is left), with the highest score so they come last.
UNLOADABLE_SCORE = 1.0


@dataclass
class Plan:
    """The order computed for a project's unlabelled tasks."""

    version: str
    strategy: str
    predictions: list[dict]  # Label Studio prediction payloads, served first to last
    errors: dict[int, str]

    @property
    def tasks(self) -> list[int]:
        return [p["task"] for p in self.predictions]


def plan_order(
    rt: Runtime,
    project: int,
    pool: Pool,
    config: LabelConfig,
    model: ModelVersion | None,
    *,
    strategy: str,
    k: int,
    progress: bool = False,
) -> Plan:
    """Embed the pool, score it with `model` (None before any model) and order the unlabelled."""
    vectors, errors = rt.embed(project, pool.urls, progress=progress)
    ids = [t for t in pool.urls if t in vectors]
    version = model_name(rt.settings, model)
    predictions: list[dict] = []
    resolved = strategy
    if ids:
        emb = np.stack([vectors[t] for t in ids])
        # Annotated tasks the annotation filters leave out are not offered either.
        labeled = np.array([t in pool.labels or t in pool.filtered for t in ids])
        probs = None
        if model is not None:
            passes = rt.settings.mc_passes if strategy in STOCHASTIC_STRATEGIES else 1
            probs = predict_proba(model.head, emb, passes=passes, seed=rt.settings.seed)
        if (~labeled).any():
            ranking = rank(strategy, k=min(k, int((~labeled).sum())), labeled=labeled,
                           probs=probs, embeddings=emb, seed=rt.settings.seed)
            resolved = ranking.strategy
            best = None
            if model is not None:
                mean = probs.mean(axis=2) if probs.ndim == 3 else probs
                best = best_allowed(mean[ranking.indices], model.classes, config.classes).tolist()
            # One result per class, shared by its predictions (100,000 of them at scale).
            results = {i: config.result(c) for i, c in enumerate(model.classes)} if model else {}
            for row, (idx, score) in enumerate(zip(ranking.indices.tolist(),
                                                   ranking.scores.tolist())):
                result = results.get(best[row], []) if best is not None else []
                predictions.append({"task": ids[idx], "result": result,
                                    "score": float(score), "model_version": version})
    for task in pool.unlabeled:
        if task not in vectors:
            predictions.append({"task": task, "result": [], "score": UNLOADABLE_SCORE,
                                "model_version": version})
    return Plan(version, resolved, predictions, errors)
