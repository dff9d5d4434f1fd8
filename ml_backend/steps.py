"""The loop's steps: plain functions of the runtime, the project and a `StepContext`.

A retrain is read the pool -> train a version -> publish its order -> switch to it -> prune old
versions. A worker's job (`ml_backend.jobs`) and the command line call the same steps under the
project's lock; only their contexts differ: a worker's keeps the task listing between jobs, lets
deleting old versions give way to a waiting retrain and queues follow-up jobs; the command
line's does none of that.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
from redis import Redis

from ml_backend import orders, ownership, publish
from ml_backend.annotation_cache import Counts
from ml_backend.label_config import LabelConfig, parse_label_config
from ml_backend.pool import Pool, build_pool
from ml_backend.priorities import plan_order
from ml_backend.pruning import make_room, prune_versions
from ml_backend.queue_state import ProjectQueue
from ml_backend.runtime import Runtime
from model.training import train_questions
from model.versions import ModelVersion

log = logging.getLogger(__name__)


def _never() -> bool:
    return False


def _no_followup(kind: str, project: int, reason: str) -> None:
    return None


def _unheard(what: str) -> None:
    return None


@dataclass(frozen=True)
class StepContext:
    """What a step may use besides the runtime; the default is the command line's."""

    redis: Redis | None = None  # a worker's: task listings kept between jobs, fine-tune counts
    kind: str = ""  # the job running the step ("" from the command line)
    should_stop: Callable[[], bool] = _never  # a retrain is waiting: deleting gives way to it
    # Queue job `kind` for `project` (pruning left to do, a fine-tune due, a retrain needed).
    enqueue_followup: Callable[[str, int, str], dict | None] = _no_followup
    # Say what the step is doing now, in words (a worker's: for the status page).
    note: Callable[[str], None] = _unheard


@contextmanager
def timed(project: int, step: str) -> Iterator[dict]:
    """One INFO line when `step` ends: its time and what the body noted in the dict."""
    noted: dict = {}
    start = time.perf_counter()
    yield noted
    detail = ", ".join(f"{k} {v}" for k, v in noted.items())
    log.info("project %s: %s in %.2f s%s", project, step, time.perf_counter() - start,
             f" ({detail})" if detail else "")


def read_pool(rt: Runtime, project: int, ctx: StepContext = StepContext(),
              tasks: list[dict] | None = None) -> tuple[LabelConfig, Pool]:
    """The project's label config and pool as Label Studio has them now (from `tasks` when the
    caller already listed them), with the annotation filters every step applies alike.

    With a worker's context the listing of every task is kept between jobs while the project's
    task count and its task events stay the same, and only the annotations changed since the
    last read are read: see `labelling_tasks`."""
    ctx.note("reading the labels from Label Studio")
    with timed(project, "read pool") as noted:
        info = rt.labelstudio.project(project)
        config = parse_label_config(info.label_config or "")
        if tasks is None:
            token = None if ctx.redis is None else (
                info.task_number, ProjectQueue(ctx.redis, project).tasks_changed())
            tasks = rt.labelstudio.labelling_tasks(project, token=token,
                                                   counts=annotation_counts(info))
        pool = build_pool(tasks, config, annotators=frozenset(rt.settings.annotators),
                          ground_truth_only=rt.settings.ground_truth_only)
        noted |= {"labels": len(pool.labels), "unlabelled": len(pool.unlabeled)}
    return config, pool


def annotation_counts(info) -> Counts | None:
    """Label Studio's counts of a project's submitted and skipped annotations (None when its
    answer lacks them)."""
    counts = (getattr(info, "total_annotations_number", None),
              getattr(info, "skipped_annotations_number", None))
    return None if None in counts else Counts(*map(int, counts))


def trained_digest(rt: Runtime, project: int) -> str | None:
    """`Pool.digest` of the labels the newest version (promoted or not) was trained on."""
    store = rt.versions(project)
    names = store.names()
    return store.meta(names[-1]).get("labels_digest") if names else None


def retrain(rt: Runtime, project: int, ctx: StepContext = StepContext(), *,
            force: bool = True) -> dict:
    """Train a version on Label Studio's labels and, when promoted, serve it and its order;
    unless `force`, only if the labels changed (duplicate, late or replayed webhooks and
    reconciliation then never train the same labels twice)."""
    config, pool = read_pool(rt, project, ctx)
    digest = pool.digest(config)
    if not force and pool.labels and digest == trained_digest(rt, project):
        log.info("project %s: labels unchanged since the newest version, no retrain", project)
        out = {"version": None, "unchanged": True, "n_labels": len(pool.labels)}
        pending = publish.unpublished(rt, project, unlabelled=bool(pool.unlabeled))
        return out if pending is None else out | republish(rt, project, ctx, pool, config,
                                                           pending)
    if not pool.labels:
        log.info("project %s: no usable labels yet (%s)", project, dict(pool.skipped))
        return {"version": None, "n_labels": 0, "skipped": dict(pool.skipped)}
    ctx.note(f"training a version on {len(pool.labels)} labels")
    name, meta, n_labels = train_version(rt, project, config, pool, digest)
    maybe_finetune(rt, project, ctx, n_labels)
    if not meta["promotion"]["promoted"]:
        log.warning("project %s: %s is not promoted: %s", project, name,
                    meta["promotion"]["reason"])
        out = {"version": name, "promoted": False, "n_labels": n_labels,
               "metrics": meta["metrics"], "promotion": meta["promotion"]}
        pending = publish.unpublished(rt, project, unlabelled=bool(pool.unlabeled))
        return out if pending is None else out | republish(rt, project, ctx, pool, config,
                                                           pending)
    # Predictions first, then the pointer /setup reads, then the switch: Label Studio never
    # asks /predict for a version whose priorities are not in place yet.
    ctx.note(f"publishing the order of {name} to Label Studio")
    queue = publish_order(rt, project, pool, config, name, ctx)
    queue |= switch_to(rt, project, name, ctx)
    continue_pruning(project, ctx, queue)
    log.info("project %s: trained %s on %d labels, serving it", project, name, n_labels)
    return {"version": name, "n_labels": n_labels, "metrics": meta["metrics"], "queue": queue}


def train_version(rt: Runtime, project: int, config: LabelConfig, pool: Pool,
                  digest: str) -> tuple[str, dict, int]:
    """Embed the labelled tasks, train a candidate, judge it against the serving version and
    store it (not yet serving); its name, meta and number of labels."""
    with timed(project, "train candidate") as noted:
        bb, serving = rt.backbone_for(project), rt.serving_model(project)
        tasks, x, errors = rt.embedding_matrix(project, {t: pool.urls[t] for t in pool.labels},
                                               backbone=bb)
        for task, err in errors.items():
            log.warning("project %s task %s left out of training: %s", project, task, err)
        if not tasks:
            raise RuntimeError(
                f"project {project}: no labelled image could be loaded (see the warnings above; "
                "IMAGE_HOSTS allows other hosts, LABEL_STUDIO_API_KEY reaches Label Studio's)")
        candidate = train_questions(
            x, [pool.labels[t] for t in tasks], tasks,
            list(config.questions),
            marks=[pool.data[t].get(rt.settings.split_field) for t in tasks],
            fingerprint=bb.fingerprint, serving=serving, config=rt.settings.train_config(),
            serving_x=_serving_x(rt, project, serving, bb, {t: pool.urls[t] for t in tasks}),
        )
        meta = candidate.meta | {
            "project": project,
            "labels_digest": digest,
            **rt.backbone_meta(bb),
            "skipped": dict(pool.skipped) | ({"image errors": len(errors)} if errors else {}),
            **ownership.marker(rt.settings),
        }
        name = rt.versions(project).save(candidate.head, meta, candidate.tasks)
        noted |= {"version": name, "labels": len(tasks),
                  "promoted": meta["promotion"]["promoted"]}
    return name, meta, len(tasks)


def _serving_x(rt: Runtime, project: int, serving, bb, urls: dict[int, str]) -> np.ndarray | None:
    """The serving version's own embeddings of `urls` when it was trained on another backbone
    than the candidate's `bb` (fine-tuning), so each is judged on its own; None otherwise."""
    if serving is None or serving.meta.get("backbone_fingerprint") == bb.fingerprint:
        return None
    old = rt.backbone_of(serving.meta)
    if old.fingerprint != serving.meta.get("backbone_fingerprint"):
        return None  # its backbone is configured no more: it cannot be judged
    vectors, _ = rt.embed(project, urls, backbone=old)
    return np.stack([vectors[t] for t in urls]) if all(t in vectors for t in urls) else None


def maybe_finetune(rt: Runtime, project: int, ctx: StepContext, n_labels: int) -> None:
    """Queue a backbone fine-tune every FINETUNE_EVERY labels (0: never); only from a worker's
    job other than a fine-tune."""
    every = rt.settings.finetune_every
    if not every or ctx.redis is None or ctx.kind == "finetune":
        return
    state = ProjectQueue(ctx.redis, project)
    if n_labels - state.finetuned_at() >= every:
        state.set_finetuned_at(n_labels)
        ctx.enqueue_followup("finetune", project, f"{n_labels} labels")


def publish_order(rt: Runtime, project: int, pool: Pool, config: LabelConfig,
                  name: str, ctx: StepContext = StepContext(), *, replace: bool = False) -> dict:
    """Make room (old versions beyond KEEP_VERSIONS), then push version `name`'s order."""
    made_room = make_room(rt, project, ownership.name_of(name, rt.versions(project).meta(name)),
                          live=publish.live_version(rt, project))
    queue = push_order(rt, project, pool, config, rt.versions(project).load(name), ctx,
                       replace=replace)
    queue["made_room"] = made_room
    return queue


def republish(rt: Runtime, project: int, ctx: StepContext, pool: Pool, config: LabelConfig,
              name: str) -> dict:
    """Publish again the newest promotable version `name`, which a failed retrain saved but
    left unpublished or half published: its order (unless Label Studio serves it already),
    then the pointer, the switch and the title."""
    log.warning("project %s: %s was saved but is not live; publishing it", project, name)
    live = publish.live_version(rt, project)
    meta = rt.versions(project).meta(name)
    queue: dict = {}
    # Its order comes from its own backbone (a fine-tune's, say), not the serving version's.
    with rt.candidate_backbone(project, rt.backbone_of(meta)):
        if live != ownership.name_of(name, meta):
            queue = publish_order(rt, project, pool, config, name, ctx, replace=True)
        queue |= switch_to(rt, project, name, ctx)
    continue_pruning(project, ctx, queue)
    return {"republished": name, "queue": queue}


def push_order(rt: Runtime, project: int, pool: Pool, config: LabelConfig,
               model: ModelVersion | None, ctx: StepContext = StepContext(), *,
               replace: bool = False, strategy: str | None = None, k: int | None = None) -> dict:
    """Rank the unlabelled tasks with `model` and push the head of the order (what a retrain
    and a rollback do before switching the queue); a summary for the job history."""
    with timed(project, "publish order") as noted:
        start = time.perf_counter()
        plan = plan_order(rt, project, pool, config, model,
                          strategy=strategy or rt.settings.strategy,
                          k=k or rt.settings.queue_batch)
        pushed = publish.push_head(rt, project, plan, replace=replace)
        if ctx.redis is not None:
            head = ProjectQueue(ctx.redis, project)
            if pushed < len(plan.tasks):
                head.set_head(plan.version, pushed, pushed)
            else:
                head.head_complete(plan.version)
        noted |= {"version": plan.version, "predictions": pushed, "ranked": len(plan.tasks),
                  "strategy": plan.strategy}
    return {"pushed": pushed, "ranked": len(plan.tasks), "strategy": plan.strategy,
            "image_errors": len(plan.errors),
            "order_seconds": round(time.perf_counter() - start, 3)}


def switch_to(rt: Runtime, project: int, name: str, ctx: StepContext) -> dict:
    """Serve version `name` (the pointer /setup reads), make Label Studio's queue follow its
    order, and delete old versions for one slice."""
    ctx.note(f"switching Label Studio's queue to {name} and deleting old predictions")
    with timed(project, f"switch to {name}") as noted:
        store = rt.versions(project)
        store.promote(name)
        out = publish.switch(rt, project, ownership.name_of(name, store.meta(name)),
                             interrupted=ctx.should_stop)
        noted |= {"old versions deleted": len(out["deleted_versions"])}
    return out


def continue_pruning(project: int, ctx: StepContext, queue: dict) -> None:
    """Queue a `prune` job when old versions are left to delete (only from a worker)."""
    if queue.get("prune_pending"):
        ctx.enqueue_followup("prune", project, "old versions left")


def prune(rt: Runtime, project: int, ctx: StepContext = StepContext()) -> dict:
    """Delete old prediction versions for one slice (PRUNE_SLICE_SECONDS), then queue another
    slice while any is left, so retrains queued meanwhile go first."""
    ctx.note("deleting old prediction versions")
    with timed(project, "prune") as noted:
        stored = rt.labelstudio.model_versions(project)
        deleted, pending = prune_versions(rt, project, rt.serving_version(project), stored,
                                          interrupted=ctx.should_stop,
                                          live=publish.live_version(rt, project))
        noted |= {"deleted": len(deleted), "more left": pending}
    result = {"deleted_versions": deleted, "prune_pending": pending}
    continue_pruning(project, ctx, result)
    return result


def topup(rt: Runtime, project: int, ctx: StepContext = StepContext()) -> dict:
    """Push the next slice of the serving version's order when annotators worked through most
    of its head before a retrain landed (once the head is labelled, Label Studio's stream turns
    random): as many as fill the head to QUEUE_HEAD again. Costs one import, no ranking.

    The head's record lives in Redis; when it is lost (Redis restarted without its data) or
    names another version (one served from the command line), it is rebuilt first: see
    `recover_head`."""
    version = rt.serving_version(project)
    if ctx.redis is None:
        return {"pushed": 0, "version": version}
    state = ProjectQueue(ctx.redis, project)
    order = orders.load(rt.settings, project, version)
    head = state.head()
    if order is None:
        state.head_complete(version)  # no stored order (an older release pushed every task)
        return {"pushed": 0, "version": version}
    if head is None or head["version"] != version:
        head = recover_head(rt, project, ctx, version, order)
    if head["complete"]:
        return {"pushed": 0, "version": version}
    left = max(0, head["left"])
    start = head["pushed"]
    stop = min(len(order), start + rt.settings.queue_head - left)
    pushed = 0
    if stop > start:
        config = parse_label_config(rt.labelstudio.label_config(project))
        pushed = publish.push(rt, project, version,
                              order.predictions(start, stop, version, config))
    if stop < len(order):
        state.set_head(version, stop, left + pushed)
    else:  # the whole order is in Label Studio now
        state.head_complete(version)
    log.info("project %s: topped up %s with %d predictions (places %d-%d)", project, version,
             pushed, start, stop)
    return {"pushed": pushed, "version": version}


def recover_head(rt: Runtime, project: int, ctx: StepContext, version: str,
                 order: orders.StoredOrder) -> dict:
    """The head of `version`'s stored order as Label Studio holds it, when Redis lost its
    record: as many places as Label Studio holds predictions of the version (a head, top-ups
    and the few predicted on demand: a top-up may skip that many places, which are then served
    when Label Studio asks `/predict`), and those of its tasks still unlabelled."""
    stored = rt.labelstudio.model_versions(project).get(version, 0)
    pushed = min(stored, len(order))
    _, pool = read_pool(rt, project, ctx)
    unlabelled = set(pool.unlabeled)
    left = sum(t in unlabelled for t in order.tasks[:pushed].tolist())
    log.warning("project %s: the record of %s's head was lost (Redis emptied?); rebuilt from "
                "Label Studio: %d places pushed, %d of them unlabelled", project, version,
                pushed, left)
    complete = pushed >= len(order)
    ProjectQueue(ctx.redis, project).set_head(version, pushed, left, complete=complete)
    return {"version": version, "pushed": pushed, "left": left, "complete": complete}


def prioritize(rt: Runtime, project: int, ctx: StepContext = StepContext()) -> dict:
    """New tasks get a priority under the serving version, so they are not starved."""
    config, pool = read_pool(rt, project, ctx)
    model = rt.serving_model(project)
    version = ownership.model_name(rt.settings, model)
    if model is None and version not in rt.labelstudio.model_versions(project):
        return {"pushed": 0, "version": version}  # neither a model nor a seeded order yet
    lacking = rt.labelstudio.tasks_lacking(project, version)
    # Tasks outside the published head lack a prediction on purpose: only new ones get one.
    order = orders.load(rt.settings, project, version)
    ranked = set(order.tasks.tolist()) if order is not None else set()
    missing = [t for t in pool.unlabeled if t in lacking and t not in ranked]
    if not missing:
        return {"pushed": 0, "version": version}
    ctx.note(f"giving {len(missing)} new tasks a priority")
    with timed(project, "prioritize new tasks") as noted:
        plan = plan_order(rt, project, pool, config, model,
                          strategy=rt.settings.strategy, k=rt.settings.queue_batch)
        wanted = set(missing)
        pushed = publish.push(rt, project, version,
                              [p for p in plan.predictions if p["task"] in wanted])
        noted |= {"version": version, "predictions": pushed}
    return {"pushed": pushed, "version": version, "strategy": plan.strategy}


def rollback(rt: Runtime, project: int, name: str, ctx: StepContext = StepContext()) -> dict:
    """Serve version `name` again and make Label Studio's queue follow it; the versions
    themselves are never changed or deleted.

    As after a retrain: its predictions for every unlabelled task first (replacing any it had,
    which may be stale), then the pointer /setup reads, then the switch and the backend's title.
    """
    store = rt.versions(project)
    before = store.serving()
    model = store.load(name)  # refuses unknown names and unreadable heads before anything changes
    config, pool = read_pool(rt, project, ctx)
    queue = push_order(rt, project, pool, config, model, ctx, replace=True)
    store.promote(name)
    store.update_meta(name, rolled_back_at=time.time(), rolled_back_from=before)
    queue |= publish.switch(rt, project, ownership.model_name(rt.settings, model),
                            interrupted=ctx.should_stop)
    log.info("project %s: rolled back from %s to %s", project, before, name)
    return {"project": project, "serving": name, "was": before, "pushed": queue["pushed"]}
