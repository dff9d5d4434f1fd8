"""Choose the first tasks to label in a project with no (or few) labels, and queue them first."""

from __future__ import annotations

from ml_backend import publish
from ml_backend.label_config import parse_label_config
from ml_backend.pool import build_pool
from ml_backend.priorities import plan_order
from ml_backend.runtime import Runtime
from ml_backend.settings import COLD_START_METHODS


def seed(rt: Runtime, project: int, size: int, method: str = "auto", *, dry_run: bool = False,
         progress: bool = True) -> dict:
    """Rank every task of `project` with a cold-start `method` and push the order.

    The first `size` tasks are chosen jointly (diverse and representative); the rest follow in
    the method's continuation order. Predictions carry no pre-annotation when no model serves
    yet. Running it again replaces the previous seed order instead of adding to it.
    """
    if method not in COLD_START_METHODS:
        raise ValueError(f"--method must be one of {', '.join(COLD_START_METHODS)}")
    if size < 1:
        raise ValueError("--size must be at least 1")
    ls = rt.labelstudio
    config = parse_label_config(ls.label_config(project))
    pool = build_pool(ls.labelling_tasks(project), config)
    if not pool.urls:
        raise ValueError(f"project {project} has no tasks with an image in ${config.value_key}")
    if not pool.unlabeled:
        raise ValueError(f"project {project}: every task is labelled already")
    model = rt.serving_model(project)
    # With a serving model (topping up a project with few labels) its pre-annotations come along
    # and its version name is kept, so /setup and the queue agree.
    plan = plan_order(rt, project, pool, config, model, strategy=method, k=size,
                      progress=progress)
    chosen = plan.tasks[:size]
    out = {"project": project, "method": plan.strategy, "version": plan.version,
           "chosen": chosen, "urls": [pool.urls[t] for t in chosen],
           "labelled": len(pool.labels), "image_errors": plan.errors, "dry_run": dry_run}
    if not dry_run:
        out["pushed"] = publish.push_head(rt, project, plan, replace=True,
                                          head=max(size, rt.settings.queue_head))
        out |= publish.switch(rt, project, plan.version)
    return out
