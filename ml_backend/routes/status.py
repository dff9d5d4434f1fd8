"""What people open: the status page at `/`, and each project's state as JSON and a curve."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, Response

from ml_backend import status_page
from ml_backend.routes.deps import ProjectPath, RedisDep, RuntimeDep, SettingsDep
from ml_backend.status import project_status
from model.versions import projects

router = APIRouter()


@router.get("/status/{project}")
def status(project: ProjectPath, rt: RuntimeDep, redis: RedisDep) -> dict:
    return project_status(rt, redis, project)


@router.get("/status/{project}/curve.png")
def curve(project: ProjectPath, rt: RuntimeDep, redis: RedisDep) -> Response:
    png = status_page.learning_curve_png(project_status(rt, redis, project)["versions"])
    return Response(png, media_type="image/png", headers={"Cache-Control": "no-store"})


@router.get("/", response_class=HTMLResponse)
def index(settings: SettingsDep, rt: RuntimeDep, redis: RedisDep) -> str:
    return status_page.render([project_status(rt, redis, p)
                               for p in projects(settings.model_dir)])
