"""Label Studio's queue follows our order: one prediction per unlabelled task, score = priority.

Label Studio's "Uncertainty sampling" serves the unlabelled task whose prediction of the project's
`model_version` has the lowest score, respecting task locks (so two annotators never get the same
task). After every retrain we push, under the new version, one prediction per unlabelled task: its
`result` is the pre-annotation and its `score` the priority from `sampling.rank`. Then the project
is switched to that version, the connected backend's title is kept equal to it (otherwise Label
Studio treats every score as NULL), and old prediction versions are deleted.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ml_backend.label_config import LabelConfig
from ml_backend.pool import Pool
from ml_backend.runtime import Runtime
from ml_backend.security import WEBHOOK_PATH, webhook_headers
from model.head import predict_proba
from model.versions import UNTRAINED, ModelVersion
from sampling import STOCHASTIC_STRATEGIES, rank

log = logging.getLogger(__name__)

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
    version = model.name if model else UNTRAINED
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
            mean = probs.mean(axis=2) if probs is not None and probs.ndim == 3 else probs
            allowed = [i for i, c in enumerate(model.classes) if c in config.classes] if model else []
            for idx, score in zip(ranking.indices.tolist(), ranking.scores.tolist()):
                result = []
                if allowed:
                    best = max(allowed, key=lambda i: mean[idx, i])
                    result = config.result(model.classes[best])
                predictions.append({"task": ids[idx], "result": result,
                                    "score": float(score), "model_version": version})
    for task in pool.unlabeled:
        if task not in vectors:
            predictions.append({"task": task, "result": [], "score": UNLOADABLE_SCORE,
                                "model_version": version})
    return Plan(version, resolved, predictions, errors)


def push(rt: Runtime, project: int, plan: Plan, *, replace: bool = False) -> int:
    """Store the plan's predictions in Label Studio (not yet the order annotators follow).

    `replace` first deletes the predictions already stored under the plan's version (seeding
    again); a retrain always pushes under a new version instead.
    """
    ls = rt.labelstudio
    if replace and plan.version in ls.model_versions(project):
        ls.delete_model_version(project, plan.version)
    return ls.import_predictions(project, plan.predictions)


def switch(rt: Runtime, project: int, version: str, *,
           interrupted: Callable[[], bool] = lambda: False) -> dict:
    """Make the label stream follow `version`'s scores; idempotent, re-asserted every round.
    Then one slice of deleting old versions (see `prune_versions`).

    Label Studio refuses a model version without predictions (all tasks labelled, say): then
    only the backend's title is kept in step.
    """
    stored = rt.labelstudio.model_versions(project)
    if version in stored:
        rt.labelstudio.serve_by_priority(project, version)
    retitled = sync_backend_titles(rt, project, version)
    deleted, pending = prune_versions(rt, project, version, stored, interrupted=interrupted)
    return {"retitled_backends": retitled, "deleted_versions": deleted,
            "prune_pending": pending, "secured_webhooks": secure_webhooks(rt, project)}


def our_backends(rt: Runtime, project: int) -> list[dict]:
    """The project's ML backends that are this one: BACKEND_URL, else a title or model version
    that is one of our version names."""
    ours = {UNTRAINED, *rt.versions(project).names()}
    url = rt.settings.backend_url.rstrip("/") if rt.settings.backend_url else None
    return [b for b in rt.labelstudio.ml_backends(project)
            if ((b.get("url") or "").rstrip("/") == url if url else
                (b.get("title") in ours or b.get("model_version") in ours))]


def sync_backend_titles(rt: Runtime, project: int, version: str) -> int:
    """Keep the title of our connected backend equal to the version `/setup` reports."""
    changed = 0
    for backend in our_backends(rt, project):
        if backend.get("title") != version:
            rt.labelstudio.retitle_backend(backend, version)
            changed += 1
    return changed


def secure_webhooks(rt: Runtime, project: int) -> int:
    """Make the webhook Label Studio created for our /webhook send the credentials it needs
    (WEBHOOK_SECRET, else the basic auth); nothing to do when neither is set."""
    headers = webhook_headers(rt.settings)
    if not headers:
        return 0
    urls = {(b.get("url") or "").rstrip("/") + WEBHOOK_PATH for b in our_backends(rt, project)}
    if rt.settings.backend_url:
        urls.add(rt.settings.backend_url.rstrip("/") + WEBHOOK_PATH)
    return rt.labelstudio.set_webhook_headers(project, urls, headers) if urls else 0


def stale_versions(rt: Runtime, current: str, stored: dict[str, int]) -> list[str]:
    """Prediction versions of ours beyond the newest `KEEP_VERSIONS` (`current` always kept),
    oldest first."""
    keep = rt.settings.keep_versions
    ours = [v for v in stored if v != current and (
        v == UNTRAINED or (v[:1] == "v" and v[1:].isdigit()))]
    ours.sort(key=lambda v: -1 if v == UNTRAINED else int(v[1:]))
    return ours[: max(0, len(ours) - (keep - 1))]


def make_room(rt: Runtime, project: int, new: str) -> list[str]:
    """Before `new` is pushed: delete in full the oldest stale versions beyond KEEP_VERSIONS
    still waiting, so that old versions never pile up.

    Label Studio deletes about 11 predictions a second without blocking annotators (5,000-task
    project, 2 cores); a project that large retraining after every annotation makes them faster
    than that. Then the new order waits for the deletion instead (the old order stays live)."""
    stale = stale_versions(rt, new, rt.labelstudio.model_versions(project))
    backlog = stale[: max(0, len(stale) - rt.settings.keep_versions)]
    for version in backlog:
        log.info("project %s: deleting %s before pushing %s (old versions pile up)",
                 project, version, new)
        rt.labelstudio.delete_model_version(project, version)
    return backlog


def prune_versions(rt: Runtime, project: int, current: str, stored: dict[str, int], *,
                   interrupted: Callable[[], bool] = lambda: False) -> tuple[list[str], bool]:
    """Delete stale versions (`stale_versions`) for at most PRUNE_SLICE_SECONDS, and not a
    prediction more once `interrupted()` (a retrain is waiting); the versions deleted in full,
    and whether any is left (the `prune` job goes on with it).

    Best effort: the new order is already live, so a failed deletion (Label Studio busy or
    down) is logged and left to the next slice instead of failing the job and retraining again.
    """
    until = time.monotonic() + rt.settings.prune_slice_seconds

    def more() -> bool:
        return time.monotonic() < until and not interrupted()

    deleted = []
    for version in stale_versions(rt, current, stored):
        try:
            left = rt.labelstudio.delete_model_version(project, version, more=more)
        except Exception as exc:  # noqa: BLE001 - retried by the next slice
            log.warning("project %s: could not delete predictions of %s (retried later): %s",
                        project, version, exc)
            return deleted, True
        if left:
            return deleted, True
        deleted.append(version)
    return deleted, False
