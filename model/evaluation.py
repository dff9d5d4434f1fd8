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
