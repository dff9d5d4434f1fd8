"""The pool of a project: its tasks, their image URLs, and the labels annotators gave."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field

from ml_backend.label_config import LabelConfig
from model.questions import Answers


@dataclass
class Pool:
    urls: dict[int, str] = field(default_factory=dict)  # every task with an image URL
    labels: dict[int, Answers] = field(default_factory=dict)  # labelled tasks: their answers
    skipped: Counter = field(default_factory=Counter)  # why tasks were left out of training
    data: dict[int, dict] = field(default_factory=dict)  # task data, for split fields
    filtered: set[int] = field(default_factory=set)  # annotated, but ANNOTATORS etc. left it out

    @property
    def unlabeled(self) -> list[int]:
        return [t for t in self.urls if t not in self.labels and t not in self.filtered]

    def digest(self, config: LabelConfig) -> str:
        """What a retrain learns from: the questions, each labelled task's answers and image URL.

        Stored with every version, so a retrain (or reconciliation) can tell nothing changed.
        """
        single = config.single

        def answer(t: int) -> object:  # one single-choice question: its label, as always
            a = self.labels[t]
            return a[single.name][0] if single is not None else sorted(map(list, a.items()))

        items = sorted((t, answer(t), self.urls.get(t, "")) for t in self.labels)
        return hashlib.sha256(json.dumps([config.digest_key(), items]).encode()).hexdigest()[:32]

    def answering(self, question: str) -> list[int]:
        """Labelled tasks that answer `question`."""
        return [t for t, a in self.labels.items() if question in a]


# Reasons a task with annotations still has no training label because of a filter setting.
NOT_FROM_ANNOTATORS = "annotated only by annotators not in ANNOTATORS"
NOT_GROUND_TRUTH = "no ground-truth annotation (GROUND_TRUTH_ONLY)"


def _stamp(annotation: dict) -> str:
    return str(annotation.get("updated_at") or annotation.get("created_at") or "")


def annotator_ids(annotation: dict) -> set[str]:
    """Ways an annotation names its annotator: user id and email (lower case)."""
    who = annotation.get("completed_by")
    ids = set()
    if isinstance(who, dict):
        ids |= {str(who.get("id", "")), str(who.get("email", "")).lower()}
    elif who is not None:
        ids.add(str(who))
    # Label Studio's task listing adds "created_username": "<email>, <id>".
    ids |= {p.strip().lower() for p in str(annotation.get("created_username") or "").split(",")}
    return ids - {""}


def task_label(
    task: dict,
    config: LabelConfig,
    *,
    annotators: frozenset[str] | set[str] = frozenset(),
    ground_truth_only: bool = False,
) -> tuple[Answers | None, str | None]:
    """(answers, None) from the newest usable annotation, or (None, reason) when there is none.

    Skipped and cancelled annotations never count; the newest remaining annotation wins, so an
    annotator correcting a label replaces the old one. `annotators` (ids or emails) keeps only
    their annotations; `ground_truth_only` only annotations marked as ground truth.
    """
    annotations = list(task.get("annotations") or [])
    usable = [a for a in annotations if not a.get("was_cancelled")]
    if not usable:
        return None, "skipped" if annotations else None
    if annotators:
        wanted = {a.lower() for a in annotators}
        usable = [a for a in usable if annotator_ids(a) & wanted]
        if not usable:
            return None, NOT_FROM_ANNOTATORS
    if ground_truth_only:
        usable = [a for a in usable if a.get("ground_truth")]
        if not usable:
            return None, NOT_GROUND_TRUTH
    newest = max(usable, key=lambda a: (_stamp(a), a.get("id") or 0))
    answers = config.answers_of(newest.get("result") or [])
    if not answers:
        return None, "no choice in annotation"
    # A label the config no longer offers drops that question's answer, not the others'.
    known = {name: labels for name, labels in answers.items()
             if set(labels) <= set(config.question(name).classes)}
    if not known:
        name, labels = next(iter(answers.items()))
        unknown = [x for x in labels if x not in config.question(name).classes]
        return None, f"label {unknown[0]!r} not in the label config"
    return known, None


def build_pool(
    tasks,
    config: LabelConfig,
    *,
    annotators: frozenset[str] | set[str] = frozenset(),
    ground_truth_only: bool = False,
) -> Pool:
    """Collect a project's tasks (dicts as Label Studio lists them) into a pool.

    The annotation filters are those of `task_label`. A task they leave without a label is not
    trained on (`skipped` counts the reason) and not offered for labelling either: it is in
    `filtered`, not in `unlabeled`."""
    pool = Pool()
    for task in tasks:
        tid = int(task["id"])
        url = (task.get("data") or {}).get(config.value_key)
        if not isinstance(url, str) or not url:
            pool.skipped["no image URL"] += 1
            continue
        pool.urls[tid] = url
        pool.data[tid] = task.get("data") or {}
        if not task.get("annotations"):
            continue  # unlabelled: most of a large project
        label, reason = task_label(task, config, annotators=annotators,
                                   ground_truth_only=ground_truth_only)
        if label is not None:
            pool.labels[tid] = label
        elif reason:
            pool.skipped[reason] += 1
            if reason in (NOT_FROM_ANNOTATORS, NOT_GROUND_TRUTH):
                pool.filtered.add(tid)
    return pool
