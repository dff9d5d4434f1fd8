"""The promotion rule: a new version serves only if it is not clearly worse than the one serving.

Pure functions over metric dicts (see `model.evaluation.evaluate`), so the rule is easy to test
and the same wherever it is applied.
"""

from __future__ import annotations

import numpy as np

METRICS = ("accuracy", "macro_f1", "micro_f1", "subset_accuracy")
PER_CLASS = ("precision", "recall")
CONFIDENCE = 0.95  # refuse only when the old version is better in this share of resamples
RESAMPLES = 400


def check_metric(metric: str) -> str:
    """`metric` if it names a metric this rule understands, else ValueError saying which do.

    `macro_f1` etc. alone mean the mean over a label config's questions; `macro_f1:<question>`
    one question's."""
    kind, _, cls = metric.partition(":")
    if kind in METRICS or (kind in PER_CLASS and cls):
        return metric
    raise ValueError(
        f"unknown promotion metric {metric!r}: use accuracy, macro_f1, micro_f1 or "
        "subset_accuracy (each optionally :<question>), precision:<class> or recall:<class>"
    )


def metric_value(metrics: dict | None, metric: str) -> float | None:
    """The value of `metric` in `metrics`, or None when it cannot be computed there."""
    if not metrics or not metrics.get("n"):
        return None
    kind, _, cls = check_metric(metric).partition(":")
    if kind in METRICS:
        if cls and "questions" in metrics:  # one question of several
            return metric_value((metrics["questions"] or {}).get(cls), kind)
        return metrics.get(kind, metrics.get("accuracy") if kind == "subset_accuracy" else None)
    entry = (metrics.get("per_class") or {}).get(cls)
    return None if entry is None else entry.get(kind)


def _scores(y: np.ndarray, pred: np.ndarray, classes: list[str], metric: str) -> np.ndarray:
    """`metric` on each row of `y`/`pred` (`[resamples, n]` class indices, -1 = no answer)."""
    kind, _, cls = metric.partition(":")
    if kind == "accuracy":
        return (y == pred).mean(axis=1)
    c = len(classes)
    offset = np.arange(len(y))[:, None] * c

    def count(v: np.ndarray) -> np.ndarray:  # per resample, how often each class occurs in v
        return np.bincount((v + offset)[v >= 0], minlength=len(y) * c).reshape(len(y), c)

    tp = count(np.where(y == pred, y, -1))
    truth, said = count(y), count(pred)
    with np.errstate(divide="ignore", invalid="ignore"):
        if kind == "macro_f1":
            return np.nan_to_num(2 * tp / (truth + said)).mean(axis=1)
        j = classes.index(cls)
        return np.nan_to_num(tp[:, j] / (said if kind == "precision" else truth)[:, j])


def worse_share(y: np.ndarray, new_pred: np.ndarray, old_pred: np.ndarray, classes: list[str],
                metric: str, resamples: int = RESAMPLES, seed: int = 0) -> float:
    """Share of paired bootstrap resamples of the held-out tasks on which the old version
    scores higher than the new one.

    Why: on tens of held-out tasks a metric moves by several points from one lucky or unlucky
    task to the next, and a version that was lucky on them would refuse every better successor
    (in the simulation, up to a third of all retrains were refused that way).
    """
    kind, _, cls = metric.partition(":")
    if len(y) == 0 or (cls and cls not in classes):
        return 0.0
    idx = np.random.default_rng(seed).integers(0, len(y), (resamples, len(y)))
    new = _scores(y[idx], new_pred[idx], classes, metric)
    old = _scores(y[idx], old_pred[idx], classes, metric)
    return float((old > new).mean())


def decide(
    metric: str,
    new: dict | None,
    old: dict | None,
    tolerance: float,
    *,
    reason: str | None = None,
    n: int | None = None,
    p_worse: float | None = None,
) -> dict:
    """`{promoted, reason, metric, new, old}` for a new version's and the serving version's
    metrics on the same held-out tasks.

    Promoted unless the new value is below the old one by more than `tolerance` and, when
    `p_worse` (see `worse_share`) is given and the new value is lower, the old version is
    better in at least `CONFIDENCE` of the resamples: a drop that chance explains does not
    block a version trained on more labels (a negative tolerance, demanding a gain, is applied
    as it is). When either value is missing (no held-out tasks, no serving
    version, a class neither has seen) there is nothing to compare, and the new version is
    promoted with `reason` saying why.
    """
    new_v, old_v = metric_value(new, metric), metric_value(old, metric)
    out = {"metric": metric, "new": new_v, "old": old_v, "tolerance": tolerance, "n": n,
           "p_worse": p_worse}
    if new_v is None or old_v is None:
        why = reason or f"{metric} cannot be computed on the held-out tasks"
        return {"promoted": True, "reason": f"{why}: promoted without comparison", **out}
    chance = new_v < old_v and p_worse is not None and p_worse < CONFIDENCE
    if new_v < old_v - tolerance and chance:
        return {"promoted": True, **out,
                "reason": f"{metric} {new_v:.4f} vs serving {old_v:.4f} on {n} held-out tasks: "
                          f"lower, but the serving version is better in only {p_worse:.0%} of "
                          f"resamples (under {CONFIDENCE:.0%}): not clearly worse"}
    if new_v >= old_v - tolerance:
        return {"promoted": True, **out,
                "reason": f"{metric} {new_v:.4f} vs serving {old_v:.4f} on {n} held-out tasks: "
                          f"not worse by more than {tolerance}"}
    return {"promoted": False, **out,
            "reason": f"{metric} {new_v:.4f} is worse than the serving version's {old_v:.4f} "
                      f"on {n} held-out tasks by more than {tolerance}"
                      + ("" if p_worse is None else f" (in {p_worse:.0%} of resamples)")
                      + ": the old version keeps serving"}


def _indicator_scores(truth: np.ndarray, pred: np.ndarray, answered: np.ndarray,
                      kind: str) -> np.ndarray:
    """`kind` per resample of one question: `truth`, `pred` [R, n, C] of 0/1 (one-hot for a
    single-choice question), `answered` [R, n] the rows that answer it."""
    w = answered[:, :, None]
    if kind in ("accuracy", "subset_accuracy"):
        right = ((truth == pred).all(axis=2) & answered).sum(1)
        return right / np.maximum(answered.sum(1), 1)
    tp = (truth & pred & w).sum(1)
    said, true = (pred & w).sum(1), (truth & w).sum(1)
    with np.errstate(divide="ignore", invalid="ignore"):
        if kind == "micro_f1":
            return np.nan_to_num(2 * tp.sum(1) / (said.sum(1) + true.sum(1)))
        return np.nan_to_num(2 * tp / (said + true)).mean(axis=1)


def worse_share_questions(truth: list[np.ndarray], new: list[np.ndarray], old: list[np.ndarray],
                          answered: list[np.ndarray], names: list[str], metric: str,
                          resamples: int = RESAMPLES, seed: int = 0) -> float:
    """`worse_share` for several questions: per question the truth and both versions' answers as
    0/1 matrices [n, C] and the held-out rows that answer it [n]; `metric` is the mean over the
    questions, or over the one it names (`macro_f1:species`)."""
    kind, _, name = check_metric(metric).partition(":")
    chosen = [i for i, q in enumerate(names) if kind in METRICS and (not name or q == name)]
    n = len(answered[0]) if answered else 0
    if n == 0 or not chosen:
        return 0.0
    idx = np.random.default_rng(seed).integers(0, n, (resamples, n))

    def score(preds: list[np.ndarray]) -> np.ndarray:
        return np.mean([_indicator_scores(truth[i][idx], preds[i][idx], answered[i][idx], kind)
                        for i in chosen], axis=0)

    return float((score(old) > score(new)).mean())
