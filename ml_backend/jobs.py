"""Background jobs (RQ) and how they are enqueued.

Retrains are coalesced per project: a webhook enqueues a retrain only when none is already waiting
to start, so a burst of annotations while one retrain runs leads to exactly one follow-up. A job
drops its "pending" mark before it reads Label Studio, so any annotation it might miss enqueues the
next one. A Redis lock with a timeout keeps two workers from training the same project at once,
and expires on its own when a worker dies mid-job.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from functools import lru_cache

import numpy as np
from redis import Redis
from redis.exceptions import LockError
from rq import Queue, Retry, get_current_job

from ml_backend.label_config import parse_label_config
from ml_backend.pool import build_pool
from ml_backend.runtime import Runtime
from ml_backend.settings import Settings, get_settings
from model.training import fit, holdout_mask

log = logging.getLogger(__name__)

HISTORY_LENGTH = 50


def pending_key(project: int) -> str:
    return f"al:retrain-pending:{project}"


def lock_key(project: int) -> str:
    return f"al:retrain-lock:{project}"


def history_key(project: int) -> str:
    return f"al:history:{project}"


def enqueue_retrain(redis: Redis, settings: Settings, project: int, reason: str) -> dict:
    """Queue a retrain of `project` unless one is already waiting to start."""
    if not redis.set(pending_key(project), reason, nx=True, ex=settings.retrain_lock_wait):
        return {"status": "coalesced", "project": project}
    queue = Queue(settings.queue_name, connection=redis)
    job = queue.enqueue(
        retrain,
        project,
        reason,
        job_id=f"retrain-{project}-{uuid.uuid4().hex[:8]}",
        job_timeout=settings.retrain_lock_ttl,
        retry=Retry(max=3, interval=[10, 30, 60]),
        result_ttl=3600,
        failure_ttl=7 * 86400,
    )
    return {"status": "queued", "project": project, "job_id": job.id}


def job_history(redis: Redis, project: int) -> list[dict]:
    return [json.loads(item) for item in redis.lrange(history_key(project), 0, -1)]


def _record(redis: Redis, project: int, entry: dict) -> None:
    pipe = redis.pipeline()
    pipe.lpush(history_key(project), json.dumps(entry))
    pipe.ltrim(history_key(project), 0, HISTORY_LENGTH - 1)
    pipe.execute()


@lru_cache
def runtime() -> Runtime:
    """The worker process's runtime: the backbone and caches stay warm between jobs."""
    return Runtime(get_settings())


def retrain(project: int, reason: str = "") -> dict:
    """RQ job: read the project's labels from Label Studio, train, and store a new version."""
    job = get_current_job()
    redis: Redis = job.connection
    rt = runtime()
    redis.delete(pending_key(project))
    lock = redis.lock(
        lock_key(project), timeout=rt.settings.retrain_lock_ttl,
        blocking_timeout=rt.settings.retrain_lock_wait,
    )
    if not lock.acquire():
        raise RuntimeError(f"project {project}: another retrain held the lock too long")
    started = time.time()
    entry = {"job_id": job.id, "kind": "retrain", "reason": reason, "started_at": started}
    try:
        result = _retrain(rt, project)
        entry |= {"status": "finished", **result}
        return result
    except Exception as exc:
        entry |= {"status": "failed", "error": f"{type(exc).__name__}: {exc}"}
        raise
    finally:
        entry["seconds"] = round(time.time() - started, 3)
        _record(redis, project, entry)
        try:
            lock.release()
        except LockError:  # it expired; another retrain may already hold it
            log.warning("project %s: retrain lock expired before the job ended", project)


def _retrain(rt: Runtime, project: int) -> dict:
    ls = rt.labelstudio
    config = parse_label_config(ls.label_config(project))
    pool = build_pool(ls.tasks(project, only_annotated=True), config)
    if not pool.labels:
        log.info("project %s: no usable labels yet (%s)", project, dict(pool.skipped))
        return {"version": None, "n_labels": 0, "skipped": dict(pool.skipped)}
    vectors, errors = rt.embed(project, {t: pool.urls[t] for t in pool.labels})
    for task, err in errors.items():
        log.warning("project %s task %s left out of training: %s", project, task, err)
    tasks = [t for t in pool.labels if t in vectors]
    if not tasks:
        raise RuntimeError(f"project {project}: no labelled image could be loaded")
    classes = list(config.classes)
    x = np.stack([vectors[t] for t in tasks])
    y = np.array([classes.index(pool.labels[t]) for t in tasks])
    heldout = holdout_mask(len(tasks), 0.2, rt.settings.seed)
    head, meta = fit(x, y, classes, heldout=heldout, seed=rt.settings.seed)
    meta |= {
        "project": project,
        "backbone": rt.backbone.name,
        "backbone_fingerprint": rt.backbone.fingerprint,
        "skipped": dict(pool.skipped) | ({"image errors": len(errors)} if errors else {}),
        "heldout_tasks": [t for t, h in zip(tasks, heldout) if h],
    }
    versions = rt.versions(project)
    name = versions.save(head, meta)
    versions.promote(name)
    log.info("project %s: trained %s on %d labels, serving it", project, name, len(tasks))
    return {"version": name, "n_labels": len(tasks), "metrics": meta["metrics"]}
