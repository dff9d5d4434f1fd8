"""A worker's copy of the annotated tasks: read in full once, then only what changed, and in full
again whenever Label Studio's counts say the copy missed something."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from ml_backend.annotation_cache import CURSOR_MARGIN, Counts, read_began, refresh

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


class Server:
    """Label Studio's annotated tasks with their `updated_at`, and what was asked of it."""

    def __init__(self):
        self.tasks: dict[int, tuple[datetime, list[dict]]] = {}
        self.now = T0
        self.asked: list[str] = []

    def annotate(self, task: int, *annotations: dict, bump: bool = True) -> None:
        self.now += timedelta(seconds=10)
        stamp = self.now if bump else self.tasks.get(task, (T0, []))[0]
        self.tasks[task] = (stamp, list(annotations))

    def counts(self) -> Counts:
        every = [a for _, anns in self.tasks.values() for a in anns]
        skipped = sum(a.get("was_cancelled", False) for a in every)
        return Counts(len(every) - skipped, skipped)

    def read_all(self):
        self.asked.append("all")
        return [{"id": t, "annotations": a} for t, (_, a) in self.tasks.items() if a], self.now

    def read_changed(self, since: datetime):
        self.asked.append("changed")
        ids = {t for t, (stamp, a) in self.tasks.items() if stamp > since and a}
        return ids, [{"id": t, "annotations": self.tasks[t][1]} for t in ids], self.now


def labels(kept) -> dict[int, list[int]]:
    return {t: [a["id"] for a in task["annotations"]] for t, task in sorted(kept.tasks.items())}


def test_after_one_full_read_only_changes_are_read():
    ls, kept = Server(), None
    ls.annotate(1, {"id": 10})
    ls.annotate(2, {"id": 20})

    def read():
        return refresh(kept, ls.counts(), 3600, ls.read_all, ls.read_changed)

    kept = read()
    ls.annotate(3, {"id": 30})  # new
    ls.annotate(1, {"id": 11})  # edited (a new one in place of the old)
    ls.annotate(2, {"id": 20}, {"id": 21, "was_cancelled": True})  # skipped by someone else
    kept = read()
    assert labels(kept) == {1: [11], 2: [20, 21], 3: [30]}
    assert ls.asked == ["all", "changed"]


def test_counts_that_disagree_mean_a_full_read():
    """A deletion that left no trace the filter sees (the task has no annotation left, or a bulk
    delete): the copy has more than Label Studio counts, so everything is read again."""
    ls, kept = Server(), None
    ls.annotate(1, {"id": 10})
    ls.annotate(2, {"id": 20})
    kept = refresh(None, ls.counts(), 3600, ls.read_all, ls.read_changed)
    ls.annotate(2)  # its only annotation deleted
    kept = refresh(kept, ls.counts(), 3600, ls.read_all, ls.read_changed)
    assert labels(kept) == {1: [10]}
    assert ls.asked == ["all", "changed", "all"]
    assert kept.how.startswith("full (counts differ")


def test_without_counts_or_when_old_everything_is_read():
    ls = Server()
    ls.annotate(1, {"id": 10})
    kept = refresh(None, ls.counts(), 3600, ls.read_all, ls.read_changed)
    refresh(kept, None, 3600, ls.read_all, ls.read_changed)
    refresh(kept, ls.counts(), 0, ls.read_all, ls.read_changed)
    assert ls.asked == ["all", "all", "all"]


def test_a_cursor_is_label_studios_clock_when_the_request_was_sent():
    began = read_began("Thu, 03 Dec 2026 13:00:10 GMT", 4.0)
    assert began == datetime(2026, 12, 3, 13, 0, 6, tzinfo=timezone.utc) - CURSOR_MARGIN
    assert abs(read_began(None) - (datetime.now(timezone.utc) - CURSOR_MARGIN)).total_seconds() < 5
