"""What `/status/{project}` reports: versions with their metrics, the labels Label Studio holds,
and the job queue's state in words a person reads at a glance.

Read-only: it never changes Redis or Label Studio (RQ's registries are read without cleanup).
"""

from __future__ import annotations

import time
import weakref
from datetime import timezone

from redis import Redis
from redis.exceptions import RedisError
from rq import Queue
from rq.job import Job
from rq.registry import StartedJobRegistry

from ml_backend.ownership import name_of
from ml_backend.queue_state import ProjectQueue
from ml_backend.queueing import job_owner
from ml_backend.runtime import Runtime
from ml_backend.settings import Settings
from model.versions import per_question

LABELS_MAX_AGE = 10.0  # seconds a count of Label Studio's labelled tasks is reused
# project -> (monotonic time asked, count or None, error or None), per runtime.
_held: weakref.WeakKeyDictionary[Runtime, dict[int, tuple[float, int | None, str | None]]] = (
    weakref.WeakKeyDictionary())

WAITING_JOBS = {  # pending mark of a job kind -> what it means to a person
    "retrain": "a retrain is queued",
    "prune": "deleting old prediction versions",
    "prioritize": "new tasks are waiting for a priority",
    "finetune": "a backbone fine-tune is queued",
    "topup": "annotators are near the end of the published order: more of it is being pushed",
}


def labels_held(rt: Runtime, project: int) -> tuple[int | None, str | None]:
    """(tasks with a submitted, not skipped annotation in Label Studio, error): its project's
    `num_tasks_with_annotations`, asked at most every LABELS_MAX_AGE seconds so a polled status
    page costs Label Studio little."""
    cache = _held.setdefault(rt, {})
    hit = cache.get(project)
    if hit and time.monotonic() - hit[0] < LABELS_MAX_AGE:
        return hit[1], hit[2]
    try:
        count = getattr(rt.labelstudio.project(project), "num_tasks_with_annotations", None)
        value, error = (int(count) if count is not None else None), None
    except Exception as exc:  # noqa: BLE001 - any failure only means "unknown" on this page
        value, error = None, f"Label Studio unreachable: {type(exc).__name__}: {exc}"[:300]
    cache[project] = (time.monotonic(), value, error)
    return value, error


def _running_job(conn: Redis, queues: list[str], project: int) -> dict | None:
    """Kind and start time of the job of `project` a worker is running, from RQ's registry."""
    for name in queues:
        for job_id in StartedJobRegistry(name, connection=conn).get_job_ids(cleanup=False):
            kind, owner = job_owner(job_id)
            if owner != str(project):
                continue
            job = Job.fetch(job_id, connection=conn)
            started = job.started_at
            since = started.replace(tzinfo=timezone.utc).timestamp() if started else None
            args = job.args or ()
            return {"kind": kind, "since": since, "reason": args[1] if len(args) > 1 else None}
    return None


def _ago(since: float | None) -> str:
    if since is None:
        return ""
    s = max(0, int(time.time() - since))
    return f" since {s} s" if s < 120 else f" since {s // 60} min"


def queue_state(conn: Redis, settings: Settings, project: int) -> dict:
    """The project's jobs: flags for programs, `summary` sentences for people."""
    queues = list(dict.fromkeys(q for q in (settings.queue_name, settings.gpu_queue_name) if q))
    jobs = ProjectQueue(conn, project)
    pending = {kind: jobs.pending_reason(kind) for kind in WAITING_JOBS}
    running = jobs.is_locked()
    counts = {q: Queue(q, connection=conn).count for q in queues}
    job = _running_job(conn, queues, project) if running else None
    doing = jobs.doing() if running else None
    now = f": {doing}" if doing else ""
    summary = []
    if job:
        why = f" ({job['reason']})" if job.get("reason") else ""
        summary.append(f"{job['kind']} running{_ago(job['since'])}{why}{now}")
    elif running:
        summary.append(f"a job holds the project's lock (running){now}")
    for kind, reason in pending.items():
        if reason is not None:
            why = reason if kind == "retrain" else ""
            summary.append(WAITING_JOBS[kind] + (f" ({why})" if why else ""))
    if settings.retrain_every > 1:
        counted = jobs.annotations_counted() % settings.retrain_every
        if counted:
            summary.append(f"{counted} of {settings.retrain_every} annotations counted toward "
                           "the next retrain")
    waiting = sum(counts.values())
    if waiting:
        where = ", ".join(f"{q}: {n}" for q, n in counts.items() if n)
        summary.append(f"{waiting} job{'s' * (waiting != 1)} waiting for a worker ({where}; "
                       "all projects)")
    return {
        "retrain_pending": pending["retrain"] is not None,
        "deleting_old_versions": pending["prune"] is not None,
        "running": running,
        "running_job": job,
        "doing": doing,  # what the running job is doing now, in words
        "queued_jobs": waiting,
        "queued_by_queue": counts,
        "summary": summary or ["idle: nothing running or queued"],
    }


def metrics_note(meta: dict) -> str | None:
    """Why a version has no held-out metrics (None when it has them)."""
    if (meta.get("metrics") or {}).get("n"):
        return None
    if meta.get("imported_from"):
        return "imported with import-model: not evaluated"
    train = meta.get("train") or {}
    min_labels, n = train.get("min_labels"), meta.get("n_labels") or 0
    if min_labels and n < min_labels:
        return (f"not evaluated: below {min_labels} labels every label is used for training "
                "and none is held out")
    return "not evaluated: no labelled task was held out"


def version_entry(name: str, meta: dict, serving: str | None) -> dict:
    return {
        "version": name,
        "label_studio_version": name_of(name, meta),  # the name its predictions have there
        "serving": name == serving,
        "n_labels": meta.get("n_labels"),
        "n_heldout": (meta.get("metrics") or {}).get("n", 0),
        "label_counts": meta.get("label_counts"),  # per question for several questions
        "metrics": meta.get("metrics"),  # per question under "questions" for several
        "questions": meta.get("questions"),  # [{name, classes, multiple, thresholds}]
        "several_questions": per_question(meta),
        "metrics_note": metrics_note(meta),
        "promotion": meta.get("promotion"),
        "created_at": meta.get("created_at"),
        "train_seconds": meta.get("train_seconds"),
        "skipped": meta.get("skipped"),
        "rolled_back_from": meta.get("rolled_back_from"),
    }


def project_status(rt: Runtime, conn: Redis, project: int) -> dict:
    """Everything `/status/{project}` reports; a Redis or Label Studio outage makes its part
    an error message, never the whole answer."""
    store = rt.versions(project)
    serving = store.serving()
    versions = [version_entry(name, store.meta(name), serving) for name in store.names()]
    try:
        queue = queue_state(conn, rt.settings, project)
        history = ProjectQueue(conn, project).history()
    except RedisError as exc:
        queue, history = {"error": f"redis unavailable: {exc}",
                          "summary": [f"job queue unavailable (Redis): {exc}"]}, []
    held, error = labels_held(rt, project)
    return {
        "project": project,
        "serving_version": serving,
        "serving_label_studio_version": next(
            (v["label_studio_version"] for v in versions if v["serving"]), None),
        "versions": versions,
        "labels": held,  # labelled tasks in Label Studio; None when it cannot be asked
        "labels_error": error,
        "labels_trained": versions[-1]["n_labels"] if versions else 0,  # by the newest version
        "labels_serving": next((v["n_labels"] for v in versions if v["serving"]), 0),
        "queue": queue,
        "jobs": history,
    }
