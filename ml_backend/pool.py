"""The pool of a project: its tasks, their image URLs, and the labels annotators gave."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from ml_backend.label_config import LabelConfig


@dataclass
class Pool:
    urls: dict[int, str] = field(default_factory=dict)  # every task with an image URL
    labels: dict[int, str] = field(default_factory=dict)  # labelled tasks only
    skipped: Counter = field(default_factory=Counter)  # why tasks were left out of training
    data: dict[int, dict] = field(default_factory=dict)  # task data, for split fields

    @property
    def unlabeled(self) -> list[int]:
        return [t for t in self.urls if t not in self.labels]


def _stamp(annotation: dict) -> str:
    return str(annotation.get("updated_at") or annotation.get("created_at") or "")


def task_label(task: dict, config: LabelConfig) -> tuple[str | None, str | None]:
    """(label, None) from the newest usable annotation, or (None, reason) when there is none.

    Skipped and cancelled annotations never count; the newest remaining annotation wins, so an
    annotator correcting a label replaces the old one.
    """
    annotations = list(task.get("annotations") or [])
    usable = [a for a in annotations if not a.get("was_cancelled")]
    if not usable:
        return None, "skipped" if annotations else None
    newest = max(usable, key=lambda a: (_stamp(a), a.get("id") or 0))
    label = config.choice_of(newest.get("result") or [])
    if label is None:
        return None, "no choice in annotation"
    if label not in config.classes:
        return None, f"label {label!r} not in the label config"
    return label, None


def build_pool(tasks, config: LabelConfig) -> Pool:
    """Collect a project's tasks (dicts as Label Studio lists them) into a pool."""
    pool = Pool()
    for task in tasks:
        tid = int(task["id"])
        url = (task.get("data") or {}).get(config.value_key)
        if not isinstance(url, str) or not url:
            pool.skipped["no image URL"] += 1
            continue
        pool.urls[tid] = url
        pool.data[tid] = task.get("data") or {}
        label, reason = task_label(task, config)
        if label is not None:
            pool.labels[tid] = label
        elif reason:
            pool.skipped[reason] += 1
    return pool
