"""Putting an order in Label Studio and making its label stream follow it.

A plan's predictions are stored first (`push`), then the project is switched to their version
(`switch`), and the connected backend's title is kept equal to it (otherwise Label Studio treats
every score as NULL). Old prediction versions are deleted afterwards, a slice at a time
(`pruning`).
"""

from __future__ import annotations

from collections.abc import Callable

from ml_backend.priorities import Plan
from ml_backend.pruning import prune_versions
from ml_backend.runtime import Runtime
from ml_backend.security import WEBHOOK_PATH, webhook_headers
from model.versions import UNTRAINED


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


