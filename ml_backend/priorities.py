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
from model.versions import ModelVersion
from sampling import STOCHASTIC_STRATEGIES, rank
from sampling.questions import rank_inputs

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
    ids, emb, errors = rt.embedding_matrix(project, pool.urls, progress=progress)
    version = model_name(rt.settings, model)
    predictions: list[dict] = []
    resolved = strategy
    if ids:
        # Annotated tasks the annotation filters leave out are not offered either.
        labeled = np.array([t in pool.labels or t in pool.filtered for t in ids])
        by_question: dict[str, np.ndarray] = {}
        if model is not None:
            passes = rt.settings.mc_passes if strategy in STOCHASTIC_STRATEGIES else 1
            by_question = model.probabilities(emb, config.questions, passes=passes,
                                              seed=rt.settings.seed)
        if (~labeled).any():
            strategy, probs, confidence = rank_inputs(
                strategy, by_question, {q.name: q.multiple for q in config.questions},
                label_uncertainty=rt.settings.label_uncertainty,
                label_aggregate=rt.settings.label_aggregate,
                weights=rt.settings.question_weights)
            ranking = rank(strategy, k=min(k, int((~labeled).sum())), labeled=labeled,
                           probs=probs, embeddings=emb, seed=rt.settings.seed,
                           confidence=confidence)
            resolved = ranking.strategy
            said = [{}] * len(ranking.indices)
            if by_question:
                said = model.answers({q: p[ranking.indices] for q, p in by_question.items()},
                                     config.questions, len(ranking.indices))
            results: dict[tuple, list[dict]] = {}  # one per distinct answer: 10^6 tasks share few
            for answers, idx, score in zip(said, ranking.indices.tolist(),
                                           ranking.scores.tolist()):
                key = tuple(answers.items())
                result = results.get(key)
                if result is None:
                    result = results[key] = config.result(answers)
                predictions.append({"task": ids[idx], "result": result,
                                    "score": float(score), "model_version": version})
    for task in pool.unlabeled:
        if task in errors:
            predictions.append({"task": task, "result": [], "score": UNLOADABLE_SCORE,
                                "model_version": version})
    return Plan(version, resolved, predictions, errors)

