"""Label Studio's ML backend protocol (1.23): /health, /setup, /predict, /webhook, /versions.

`/setup` and `/health` are called before every predict round, so they only read small files.
`/webhook` is called inside the annotator's submit request with a 1 s timeout: it only enqueues.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from fastapi import APIRouter, HTTPException
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, Field
from redis.exceptions import RedisError

from ml_backend.label_config import UnsupportedConfig, parse_label_config
from ml_backend.ownership import name_of, untrained_name
from ml_backend.queue_state import ProjectQueue
from ml_backend.queueing import enqueue, enqueue_retrain
from ml_backend.routes.deps import (
    MAX_ID,
    MetricsDep,
    RedisDep,
    RuntimeDep,
    SettingsDep,
    project_id,
    remember,
)
from model.versions import projects

log = logging.getLogger(__name__)

MODEL_CLASS = "ActiveLearningImageClassifier"
RETRAIN_EVENTS = {
    "ANNOTATION_CREATED",
    "ANNOTATION_UPDATED",
    "ANNOTATIONS_CREATED",
    "ANNOTATIONS_DELETED",
    "START_TRAINING",
}
# New tasks get a priority under the serving version; both make workers re-list the tasks.
TASK_EVENTS = {"TASKS_CREATED", "TASKS_DELETED"}

router = APIRouter()


class SetupRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    project: str | int
    schema_: str = Field(alias="schema")
    hostname: str | None = None
    access_token: str | None = None
    extra_params: Any = None


class PredictTask(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: int = Field(ge=1, le=MAX_ID)
    data: dict[str, Any] = Field(default_factory=dict)
    project: int | None = None


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    tasks: list[PredictTask]
    project: str | int | None = None
    label_config: str | None = None
    params: dict[str, Any] | None = None


class WebhookEvent(BaseModel):
    model_config = ConfigDict(extra="allow")
    action: str = Field(min_length=1)
    project: dict[str, Any] | int | str | None = None
    annotation: dict[str, Any] | None = None
    task: dict[str, Any] | None = None


def _config(text: str):
    try:
        return parse_label_config(text)
    except UnsupportedConfig as exc:
        raise HTTPException(422, f"unsupported label config: {exc}") from None


@router.get("/health")
def health(settings: SettingsDep, metrics: MetricsDep) -> dict:
    metrics.requests.labels("health").inc()
    return {"status": "UP", "model_class": MODEL_CLASS, "backbone": settings.backbone}


@router.post("/setup")
def setup(body: SetupRequest, rt: RuntimeDep, metrics: MetricsDep) -> dict:
    metrics.requests.labels("setup").inc()
    project = project_id(body.project)
    _config(body.schema_)
    remember(rt, project)
    return {"model_version": rt.serving_version(project)}


@router.post("/predict")
def predict(body: PredictRequest, rt: RuntimeDep, metrics: MetricsDep) -> dict:
    metrics.requests.labels("predict").inc()
    start = time.perf_counter()
    source = body.project if body.project is not None else (
        body.tasks[0].project if body.tasks else None
    )
    if not body.tasks:
        return {"results": []}
    project = project_id(source)
    if not body.label_config:
        raise HTTPException(422, "label_config is required")
    config = _config(body.label_config)
    results = rt.predict(project, config, [t.model_dump() for t in body.tasks])
    metrics.predictions.inc(len(results))
    metrics.latency.observe(time.perf_counter() - start)
    return {"results": results}


@router.post("/webhook")
def webhook(event: WebhookEvent, settings: SettingsDep, rt: RuntimeDep, redis: RedisDep,
            metrics: MetricsDep) -> JSONResponse:
    metrics.requests.labels("webhook").inc()
    if event.action not in RETRAIN_EVENTS and event.action not in TASK_EVENTS:
        metrics.webhooks.labels("ignored").inc()
        return JSONResponse({"status": "ignored", "action": event.action})
    source = event.project
    if source is None and event.task:
        source = event.task.get("project")
    if source is None and event.annotation:
        source = event.annotation.get("project")
    project = project_id(source)
    try:
        if event.action in TASK_EVENTS:
            ProjectQueue(redis, project).note_tasks_changed()  # workers list the tasks afresh
        if event.action == "TASKS_DELETED":
            outcome = {"status": "noted", "project": project}
        elif event.action == "TASKS_CREATED":
            outcome = enqueue(redis, settings, "prioritize", project, event.action)
        else:
            outcome = enqueue_retrain(redis, settings, project, event.action)
            if event.action == "ANNOTATION_CREATED":
                topup_when_low(redis, settings, rt, project)
    except RedisError as exc:
        metrics.webhooks.labels("redis_down").inc()
        remember(rt, project)  # reconciliation retrains it once Redis is back
        log.error("webhook %s for project %s not queued (is Redis up at REDIS_URL?): %s",
                  event.action, project, exc)
        return JSONResponse(
            {"detail": "job queue unavailable, retry later", "project": project},
            status_code=503,
        )
    metrics.webhooks.labels(outcome["status"]).inc()
    return JSONResponse(outcome)


def topup_when_low(redis: RedisDep, settings: SettingsDep, rt: RuntimeDep, project: int) -> None:
    """An annotation took a task of the head; below half of QUEUE_HEAD left, queue a top-up so
    the label stream keeps following the order until the next retrain lands. The head of a
    serving version not known (Redis restarted without its data) is rebuilt by a top-up too."""
    queue = ProjectQueue(redis, project)
    if queue.head() is None:
        if rt.versions(project).serving() is None:
            return  # no model yet: nothing was ranked

        enqueue(redis, settings, "topup", project, "the head of the order is not known")
        return
    left = queue.take_from_head()
    if left is not None and left <= settings.queue_head // 2:
        enqueue(redis, settings, "topup", project, f"{max(left, 0)} tasks left in the head")


@router.get("/metrics")
def metrics(app_metrics: MetricsDep) -> Response:
    return Response(generate_latest(app_metrics.registry), media_type=CONTENT_TYPE_LATEST)


@router.get("/versions")
def versions(settings: SettingsDep, rt: RuntimeDep, project: str | None = None) -> dict:
    ids = [project_id(project)] if project else projects(settings.model_dir)
    names = [name_of(name, store.meta(name)) for store in map(rt.versions, ids)
             for name in store.names()]
    untrained = untrained_name(settings)
    return {"versions": names or [untrained], "model_version": names[-1] if names else untrained}
