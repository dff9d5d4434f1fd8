"""A project's job bookkeeping in Redis. `ProjectQueue` is the only code that names its keys.

Per project: a "pending" mark per job kind (set when a job is queued, dropped when it starts, so
webhooks meanwhile queue exactly one follow-up), the lock that keeps two jobs of a project from
overlapping, the job history the status page shows, and the counters webhooks move.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from redis import Redis
from redis.exceptions import LockError

log = logging.getLogger(__name__)

HISTORY_LENGTH = 50


class LockTimeout(RuntimeError):
    """Another job of the project held its lock longer than RETRAIN_LOCK_WAIT seconds."""


@dataclass(frozen=True)
class ProjectQueue:
    redis: Redis
    project: int

    # -- key schema -------------------------------------------------------------------------
    def pending_key(self, kind: str = "retrain") -> str:
        return f"al:{kind}-pending:{self.project}"

    @property
    def lock_key(self) -> str:
        """One lock per project: retrains and queue updates never overlap."""
        return f"al:retrain-lock:{self.project}"

    @property
    def history_key(self) -> str:
        return f"al:history:{self.project}"

    @property
    def annotations_key(self) -> str:
        return f"al:new-annotations:{self.project}"

    @property
    def tasks_changed_key(self) -> str:
        """Counts TASKS_CREATED and TASKS_DELETED events: a worker's kept task listing is stale
        once it moves."""
        return f"al:tasks-changed:{self.project}"

    @property
    def doing_key(self) -> str:
        """What the running job of the project is doing now, in words (see `note_doing`)."""
        return f"al:doing:{self.project}"

    @property
    def finetuned_at_key(self) -> str:
        return f"al:finetuned-at:{self.project}"

    @property
    def head_key(self) -> str:
        """The head of the order in Label Studio: its version, how far into the order it was
        pushed, and about how many of its tasks are still unlabelled."""
        return f"al:head:{self.project}"

    # -- pending marks and counters ---------------------------------------------------------
    def mark_pending(self, kind: str, reason: str, ttl: int) -> bool:
        """Mark a job of `kind` as waiting to start; False when one is already."""
        return bool(self.redis.set(self.pending_key(kind), reason, nx=True, ex=ttl))

    def clear_pending(self, kind: str) -> None:
        self.redis.delete(self.pending_key(kind))

    def is_pending(self, kind: str = "retrain") -> bool:
        return bool(self.redis.exists(self.pending_key(kind)))

    def pending_reason(self, kind: str = "retrain") -> str | None:
        """Why a job of `kind` was queued (the event's name), or None when none waits."""
        reason = self.redis.get(self.pending_key(kind))
        return None if reason is None else reason.decode(errors="replace")

    def is_locked(self) -> bool:
        """Whether a job of the project is running (holds its lock)."""
        return bool(self.redis.exists(self.lock_key))

    def annotations_counted(self) -> int:
        return int(self.redis.get(self.annotations_key) or 0)

    def count_annotation(self) -> int:
        return int(self.redis.incr(self.annotations_key))

    def note_tasks_changed(self) -> None:
        self.redis.incr(self.tasks_changed_key)

    def tasks_changed(self) -> bytes | None:
        return self.redis.get(self.tasks_changed_key)

    def note_doing(self, what: str, ttl: int) -> None:
        """Say what the running job is doing now; forgotten after `ttl` s should it die."""
        self.redis.set(self.doing_key, what, ex=ttl)

    def doing(self) -> str | None:
        what = self.redis.get(self.doing_key)
        return None if what is None else what.decode(errors="replace")

    def done(self) -> None:
        self.redis.delete(self.doing_key)

    def finetuned_at(self) -> int:
        """The number of labels the last fine-tune was queued at."""
        return int(self.redis.get(self.finetuned_at_key) or 0)

    def set_finetuned_at(self, n_labels: int) -> None:
        self.redis.set(self.finetuned_at_key, n_labels)

    def set_head(self, version: str, pushed: int, left: int, *, complete: bool = False) -> None:
        self.redis.hset(self.head_key, mapping={"version": version, "pushed": pushed,
                                                "left": left, "complete": int(complete)})

    def head_complete(self, version: str) -> None:
        """The whole order of `version` is in Label Studio (or it has none): nothing to top up.
        Kept as a record, unlike a head lost with Redis's data, which a top-up rebuilds."""
        self.set_head(version, 0, 0, complete=True)

    def head(self) -> dict | None:
        """{"version", "pushed", "left", "complete"} of the published head; None when not known
        (Redis was emptied, or nothing was published yet: a top-up rebuilds it)."""
        raw = self.redis.hgetall(self.head_key)
        if not raw:
            return None
        got = {k.decode(): v.decode() for k, v in raw.items()}
        return {"version": got.get("version", ""), "pushed": int(got.get("pushed", 0)),
                "left": int(got.get("left", 0)), "complete": got.get("complete") == "1"}

    def take_from_head(self) -> int | None:
        """An annotation took a task of the head: its tasks left, about; None when the whole
        order is in Label Studio or the head is not known."""
        head = self.head()
        if head is None or head["complete"]:
            return None
        return int(self.redis.hincrby(self.head_key, "left", -1))

    # -- history -----------------------------------------------------------------------------
    def history(self) -> list[dict]:
        """The newest jobs first."""
        return [json.loads(item) for item in self.redis.lrange(self.history_key, 0, -1)]

    def record(self, entry: dict) -> None:
        pipe = self.redis.pipeline()
        pipe.lpush(self.history_key, json.dumps(entry))
        pipe.ltrim(self.history_key, 0, HISTORY_LENGTH - 1)
        pipe.execute()

    # -- the lock ----------------------------------------------------------------------------
    @contextmanager
    def locked(self, ttl: int, wait: int, what: str = "job") -> Iterator[None]:
        """Hold the project's lock (expiring after `ttl` s, should its holder die), waiting up
        to `wait` s for it."""
        lock = self.redis.lock(self.lock_key, timeout=ttl, blocking_timeout=wait)
        if not lock.acquire(blocking=False):
            log.info("project %s: waiting for the running job before the %s (at most %s s)",
                     self.project, what, wait)
            if not lock.acquire():
                raise LockTimeout(
                    f"project {self.project}: another job held the lock longer than "
                    f"{wait} s; try again later, or raise RETRAIN_LOCK_WAIT")
        try:
            yield
        finally:
            try:
                lock.release()
            except LockError:  # it expired; another job may already hold it
                log.warning("project %s: lock expired before the %s ended (raise "
                            "RETRAIN_LOCK_TTL if jobs run that long)", self.project, what)
