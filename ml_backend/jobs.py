"""RQ's entry points, the only code that knows it runs inside an RQ job.

Each job builds its step context once from the current job and runs one loop step (`steps`) in
three phases: prepare (drop the job's pending mark, so any event from now on queues a follow-up;
take the project's lock), perform, record (the job history the status page shows). The lock,
with a timeout, keeps two workers from working on one project at once and expires on its own
when a worker dies mid-job.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import replace

from rq import get_current_job
from rq.job import Job

from ml_backend import finetuning, reconcile as reconciliation, steps
from ml_backend.queue_state import ProjectQueue
from ml_backend.queueing import enqueuer
from ml_backend.runtime import Runtime
from ml_backend.settings import get_settings
from ml_backend.steps import StepContext

log = logging.getLogger(__name__)

# Reasons that retrain even when the labels are those of the newest version.
FORCED = {"START_TRAINING"}

_runtime: Runtime | None = None


def runtime() -> Runtime:
    """The worker process's runtime: the backbone and caches stay warm between jobs."""
    global _runtime
    if _runtime is None:
        _runtime = Runtime(get_settings())
    return _runtime


def use_runtime(rt: Runtime | None) -> None:
    """Make `rt` the runtime jobs of this process (and of workers it forks) use; None: the
    default one, made from the settings when next needed."""
    global _runtime
    _runtime = rt


def job_context(job: Job, kind: str, project: int, rt: Runtime) -> StepContext:
    """A step's context inside a job: the job's Redis connection, a stop check that is true
    while a retrain of the project waits, and follow-ups queued on the job's Redis."""
    redis = job.connection
    state = ProjectQueue(redis, project)
    return StepContext(
        redis=redis, kind=kind,
        should_stop=lambda: state.is_pending("retrain"),
        enqueue_followup=enqueuer(redis, rt.settings),
        note=lambda what: state.note_doing(what, rt.settings.retrain_lock_ttl),
    )


Step = Callable[[Runtime, int, StepContext], dict]


def run(kind: str, project: int, reason: str, step: Step, *, record: bool = True) -> dict:
    """Run `step` under the project's lock and record it in the job history (unless `record` is
    false: then only a failure is recorded)."""
    job, rt = get_current_job(), runtime()
    state = ProjectQueue(job.connection, project)
    state.clear_pending(kind)  # from now on a new event queues a follow-up
    s = rt.settings
    with state.locked(s.retrain_lock_ttl, s.retrain_lock_wait, f"{kind} job"):
        entry = {"job_id": job.id, "kind": kind, "reason": reason, "started_at": time.time()}
        try:
            result = step(rt, project, job_context(job, kind, project, rt))
            entry |= {"status": "finished", **result}
            return result
        except Exception as exc:
            rt.labelstudio.forget_tasks(project)  # a retry lists every task afresh
            # RQ runs it again while retries are left; only the last attempt is a failure.
            status = "retrying" if (job.retries_left or 0) > 0 else "failed"
            entry |= {"status": status, "error": f"{type(exc).__name__}: {exc}"}
            raise
        finally:
            state.done()
            entry["seconds"] = round(time.time() - entry["started_at"], 3)
            if record or entry["status"] != "finished":
                state.record(entry)
            log.info("project %s: %s job (%s) %s in %.2f s", project, kind, reason or "-",
                     entry["status"], entry["seconds"])


def retrain(project: int, reason: str = "") -> dict:
    """RQ job: read the project's labels from Label Studio, train, store a version, reorder."""
    force = reason in FORCED
    return run("retrain", project, reason,
               lambda rt, p, ctx: steps.retrain(rt, p, ctx, force=force))


def prioritize(project: int, reason: str = "") -> dict:
    """RQ job: give tasks that have no prediction of the serving version a priority."""
    return run("prioritize", project, reason, steps.prioritize)


def prune(project: int, reason: str = "") -> dict:
    """RQ job: delete old prediction versions for one slice (PRUNE_SLICE_SECONDS), then queue
    itself again while any is left. Slices are recorded in the job history only when they
    fail."""
    return run("prune", project, reason, steps.prune, record=False)


def topup(project: int, reason: str = "") -> dict:
    """RQ job: push the next slice of the serving version's order (the head runs low)."""
    return run("topup", project, reason, steps.topup)


def finetune(project: int, reason: str = "") -> dict:
    """RQ job: fine-tune the project's backbone on its labels, then train a version on it."""
    return run("finetune", project, reason,
               lambda rt, p, ctx: finetuning.finetune(rt, p, ctx)[1])


def reconcile(project: int, reason: str = "") -> dict:
    """RQ job: `reconcile.check` one project (no lock: it only reads and queues)."""
    job, rt = get_current_job(), runtime()
    ProjectQueue(job.connection, project).clear_pending("reconcile")
    # It holds no lock: what it reads must not replace what the running job says it is doing.
    ctx = replace(job_context(job, "reconcile", project, rt), note=StepContext().note)
    out = reconciliation.check(rt, project, ctx)
    log.info("project %s: %s", project, out)
    return out
