"""HTTP server speaking Label Studio's ML backend protocol (1.23).

`/setup` and `/health` are called before every predict round, so they only read small files.
`/webhook` is called inside the annotator's submit request with a 1 s timeout: it only enqueues.
"""

from __future__ import annotations

import logging
import time
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Path, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client import generate_latest
from pydantic import BaseModel, ConfigDict, Field
from redis import Redis
from redis.exceptions import RedisError

from ml_backend import jobs, status_page
from ml_backend.label_config import UnsupportedConfig, parse_label_config
from ml_backend.runtime import Runtime
from ml_backend.security import BodyLimit, authorizer
from ml_backend.settings import Settings
from ml_backend.status import project_status as status_of
from model.versions import UNTRAINED, projects

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


MAX_ID = 2**63 - 1  # Label Studio's ids are database integers
ProjectPath = Annotated[int, Path(ge=1, le=MAX_ID)]


def project_id(value: Any) -> int:
    """Label Studio sends `"<id>.<created timestamp>"`, an int, or a project object."""
    raw = value
    if isinstance(value, dict):
        value = value.get("id")
    if isinstance(value, bool):
        value = None
    if isinstance(value, str):
        head = value.split(".", 1)[0]
        value = int(head) if head.isascii() and head.isdigit() and len(head) <= 19 else None
    if isinstance(value, int) and 0 < value <= MAX_ID:
        return value
    shown = "an out-of-range number" if isinstance(raw, int) else repr(raw)[:60]
    raise HTTPException(422, f"cannot read a project id from {shown}")


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


def create_app(settings: Settings, runtime: Runtime | None = None) -> FastAPI:
    """The ASGI app; tests pass their own settings (and may pass a prepared runtime)."""
    rt = runtime or Runtime(settings)
    # Every route, the schema included, sits behind the optional auth (security.py).
    app = FastAPI(
        title="Active-learning backend for Label Studio", version="0.1.0",
        dependencies=[Depends(authorizer(settings))],
        openapi_url=None, docs_url=None, redoc_url=None,
    )
    app.add_middleware(BodyLimit, max_bytes=settings.max_request_bytes)
    app.state.runtime = rt
    registry = CollectorRegistry()
    requests = Counter("al_requests", "Requests by endpoint", ["endpoint"], registry=registry)
    predictions = Counter("al_predictions", "Tasks predicted", registry=registry)
    enqueued = Counter("al_webhooks", "Webhooks by outcome", ["outcome"], registry=registry)
    latency = Histogram("al_predict_seconds", "Time to answer /predict", registry=registry)
    redis_client: dict[str, Redis] = {}

    def redis() -> Redis:
        if "conn" not in redis_client:
            redis_client["conn"] = Redis.from_url(
                settings.redis_url, socket_timeout=0.5, socket_connect_timeout=0.5
            )
        return redis_client["conn"]

    def remember(project: int) -> None:
        """A folder for the project: the worker's reconciliation checks every project with one."""
        rt.versions(project).root.mkdir(parents=True, exist_ok=True)

    @app.exception_handler(HTTPException)
    async def _http_error(_: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code,
                            headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in exc.errors()
        )
        return JSONResponse({"detail": f"invalid request: {problems}"}, status_code=422)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error")
        return JSONResponse({"detail": f"internal error: {type(exc).__name__}"}, status_code=500)

    @app.get("/openapi.json", include_in_schema=False)
    def openapi() -> dict:
        return app.openapi()

    @app.get("/health")
    def health() -> dict:
        requests.labels("health").inc()
        return {"status": "UP", "model_class": MODEL_CLASS, "backbone": settings.backbone}

    @app.post("/setup")
    def setup(body: SetupRequest) -> dict:
        requests.labels("setup").inc()
        project = project_id(body.project)
        try:
            parse_label_config(body.schema_)
        except UnsupportedConfig as exc:
            raise HTTPException(422, f"unsupported label config: {exc}") from None
        remember(project)
        return {"model_version": rt.serving_version(project)}

    @app.post("/predict")
    def predict(body: PredictRequest) -> dict:
        requests.labels("predict").inc()
        start = time.perf_counter()
        source = body.project if body.project is not None else (
            body.tasks[0].project if body.tasks else None
        )
        if not body.tasks:
            return {"results": []}
        project = project_id(source)
        if not body.label_config:
            raise HTTPException(422, "label_config is required")
        try:
            config = parse_label_config(body.label_config)
        except UnsupportedConfig as exc:
            raise HTTPException(422, f"unsupported label config: {exc}") from None
        results = rt.predict(project, config, [t.model_dump() for t in body.tasks])
        predictions.inc(len(results))
        latency.observe(time.perf_counter() - start)
        return {"results": results}

    @app.post("/webhook")
    def webhook(event: WebhookEvent) -> JSONResponse:
        requests.labels("webhook").inc()
        if event.action not in RETRAIN_EVENTS and event.action not in TASK_EVENTS:
            enqueued.labels("ignored").inc()
            return JSONResponse({"status": "ignored", "action": event.action})
        source = event.project
        if source is None and event.task:
            source = event.task.get("project")
        if source is None and event.annotation:
            source = event.annotation.get("project")
        project = project_id(source)
        try:
            if event.action in TASK_EVENTS:
                jobs.note_tasks_changed(redis(), project)  # workers list the tasks afresh
            if event.action == "TASKS_DELETED":
                outcome = {"status": "noted", "project": project}
            elif event.action == "TASKS_CREATED":
                outcome = jobs.enqueue(redis(), settings, "prioritize", project, event.action)
            else:
                outcome = jobs.enqueue_retrain(redis(), settings, project, event.action)
        except RedisError as exc:
            enqueued.labels("redis_down").inc()
            remember(project)  # reconciliation retrains it once Redis is back
            log.error("webhook %s for project %s not queued: %s", event.action, project, exc)
            return JSONResponse(
                {"detail": "job queue unavailable, retry later", "project": project},
                status_code=503,
            )
        enqueued.labels(outcome["status"]).inc()
        return JSONResponse(outcome)

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/versions")
    def versions(project: str | None = None) -> dict:
        ids = [project_id(project)] if project else projects(settings.model_dir)
        names = [name for p in ids for name in rt.versions(p).names()]
        return {"versions": names or [UNTRAINED], "model_version": names[-1] if names else UNTRAINED}

    def project_status(project: int) -> dict:
        return status_of(rt, redis, project)

    @app.get("/status/{project}")
    def status(project: ProjectPath) -> dict:
        return project_status(project)

    @app.get("/status/{project}/curve.png")
    def curve(project: ProjectPath) -> Response:
        png = status_page.learning_curve_png(project_status(project)["versions"])
        return Response(png, media_type="image/png", headers={"Cache-Control": "no-store"})

    @app.get("/", response_class=HTMLResponse)
    def index() -> str:
        return status_page.render([project_status(p) for p in projects(settings.model_dir)])

    return app
