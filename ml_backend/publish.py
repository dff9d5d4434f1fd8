"""Putting an order in Label Studio and making its label stream follow it.

A plan's predictions are stored first (`push`), then the project is switched to their version
(`switch`), and the connected backend's title is kept equal to it (otherwise Label Studio treats
every score as NULL). Old prediction versions are deleted afterwards, a slice at a time
(`pruning`).
"""

from __future__ import annotations

from collections.abc import Callable

from ml_backend import orders, ownership
from ml_backend.priorities import Plan
from ml_backend.pruning import prune_versions
from ml_backend.runtime import Runtime
from ml_backend.security import WEBHOOK_PATH, webhook_headers


def push(rt: Runtime, project: int, version: str, predictions: list[dict], *,
         replace: bool = False) -> int:
    """Store `predictions` of our `version` in Label Studio (not yet the order annotators
    follow). The version is recorded as ours first (`ownership.claim`: refused when Label
    Studio holds someone else's of that name).

    `replace` first deletes the predictions already stored under the version (seeding again,
    a rollback, or publishing again a version whose push was cut short).
    """
    ls = rt.labelstudio
    stored = ls.model_versions(project)
    ownership.claim(rt.settings, rt.versions(project), version, stored)
    if replace and version in stored:
        ls.delete_model_version(project, version)
    return ls.import_predictions(project, predictions)


def push_head(rt: Runtime, project: int, plan: Plan, *, replace: bool = False,
              head: int | None = None) -> int:
    """Keep the plan's whole order (`orders`) and push its head, the first `head` (by default
    QUEUE_HEAD)."""
    orders.save(rt.settings, project, plan.version, plan.predictions)
    return push(rt, project, plan.version, plan.predictions[: head or rt.settings.queue_head],
                replace=replace)


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


def live_version(rt: Runtime, project: int) -> str | None:
    """The version Label Studio's label stream follows now (the project's model version)."""
    return getattr(rt.labelstudio.project(project), "model_version", None) or None


def newest_promotable(rt: Runtime, project: int) -> str | None:
    """The version that should serve: the newest promoted one, but none older than a rollback
    (`rollback` serves an older version on purpose); None before any."""
    store = rt.versions(project)
    serving = store.serving()
    since = store.meta(serving).get("rolled_back_at") if serving else None
    for name in reversed(store.names()):
        meta = store.meta(name)
        if since is not None and meta.get("created_at", 0) <= since:
            break
        if (meta.get("promotion") or {}).get("promoted"):
            return name
    return serving


def unpublished(rt: Runtime, project: int, *, unlabelled: bool) -> str | None:
    """The newest promotable version when it is not fully live: not the serving pointer, not
    Label Studio's model version (only while a task is `unlabelled`: Label Studio refuses a
    version without predictions), or not our backend's title. A retrain that failed after
    saving it (during the push, around the switch) leaves it so; its retry and reconcile look.
    """
    target = newest_promotable(rt, project)
    if target is None:
        return None
    store = rt.versions(project)
    name = ownership.name_of(target, store.meta(target))
    if store.serving() != target:
        return target
    if unlabelled and live_version(rt, project) != name:
        return target
    if any(b.get("title") != name for b in our_backends(rt, project, name)):
        return target
    return None


def our_backends(rt: Runtime, project: int, version: str | None = None) -> list[dict]:
    """The project's ML backends that are this one: BACKEND_URL, else a title or model version
    that is one of our Label Studio versions (recorded, or `version`, or the untrained one)."""
    ours = {ownership.untrained_name(rt.settings), *([version] if version else []),
            *ownership.record(rt.settings, rt.versions(project)).names}
    url = rt.settings.backend_url.rstrip("/") if rt.settings.backend_url else None
    return [b for b in rt.labelstudio.ml_backends(project)
            if ((b.get("url") or "").rstrip("/") == url if url else
                (b.get("title") in ours or b.get("model_version") in ours))]


def sync_backend_titles(rt: Runtime, project: int, version: str) -> int:
    """Keep the title of our connected backend equal to the version `/setup` reports."""
    changed = 0
    for backend in our_backends(rt, project, version):
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


