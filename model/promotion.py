"""The promotion rule: a new version serves only if it is not clearly worse than the one serving.

Pure functions over metric dicts (see `model.evaluation.evaluate`), so the rule is easy to test
and the same wherever it is applied.
"""

from __future__ import annotations

import numpy as np

METRICS = ("accuracy", "macro_f1")
PER_CLASS = ("precision", "recall")
CONFIDENCE = 0.95  # refuse only when the old version is better in this share of resamples
RESAMPLES = 400


def check_metric(metric: str) -> str:
    """`metric` if it names a metric this rule understands, else ValueError saying which do."""
    kind, _, cls = metric.partition(":")
    if (metric in METRICS) or (kind in PER_CLASS and cls):
        return metric
    raise ValueError(
        f"unknown promotion metric {metric!r}: use accuracy, macro_f1, precision:<class> "
        "or recall:<class>"
    )


def metric_value(metrics: dict | None, metric: str) -> float | None:
    """The value of `metric` in `metrics`, or None when it cannot be computed there."""
    if not metrics or not metrics.get("n"):
        return None
    kind, _, cls = check_metric(metric).partition(":")
    if not cls:
        return metrics.get(kind)
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
