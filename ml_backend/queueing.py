"""Putting jobs on the RQ queues: coalescing, retries and GPU routing.

Retrains are coalesced per project: a webhook enqueues a retrain only when none is already waiting
to start, so a burst of annotations while one retrain runs leads to exactly one follow-up. A job
drops its "pending" mark before it reads Label Studio, so any annotation it might miss enqueues the
next one. Jobs are named by path (their functions are in `ml_backend.jobs`), so queueing one
imports nothing of the loop.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from functools import partial

from redis import Redis
from rq import Queue, Retry

from ml_backend.queue_state import ProjectQueue
from ml_backend.settings import Settings

JOBS = {kind: f"ml_backend.jobs.{kind}"
        for kind in ("retrain", "prioritize", "prune", "reconcile", "finetune", "topup")}
# Jobs that embed images (many, on a first retrain or a large import) or fine-tune the backbone.
GPU_JOBS = frozenset({"retrain", "prioritize", "finetune"})


def enqueue(redis: Redis, settings: Settings, kind: str, project: int, reason: str) -> dict:
    """Queue job `kind` (a key of JOBS) for `project` unless one is waiting already."""
    if not ProjectQueue(redis, project).mark_pending(kind, reason, settings.retrain_lock_wait):
        return {"status": "coalesced", "job": kind, "project": project}
    job = Queue(queue_for(settings, kind), connection=redis).enqueue(
        JOBS[kind],
        project,
        reason,
        job_id=job_id(kind, project),
        job_timeout=settings.retrain_lock_ttl,
        retry=retry_policy(settings),
        result_ttl=3600,
        failure_ttl=7 * 86400,
    )
    return {"status": "queued", "job": kind, "project": project, "job_id": job.id}


def job_id(kind: str, project: int) -> str:
    """`<kind>-<project>-<random>`: unique, and it says whose job it is (`job_owner`)."""
    return f"{kind}-{project}-{uuid.uuid4().hex[:8]}"


def job_owner(job_id: str) -> tuple[str, str]:
    """(kind, project) of an id made by `job_id`; the project is "" for other jobs' ids."""
    kind, _, rest = job_id.partition("-")
    return kind, rest.split("-", 1)[0]


def queue_for(settings: Settings, kind: str) -> str:
    """GPU_QUEUE_NAME for GPU_JOBS when it is set, so GPU workers take them; else QUEUE_NAME."""
    return settings.gpu_queue_name if settings.gpu_queue_name and kind in GPU_JOBS \
        else settings.queue_name


def retry_policy(settings: Settings) -> Retry | None:
    """JOB_RETRIES retries, JOB_RETRY_DELAY seconds apart at first and doubling (Label Studio
    down for a while should not cost the annotations' retrain)."""
    if settings.job_retries < 1:
        return None
    return Retry(max=settings.job_retries,
                 interval=[settings.job_retry_delay * 2**i for i in range(settings.job_retries)])


def enqueue_retrain(redis: Redis, settings: Settings, project: int, reason: str) -> dict:
    """Retrain after every `RETRAIN_EVERY` annotation events; START_TRAINING always retrains."""
    if reason != "START_TRAINING" and settings.retrain_every > 1:
        count = ProjectQueue(redis, project).count_annotation()
        if count % settings.retrain_every:
            return {"status": "counted", "job": "retrain", "project": project,
                    "until_retrain": settings.retrain_every - count % settings.retrain_every}
    return enqueue(redis, settings, "retrain", project, reason)


def enqueuer(redis: Redis, settings: Settings) -> Callable[[str, int, str], dict]:
    """`enqueue(kind, project, reason)` on `redis`: a step context's `enqueue_followup`."""
    return partial(enqueue, redis, settings)
