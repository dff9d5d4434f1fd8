"""Questions asked about one image: each single- or multiple-choice, each with its own head.

A label config with several `Choices` tags asks several questions about the same image (species,
count and behaviour of a camera-trap image); a multiple-choice question (`choice="multiple"`)
takes any number of its labels. Every question gets its own head on the shared embeddings:
softmax over the classes of a single-choice question, one sigmoid per label of a multiple-choice
one, with a per-label threshold chosen on the held-out tasks.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

import numpy as np

# Question name -> the labels chosen (exactly one for a single-choice question).
Answers = dict[str, tuple[str, ...]]

DEFAULT_THRESHOLD = 0.5


@dataclass(frozen=True)
class Question:
    name: str  # the Choices tag's name ("" in versions trained before questions had names)
    classes: tuple[str, ...]
    multiple: bool = False

    def as_json(self) -> dict:
        return {"name": self.name, "classes": list(self.classes), "multiple": self.multiple}

    @classmethod
    def from_json(cls, d: dict) -> Question:
        return cls(str(d["name"]), tuple(d["classes"]), bool(d.get("multiple", False)))


def matching(questions: Sequence[Question], offered: Sequence[Question]) -> dict[str, Question]:
    """For each question `offered` (the label config's now), the version's question that answers
    it: the one of the same name and kind. A version trained before questions had names ("")
    answers the config's first single-choice question."""
    by_name = {q.name: q for q in questions}
    out: dict[str, Question] = {}
    for q in offered:
        mine = by_name.get(q.name)
        if mine is None and "" in by_name and not q.multiple and not any(
                not o.multiple for o in offered[: offered.index(q)]):
            mine = by_name[""]
        if mine is not None and mine.multiple == q.multiple:
            out[q.name] = mine
    return out


def decide(probs: np.ndarray, question: Question, offered: Collection[str],
           thresholds: Sequence[float] | None = None) -> list[tuple[str, ...]]:
    """Per row of `probs` [n, len(question.classes)], the labels to pre-annotate among those
    `offered`: the most probable for a single-choice question (none when it offers none of the
    head's classes), every label at or above its threshold for a multiple-choice one."""
    classes = question.classes
    allowed = [i for i, c in enumerate(classes) if c in offered]
    probs = np.asarray(probs)
    if probs.ndim == 3:
        probs = probs.mean(axis=2)
    if not question.multiple:
        if not allowed:
            return [() for _ in range(len(probs))]
        best = np.asarray(allowed)[probs[:, allowed].argmax(1)] if len(probs) else []
        return [(classes[i],) for i in best]
    t = np.asarray(thresholds if thresholds is not None else [DEFAULT_THRESHOLD] * len(classes))
    chosen = probs >= t
    return [tuple(classes[i] for i in allowed if row[i]) for row in chosen]


def indicators(question: Question, chosen: Sequence[tuple[str, ...]]) -> np.ndarray:
    """Answers as 0/1 over the question's classes [n, C] (one-hot for a single-choice answer, a
    row of zeros for none): the form metrics and the promotion bootstrap read."""
    return np.array([[c in a for c in question.classes] for a in chosen], dtype=bool).reshape(
        len(chosen), len(question.classes))


def best_thresholds(truth: np.ndarray, probs: np.ndarray) -> list[float]:
    """Per label, the threshold on `probs` [n, L] that maximises F1 against `truth` [n, L] (bool),
    from the held-out tasks; 0.5 for a label they never show (too little evidence to move it).

    Candidates are midpoints between the sorted probabilities, so the choice does not sit on a
    held-out example's own score."""
    out = []
    for j in range(probs.shape[1]):
        y, p = np.asarray(truth[:, j], dtype=bool), np.asarray(probs[:, j], dtype=np.float64)
        if not y.any():
            out.append(DEFAULT_THRESHOLD)
            continue
        s = np.unique(p)
        cands = np.concatenate([[DEFAULT_THRESHOLD], (s[:-1] + s[1:]) / 2, [s[0]]])
        said = p[None, :] >= cands[:, None]
        tp = (said & y).sum(1)
        f1 = 2 * tp / (said.sum(1) + y.sum())
        out.append(float(cands[int(np.argmax(f1))]))  # first max: 0.5 on a tie
    return out

