"""Bring every project back in step with Label Studio after anything was missed.

Label Studio does not resend a webhook, so an annotation whose webhook found Redis down (503), a
retrain lost with a killed worker or a Redis restart, or a webhook refused before its secret
header was set would otherwise never be trained on. Label Studio is the source of truth: a check
compares the labels a retrain would read now with the labels the newest version was trained on
(`Pool.digest`, kept in its meta) and queues a retrain where they differ, or where the newest
promotable version is not live (a retrain failed after saving it: the retrain then finds the
labels unchanged and publishes that version). The retrain itself skips training when the labels
turn out unchanged, so a check that races a running retrain costs one read.

Every worker queues a check of each known project (one with a folder under MODEL_DIR: trained,
or seen by /setup or by a webhook that could not be queued) when it starts and then every
RECONCILE_INTERVAL seconds; `python -m ml_backend reconcile` runs the check at once.
"""

from __future__ import annotations

import logging
import threading

from redis import Redis
from redis.exceptions import RedisError

from ml_backend.publish import live_version, secure_webhooks, unpublished
from ml_backend.pruning import stale_versions
from ml_backend.queueing import enqueue
from ml_backend.runtime import Runtime
from ml_backend.settings import Settings
from ml_backend.steps import StepContext, read_pool, trained_digest
from model.versions import projects

log = logging.getLogger(__name__)

REASON = "RECONCILE"


def check(rt: Runtime, project: int, ctx: StepContext) -> dict:
    """Secure the project's webhook; queue the deletion of old prediction versions left over
    (by `seed` or `rollback`, say); queue a retrain if its labels changed since the last one.
    Jobs are queued through `ctx.enqueue_followup`."""
    secured = secure_webhooks(rt, project)
    config, pool = read_pool(rt, project, ctx)
    out = {"project": project, "labels": len(pool.labels), "webhooks_secured": secured}
    stored = rt.labelstudio.model_versions(project)
    if stale_versions(rt, project, rt.serving_version(project), stored,
                      live=live_version(rt, project)):
        out["prune"] = ctx.enqueue_followup("prune", project, REASON)["status"]
    if not pool.labels:
        return out | {"status": "in step"}
    if pool.digest(config) == trained_digest(rt, project):
        pending = unpublished(rt, project, unlabelled=bool(pool.unlabeled))
        if pending is None:
            return out | {"status": "in step"}
        out["unpublished"] = pending  # the retrain finds the labels unchanged and publishes it
    return out | ctx.enqueue_followup("retrain", project, REASON)


def every_interval(settings: Settings, stop: threading.Event) -> None:
    """Worker thread: queue a check of every known project now, then every RECONCILE_INTERVAL s.

    Checks are coalesced per project, so several workers doing this queue one check each time.
    """
    redis = Redis.from_url(settings.redis_url, socket_timeout=5, socket_connect_timeout=5)
    while True:
        try:
            for project in projects(settings.model_dir):
                enqueue(redis, settings, "reconcile", project, "periodic")
        except RedisError as exc:
            log.warning("cannot queue reconciliation (retried in %s s): %s",
                        settings.reconcile_interval, exc)
        if stop.wait(settings.reconcile_interval):
            return


def start(settings: Settings) -> threading.Event | None:
    """Start `every_interval` in a daemon thread (unless RECONCILE_INTERVAL is 0); set the
    returned event to stop it."""
    if settings.reconcile_interval <= 0:
        return None
    stop = threading.Event()
    threading.Thread(target=every_interval, args=(settings, stop), name="reconcile",
                     daemon=True).start()
    return stop
