"""Deleting old prediction versions from Label Studio without blocking annotators.

Only versions this backend recorded as its own (`ownership`) are ever deleted: a user's imported
pre-annotations and other backends' predictions stay, whatever they are named. Each version holds
the head of its order (QUEUE_HEAD predictions, plus top-ups and on-demand predictions), so
deleting one costs about QUEUE_HEAD requests, whatever the project's size.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from ml_backend import orders, ownership
from ml_backend.runtime import Runtime

log = logging.getLogger(__name__)


# Stale versions make_room leaves for the pruning slices after a switch (so that a retrain in a
# quiet project never waits for a deletion); beyond it, the push waits.
ROOM_SLACK = 1


def stale_versions(rt: Runtime, project: int, current: str, stored: dict[str, int], *,
                   live: str | None = None, new: str | None = None) -> list[str]:
    """Our versions stored in Label Studio beyond the newest `KEEP_VERSIONS`, oldest first;
    never `current` (the serving pointer), `live` (what Label Studio serves: the same, unless
    a switch failed) or `new` (about to be pushed, counted as the newest).

    Versions pushed after the serving one by retrains that failed before their switch count
    among the newest like any other: each failed retrain would otherwise leave a whole head
    behind. Losing one costs nothing lasting: a retry publishes its version in full again
    (`replace`). So whatever the faults, Label Studio holds at most KEEP_VERSIONS of ours plus
    the serving and the live one once the stale ones are deleted."""
    names = ownership.record(rt.settings, rt.versions(project)).names
    ours = [v for v in names if v in stored and v != new] + ([new] if new else [])
    newest = set(ours[-rt.settings.keep_versions:])
    kept = {current, live, new} | newest
    return [v for v in ours if v not in kept]


def forget(rt: Runtime, project: int, versions: list[str]) -> None:
    """Versions deleted in full: out of the record, their kept orders gone."""
    if versions:
        ownership.record(rt.settings, rt.versions(project)).discard(versions)
        orders.remove(rt.settings, project, versions)


def make_room(rt: Runtime, project: int, new: str, *, live: str | None = None) -> list[str]:
    """Before `new` is pushed: delete in full the oldest stale versions (`stale_versions`, the
    serving and the `live` one kept) beyond ROOM_SLACK, so that versions never pile up: after
    the push Label Studio holds at most KEEP_VERSIONS + ROOM_SLACK + 2 of ours, however many
    retrains failed or pruning slices gave way to retrains before.

    Label Studio deletes about 11 predictions a second without blocking annotators (5,000-task
    project, 2 cores); a project retraining faster than its old heads are deleted then waits
    for the deletion here instead (the old order stays live)."""
    stale = stale_versions(rt, project, rt.serving_version(project),
                           rt.labelstudio.model_versions(project), live=live, new=new)
    backlog = stale[: max(0, len(stale) - ROOM_SLACK)]
    for version in backlog:
        log.info("project %s: deleting %s before pushing %s (old versions pile up)",
                 project, version, new)
        rt.labelstudio.delete_model_version(project, version)
        forget(rt, project, [version])
    return backlog


def prune_versions(rt: Runtime, project: int, current: str, stored: dict[str, int], *,
                   interrupted: Callable[[], bool] = lambda: False,
                   live: str | None = None) -> tuple[list[str], bool]:
    """Delete stale versions (`stale_versions`) for at most PRUNE_SLICE_SECONDS, and not a
    prediction more once `interrupted()` (a retrain is waiting); the versions deleted in full,
    and whether any is left (the `prune` job goes on with it).

    Best effort: the new order is already live, so a failed deletion (Label Studio busy or
    down) is logged and left to the next slice instead of failing the job and retraining again.
    """
    until = time.monotonic() + rt.settings.prune_slice_seconds

    def more() -> bool:
        return time.monotonic() < until and not interrupted()

    deleted: list[str] = []
    for version in stale_versions(rt, project, current, stored, live=live):
        try:
            left = rt.labelstudio.delete_model_version(project, version, more=more)
        except Exception as exc:  # noqa: BLE001 - any failure: retried by the next slice
            log.warning("project %s: could not delete predictions of %s (retried later): %s",
                        project, version, exc)
            forget(rt, project, deleted)
            return deleted, True
        if left:
            forget(rt, project, deleted)
            return deleted, True
        deleted.append(version)
    forget(rt, project, deleted)
    return deleted, False
