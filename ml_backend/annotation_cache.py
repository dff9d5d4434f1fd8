"""A worker's copy of a project's annotated tasks, brought up to date by reading what changed.

Reading every annotation costs Label Studio work in proportion to all the labels (about 1.3 ms
per annotated task); a retrain instead asks for the tasks changed since the last read (Label
Studio bumps a task's `updated_at` whenever one of its annotations is created, edited, skipped
or deleted one by one) and keeps the rest. Label Studio stays the source of truth: the copy is
checked against the project's own annotation counts, and read in full again when they disagree
(annotations deleted in bulk, a task deleted, a change that slipped past the cursor) or when the
last full read is older than ANNOTATIONS_FULL_READ_EVERY seconds.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from email.utils import parsedate_to_datetime
from typing import NamedTuple

# Taken off the server time a read began to make its cursor: a change saved just before the read
# may commit after it, and an HTTP Date header counts whole seconds.
CURSOR_MARGIN = timedelta(seconds=5)


class Counts(NamedTuple):
    """A project's annotations as Label Studio counts them: submitted ones and skipped ones."""

    annotations: int
    skipped: int


def read_began(date: str | None, elapsed: float = 0.0) -> datetime:
    """A cursor for a read answered with HTTP Date header `date` `elapsed` seconds after it was
    sent: Label Studio's clock when it was sent, less CURSOR_MARGIN (this machine's clock
    without `date`)."""
    try:
        now = parsedate_to_datetime(date or "")
    except (TypeError, ValueError):
        now = datetime.now(timezone.utc)
    if now.tzinfo is None:  # "-0000": UTC, of unknown origin
        now = now.replace(tzinfo=timezone.utc)
    return now - timedelta(seconds=elapsed) - CURSOR_MARGIN


# Reads the cache is filled by: every annotated task, with the server time the read began.
ReadAll = Callable[[], tuple[list[dict], datetime]]
# The ids of tasks changed after a server time, those of them that have annotations, and the
# server time the read began.
ReadChanged = Callable[[datetime], tuple[set[int], list[dict], datetime]]


@dataclass
class AnnotatedTasks:
    """Annotated tasks (skipped included) by id, complete up to `cursor` (Label Studio's
    clock); `full_at`: the monotonic time of the last full read."""

    tasks: dict[int, dict] = field(default_factory=dict)
    cursor: datetime | None = None
    full_at: float = 0.0
    how: str = ""  # how the last read went: "full", "changed" or why it fell back to "full"

    def counts(self) -> Counts:
        annotations = [a for t in self.tasks.values() for a in t.get("annotations") or []]
        skipped = sum(bool(a.get("was_cancelled")) for a in annotations)
        return Counts(len(annotations) - skipped, skipped)

    def replace(self, changed: set[int], fresh: list[dict], cursor: datetime) -> None:
        """Tasks in `changed` are as in `fresh` now (absent from it: no annotation left)."""
        for tid in changed:
            self.tasks.pop(tid, None)
        for task in fresh:
            if task.get("annotations"):
                self.tasks[int(task["id"])] = task
        self.cursor = cursor


def refresh(kept: AnnotatedTasks | None, counts: Counts | None, max_age: float,
            read_all: ReadAll, read_changed: ReadChanged) -> AnnotatedTasks:
    """`kept` brought up to date with what changed, or read in full: when there is nothing kept,
    no `counts` to check against, the last full read is `max_age` seconds old, or the copy's
    counts differ from Label Studio's `counts` after the changes are read."""
    why = ("nothing kept" if kept is None or kept.cursor is None else
           "no counts to check" if counts is None else
           "periodic" if time.monotonic() - kept.full_at >= max_age else "")
    if not why:
        changed, fresh, cursor = read_changed(kept.cursor)
        kept.replace(changed, fresh, cursor)
        if kept.counts() == counts:
            kept.how = f"changed ({len(changed)} tasks)"
            return kept
        why = f"counts differ: kept {tuple(kept.counts())}, Label Studio {tuple(counts)}"
    started = time.monotonic()
    tasks, cursor = read_all()
    out = AnnotatedTasks(full_at=started, how=f"full ({why})")
    out.replace(set(), tasks, cursor)
    return out
