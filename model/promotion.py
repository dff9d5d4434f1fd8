"""The promotion rule: a new version serves only if it is not clearly worse than the one serving.

Pure functions over metric dicts (see `model.evaluation.evaluate`), so the rule is easy to test
and the same wherever it is applied.
"""

from __future__ import annotations

METRICS = ("accuracy", "macro_f1")
PER_CLASS = ("precision", "recall")


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


def decide(
    metric: str,
    new: dict | None,
    old: dict | None,
    tolerance: float,
    *,
    reason: str | None = None,
    n: int | None = None,
) -> dict:
    """`{promoted, reason, metric, new, old}` for a new version's and the serving version's
    metrics on the same held-out tasks.

    Promoted unless the new value is below the old one by more than `tolerance`. When either
    value is missing (no held-out tasks, no serving version, a class neither has seen) there is
    nothing to compare, and the new version is promoted with `reason` saying why.
    """
    new_v, old_v = metric_value(new, metric), metric_value(old, metric)
    out = {"metric": metric, "new": new_v, "old": old_v, "tolerance": tolerance, "n": n}
    if new_v is None or old_v is None:
        why = reason or f"{metric} cannot be computed on the held-out tasks"
        return {"promoted": True, "reason": f"{why}: promoted without comparison", **out}
    if new_v >= old_v - tolerance:
        return {"promoted": True, **out,
                "reason": f"{metric} {new_v:.4f} vs serving {old_v:.4f} on {n} held-out tasks: "
                          f"not worse by more than {tolerance}"}
    return {"promoted": False, **out,
            "reason": f"{metric} {new_v:.4f} is worse than the serving version's {old_v:.4f} "
                      f"on {n} held-out tasks by more than {tolerance}: the old version keeps "
                      "serving"}
