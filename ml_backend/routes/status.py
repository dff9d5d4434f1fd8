"""What people open: the status page at `/`, and each project's state as JSON and a curve."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, Response
from redis import Redis
from redis.exceptions import RedisError
from rq import Queue

from ml_backend import status_page
from ml_backend.queue_state import ProjectQueue
from ml_backend.routes.deps import ProjectPath, RedisDep, RuntimeDep, SettingsDep
from ml_backend.runtime import Runtime
from ml_backend.settings import Settings
from model.versions import projects

router = APIRouter()


def project_status(settings: Settings, rt: Runtime, conn: Redis, project: int) -> dict:
    store = rt.versions(project)
    serving = store.serving()
    versions = []
    for name in store.names():
        meta = store.meta(name)
        versions.append({
            "version": name,
            "serving": name == serving,
            "n_labels": meta.get("n_labels"),
            "metrics": meta.get("metrics"),
            "promotion": meta.get("promotion"),
            "created_at": meta.get("created_at"),
            "train_seconds": meta.get("train_seconds"),
            "skipped": meta.get("skipped"),
        })
    try:
        jobs = ProjectQueue(conn, project)
        queue_state = jobs.state() | {
            "queued_jobs": Queue(settings.queue_name, connection=conn).count,
        }
        history = jobs.history()
    except RedisError as exc:
        queue_state, history = {"error": f"redis unavailable: {exc}"}, []
    return {
        "project": project,
        "serving_version": serving,
        "versions": versions,
        "labels": versions[-1]["n_labels"] if versions else 0,
        "queue": queue_state,
        "jobs": history,
    }


@router.get("/status/{project}")
def status(project: ProjectPath, settings: SettingsDep, rt: RuntimeDep, redis: RedisDep) -> dict:
    return project_status(settings, rt, redis, project)


@router.get("/status/{project}/curve.png")
def curve(project: ProjectPath, settings: SettingsDep, rt: RuntimeDep,
          redis: RedisDep) -> Response:
    png = status_page.learning_curve_png(project_status(settings, rt, redis, project)["versions"])
    return Response(png, media_type="image/png", headers={"Cache-Control": "no-store"})


@router.get("/", response_class=HTMLResponse)
def index(settings: SettingsDep, rt: RuntimeDep, redis: RedisDep) -> str:
    return status_page.render([project_status(settings, rt, redis, p)
                               for p in projects(settings.model_dir)])
