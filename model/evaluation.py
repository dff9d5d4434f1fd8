"""Metrics of a classifier on held-out labelled examples."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
)

from model.classes import allowed_classes, best_allowed
from model.questions import Question


def evaluate(y_true: np.ndarray, y_pred: np.ndarray, classes: list[str]) -> dict:
    """Accuracy, macro-F1, per-class precision/recall and the confusion matrix (JSON-ready)."""
    labels = list(range(len(classes)))
    if len(y_true) == 0:
        return {"n": 0, "accuracy": None, "macro_f1": None, "per_class": {}, "confusion": []}
    precision, recall, _, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0
    )
    return {
        "n": len(y_true),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(
            f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
        "per_class": {
            c: {"precision": float(p), "recall": float(r), "support": int(s)}
            for c, p, r, s in zip(classes, precision, recall, support)
        },
        "confusion": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
    }


def predict_classes(head, head_classes: list[str], x: np.ndarray, classes: list[str]) -> np.ndarray:
    """Indices into `classes` a head predicts, choosing only among the classes both know.

    This is what serving does when the label config changed since the head was trained, so an
    old version is judged the way it would answer; -1 when it knows none of `classes`.
    """
    from model.head import predict_proba

    if not allowed_classes(head_classes, classes) or len(x) == 0:
        return np.full(len(x), -1, dtype=np.int64)
    best = best_allowed(predict_proba(head, x), head_classes, classes)
    return np.array([classes.index(head_classes[i]) for i in best], dtype=np.int64)


def evaluate_multilabel(truth: np.ndarray, pred: np.ndarray, classes: list[str]) -> dict:
    """Metrics of a multiple-choice question (`truth`, `pred`: [n, L] of 0/1): micro- and
    macro-F1 over labels, subset accuracy (every label right; also its `accuracy`), and
    per-label precision and recall."""
    truth, pred = np.asarray(truth, dtype=bool), np.asarray(pred, dtype=bool)
    if len(truth) == 0:
        return {"n": 0, "accuracy": None, "subset_accuracy": None, "macro_f1": None,
                "micro_f1": None, "per_class": {}}
    tp, said, true = (truth & pred).sum(0), pred.sum(0), truth.sum(0)
    f1 = np.divide(2 * tp, said + true, out=np.zeros(len(classes)), where=(said + true) > 0)
    subset = float((truth == pred).all(1).mean())
    return {
        "n": len(truth),
        "accuracy": subset,
        "subset_accuracy": subset,
        "macro_f1": float(f1.mean()),
        "micro_f1": float(2 * tp.sum() / max(said.sum() + true.sum(), 1)),
        "per_class": {
            c: {"precision": float(tp[i] / said[i]) if said[i] else 0.0,
                "recall": float(tp[i] / true[i]) if true[i] else 0.0, "support": int(true[i])}
            for i, c in enumerate(classes)
        },
    }


def evaluate_question(question: Question, truth: np.ndarray, said: np.ndarray) -> dict:
    """Metrics of one question from the true and the given answers as 0/1 matrices [n, C]
    (`model.questions.indicators`; a row without a 1 in `said`: no answer)."""
    if question.multiple:
        return evaluate_multilabel(truth, said, list(question.classes))
    return evaluate(truth.argmax(1), np.where(said.any(1), said.argmax(1), -1),
                    list(question.classes))


def combine(per_question: dict[str, dict]) -> dict:
    """One version's metrics over several questions: accuracy and macro-F1 are the means over
    the questions measured (the default promotion metric), each question's own under
    `questions`."""
    measured = {q: m for q, m in per_question.items() if m and m.get("n")}

    def mean(key: str) -> float | None:
        values = [m[key] for m in measured.values() if m.get(key) is not None]
        return float(np.mean(values)) if values else None

    return {"n": max((m["n"] for m in measured.values()), default=0),
            "accuracy": mean("accuracy"), "macro_f1": mean("macro_f1"),
            "questions": per_question}
