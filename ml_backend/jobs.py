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
from collections.abc import Callable
from functools import lru_cache

import numpy as np
from redis import Redis
from redis.exceptions import LockError
from rq import Queue, Retry, get_current_job

from ml_backend import priorities
from ml_backend.label_config import LabelConfig, parse_label_config
from ml_backend.pool import Pool, build_pool
from ml_backend.runtime import Runtime
from ml_backend.settings import Settings, get_settings
from model.training import train_candidate
from model.versions import UNTRAINED, ModelVersion

log = logging.getLogger(__name__)

HISTORY_LENGTH = 50


def pending_key(project: int, kind: str = "retrain") -> str:
    return f"al:{kind}-pending:{project}"


def lock_key(project: int) -> str:
    """One lock per project: retrains and queue updates never overlap."""
    return f"al:retrain-lock:{project}"


def history_key(project: int) -> str:
    return f"al:history:{project}"


def annotations_key(project: int) -> str:
    return f"al:new-annotations:{project}"


def tasks_changed_key(project: int) -> str:
    """Counts TASKS_CREATED and TASKS_DELETED events: a worker's kept task listing is stale
    once it moves."""
    return f"al:tasks-changed:{project}"


def note_tasks_changed(redis: Redis, project: int) -> None:
    redis.incr(tasks_changed_key(project))


def enqueue(redis: Redis, settings: Settings, kind: str, project: int, reason: str) -> dict:
    """Queue job `kind` (a key of JOBS) for `project` unless one is waiting already."""
    if not redis.set(pending_key(project, kind), reason, nx=True, ex=settings.retrain_lock_wait):
        return {"status": "coalesced", "job": kind, "project": project}
    job = Queue(queue_for(settings, kind), connection=redis).enqueue(
        JOBS[kind],
        project,
        reason,
        job_id=f"{kind}-{project}-{uuid.uuid4().hex[:8]}",
        job_timeout=settings.retrain_lock_ttl,
        retry=retry_policy(settings),
        result_ttl=3600,
        failure_ttl=7 * 86400,
    )
    return {"status": "queued", "job": kind, "project": project, "job_id": job.id}


# Jobs that embed images (many, on a first retrain or a large import) or fine-tune the backbone.
GPU_JOBS = frozenset({"retrain", "prioritize", "finetune"})


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
        count = redis.incr(annotations_key(project))
        if count % settings.retrain_every:
            return {"status": "counted", "job": "retrain", "project": project,
                    "until_retrain": settings.retrain_every - count % settings.retrain_every}
    return enqueue(redis, settings, "retrain", project, reason)


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


def _run_locked(kind: str, project: int, reason: str, work, *, record: bool = True) -> dict:
    """Run `work(runtime, project)` under the project's lock and record it in the job history
    (unless `record` is false: then only a failure is recorded)."""
    job = get_current_job()
    redis: Redis = job.connection
    rt = runtime()
    redis.delete(pending_key(project, kind))  # from now on a new event queues a follow-up
    lock = redis.lock(
        lock_key(project), timeout=rt.settings.retrain_lock_ttl,
        blocking_timeout=rt.settings.retrain_lock_wait,
    )
    if not lock.acquire():
        raise RuntimeError(f"project {project}: another job held the lock too long")
    started = time.time()
    entry = {"job_id": job.id, "kind": kind, "reason": reason, "started_at": started}
    try:
        result = work(rt, project)
        entry |= {"status": "finished", **result}
        return result
    except Exception as exc:
        rt.labelstudio.forget_tasks(project)  # a retry lists every task afresh
        # RQ runs it again while retries are left; only the last attempt is a failure.
        status = "retrying" if (job.retries_left or 0) > 0 else "failed"
        entry |= {"status": status, "error": f"{type(exc).__name__}: {exc}"}
        raise
    finally:
        entry["seconds"] = round(time.time() - started, 3)
        if record or entry["status"] != "finished":
            _record(redis, project, entry)
        try:
            lock.release()
        except LockError:  # it expired; another job may already hold it
            log.warning("project %s: lock expired before the %s job ended", project, kind)


def retrain(project: int, reason: str = "") -> dict:
    """RQ job: read the project's labels from Label Studio, train, store a version, reorder."""
    force = reason in FORCED
    return _run_locked("retrain", project, reason, lambda rt, p: _retrain(rt, p, force=force))


def prioritize(project: int, reason: str = "") -> dict:
    """RQ job: give tasks that have no prediction of the serving version a priority."""
    return _run_locked("prioritize", project, reason, _prioritize)


def prune(project: int, reason: str = "") -> dict:
    """RQ job: delete old prediction versions for one slice (PRUNE_SLICE_SECONDS), then queue
    itself again while any is left, so retrains queued meanwhile go first. Slices are recorded
    in the job history only when they fail."""

    def work(rt: Runtime, project: int) -> dict:
        stored = rt.labelstudio.model_versions(project)
        deleted, pending = priorities.prune_versions(rt, project, rt.serving_version(project),
                                                     stored, interrupted=retrain_waiting(project))
        result = {"deleted_versions": deleted, "prune_pending": pending}
        _continue_pruning(rt, project, result)
        return result

    return _run_locked("prune", project, reason, work, record=False)


# reconcile.py imports this module, so its job is named by path.
JOBS = {"retrain": retrain, "prioritize": prioritize, "prune": prune,
        "reconcile": "ml_backend.reconcile.reconcile",
        "finetune": "ml_backend.jobs.finetune"}  # defined below _retrain, which it calls
# Reasons that retrain even when the labels are those of the newest version.
FORCED = {"START_TRAINING"}


def read_pool(rt: Runtime, project: int, tasks: list[dict] | None = None
              ) -> tuple[LabelConfig, Pool]:
    """The project's label config and pool as Label Studio has them now (from `tasks` when the
    caller already listed them), with the annotation filters every job applies alike.

    Inside a job the listing of every task is kept between jobs while the project's task count
    and its task events (`tasks_changed_key`) stay the same: see `labelling_tasks`."""
    info = rt.labelstudio.project(project)
    config = parse_label_config(info.label_config or "")
    if tasks is None:
        job = get_current_job()
        token = None if job is None else (
            info.task_number, job.connection.get(tasks_changed_key(project)))
        tasks = rt.labelstudio.labelling_tasks(project, token=token)
    pool = build_pool(tasks, config,
                      annotators=frozenset(rt.settings.annotators),
                      ground_truth_only=rt.settings.ground_truth_only)
    return config, pool


def trained_digest(rt: Runtime, project: int) -> str | None:
    """`Pool.digest` of the labels the newest version (promoted or not) was trained on."""
    store = rt.versions(project)
    names = store.names()
    return store.meta(names[-1]).get("labels_digest") if names else None


def _retrain(rt: Runtime, project: int, *, force: bool = True) -> dict:
    """Train a version on Label Studio's labels; unless `force`, only if they changed.

    Duplicate, late or replayed webhooks (and reconciliation) then never train the same labels
    twice.
    """
    config, pool = read_pool(rt, project)
    digest = pool.digest(config.classes)
    if not force and pool.labels and digest == trained_digest(rt, project):
        log.info("project %s: labels unchanged since the newest version, no retrain", project)
        return {"version": None, "unchanged": True, "n_labels": len(pool.labels)}
    if not pool.labels:
        log.info("project %s: no usable labels yet (%s)", project, dict(pool.skipped))
        return {"version": None, "n_labels": 0, "skipped": dict(pool.skipped)}
    bb, serving = rt.backbone_for(project), rt.serving_model(project)
    vectors, errors = rt.embed(project, {t: pool.urls[t] for t in pool.labels}, backbone=bb)
    for task, err in errors.items():
        log.warning("project %s task %s left out of training: %s", project, task, err)
    tasks = [t for t in pool.labels if t in vectors]
    if not tasks:
        raise RuntimeError(f"project {project}: no labelled image could be loaded")
    candidate = train_candidate(
        np.stack([vectors[t] for t in tasks]), [pool.labels[t] for t in tasks], tasks,
        list(config.classes), marks=[pool.data[t].get(rt.settings.split_field) for t in tasks],
        fingerprint=bb.fingerprint, serving=serving, config=rt.settings.train_config(),
        serving_x=_serving_x(rt, project, serving, bb, {t: pool.urls[t] for t in tasks}),
    )
    meta = candidate.meta | {
        "project": project,
        "labels_digest": digest,
        **rt.backbone_meta(bb),
        "skipped": dict(pool.skipped) | ({"image errors": len(errors)} if errors else {}),
    }
    versions = rt.versions(project)
    name = versions.save(candidate.head, meta, candidate.tasks)
    _maybe_finetune(rt, project, len(tasks))
    if not meta["promotion"]["promoted"]:
        log.warning("project %s: %s is not promoted: %s", project, name,
                    meta["promotion"]["reason"])
        return {"version": name, "promoted": False, "n_labels": len(tasks),
                "metrics": meta["metrics"], "promotion": meta["promotion"]}
    # Predictions first, then the pointer /setup reads, then the switch: Label Studio never
    # asks /predict for a version whose priorities are not in place yet.
    made_room = priorities.make_room(rt, project, name)
    queue = push_order(rt, project, pool, config, versions.load(name))
    queue["made_room"] = made_room
    versions.promote(name)
    queue |= priorities.switch(rt, project, name, interrupted=retrain_waiting(project))
    _continue_pruning(rt, project, queue)
    log.info("project %s: trained %s on %d labels, serving it", project, name, len(tasks))
    return {"version": name, "n_labels": len(tasks), "metrics": meta["metrics"], "queue": queue}


def retrain_waiting(project: int) -> Callable[[], bool]:
    """A check that a retrain of `project` is queued (never, outside a job): deleting old
    versions gives way to it at once."""
    job = get_current_job()
    if job is None:
        return lambda: False
    return lambda: bool(job.connection.exists(pending_key(project)))


def _continue_pruning(rt: Runtime, project: int, queue: dict) -> None:
    """Queue a `prune` job when old versions are left to delete (only from a job)."""
    job = get_current_job()
    if queue.get("prune_pending") and job is not None:
        enqueue(job.connection, rt.settings, "prune", project, "old versions left")


def _serving_x(rt: Runtime, project: int, serving, bb, urls: dict[int, str]) -> np.ndarray | None:
    """The serving version's own embeddings of `urls` when it was trained on another backbone
    than the candidate's `bb` (fine-tuning), so each is judged on its own; None otherwise."""
    if serving is None or serving.meta.get("backbone_fingerprint") == bb.fingerprint:
        return None
    old = rt.backbone_of(serving.meta)
    if old.fingerprint != serving.meta.get("backbone_fingerprint"):
        return None  # its backbone is configured no more: it cannot be judged
    vectors, _ = rt.embed(project, urls, backbone=old)
    return np.stack([vectors[t] for t in urls]) if all(t in vectors for t in urls) else None


def _maybe_finetune(rt: Runtime, project: int, n_labels: int) -> None:
    """Queue a backbone fine-tune every FINETUNE_EVERY labels (0: never); only from a job."""
    every, job = rt.settings.finetune_every, get_current_job()
    if not every or job is None or job.id.startswith("finetune"):
        return
    key = f"al:finetuned-at:{project}"
    if n_labels - int(job.connection.get(key) or 0) >= every:
        job.connection.set(key, n_labels)
        enqueue(job.connection, rt.settings, "finetune", project, f"{n_labels} labels")


def finetune(project: int, reason: str = "") -> dict:
    """RQ job: fine-tune the project's backbone on its labels, then train a version on it
    (promoted by the usual rule, judged against the serving version on its own embeddings)."""

    def work(rt: Runtime, project: int) -> dict:
        from ml_backend.model_commands import finetune_backbone

        tuned = finetune_backbone(rt, project, rt.settings.finetune_config())
        with rt.candidate_backbone(project, tuned):
            return _retrain(rt, project)

    return _run_locked("finetune", project, reason, work)


def push_order(rt: Runtime, project: int, pool: Pool, config: LabelConfig,
               model: ModelVersion | None, *, replace: bool = False,
               strategy: str | None = None, k: int | None = None) -> dict:
    """Rank the unlabelled tasks with `model` and push one prediction each (what a retrain and
    a rollback do before switching the queue); a summary for the job history."""
    start = time.perf_counter()
    plan = priorities.plan_order(
        rt, project, pool, config, model, strategy=strategy or rt.settings.strategy,
        k=k or rt.settings.queue_batch,
    )
    pushed = priorities.push(rt, project, plan, replace=replace)
    return {"pushed": pushed, "strategy": plan.strategy, "image_errors": len(plan.errors),
            "order_seconds": round(time.perf_counter() - start, 3)}


def _prioritize(rt: Runtime, project: int) -> dict:
    """New tasks get a priority under the serving version, so they are not starved."""
    config, pool = read_pool(rt, project)
    model = rt.serving_model(project)
    version = model.name if model else UNTRAINED
    if model is None and version not in rt.labelstudio.model_versions(project):
        return {"pushed": 0, "version": version}  # neither a model nor a seeded order yet
    lacking = rt.labelstudio.tasks_lacking(project, version)
    missing = [t for t in pool.unlabeled if t in lacking]
    if not missing:
        return {"pushed": 0, "version": version}
    plan = priorities.plan_order(rt, project, pool, config, model,
                                 strategy=rt.settings.strategy, k=rt.settings.queue_batch)
    wanted = set(missing)
    plan.predictions = [p for p in plan.predictions if p["task"] in wanted]
    pushed = priorities.push(rt, project, plan)
    return {"pushed": pushed, "version": version, "strategy": plan.strategy}
