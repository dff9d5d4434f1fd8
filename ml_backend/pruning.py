"""Deleting old prediction versions from Label Studio without blocking annotators."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from ml_backend.runtime import Runtime
from model.versions import UNTRAINED

log = logging.getLogger(__name__)


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
        except Exception as exc:  # noqa: BLE001 - any failure: retried by the next slice
            log.warning("project %s: could not delete predictions of %s (retried later): %s",
                        project, version, exc)
            return deleted, True
        if left:
            return deleted, True
        deleted.append(version)
    return deleted, False
