"""Run the backend's HTTP server and RQ worker as real subprocesses."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from .procs import REPO_ROOT, ManagedProcess, free_port, health_is_up, wait_until

BACKEND_START_TIMEOUT = 120.0  # importing torch on 2 cores takes a while


def backend_env(ls_url: str, token: str, redis_url: str, model_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        LABEL_STUDIO_URL=ls_url,
        LABEL_STUDIO_API_KEY=token,
        REDIS_URL=redis_url,
        MODEL_DIR=str(model_dir),
        BACKBONE="resnet18",
        WEIGHTS="none",
        LOG_LEVEL="INFO",
        PYTHONUNBUFFERED="1",
    )
    return env


class BackendApi:
    """The backend's HTTP answers the tests read; needs an `http` client on the backend's URL."""

    http: httpx.Client

    def status(self, project_id: int) -> dict[str, Any]:
        r = self.http.get(f"/status/{project_id}")
        r.raise_for_status()
        return r.json()

    def setup_version(self, project_id: int, schema: str) -> str:
        r = self.http.post("/setup", json={"project": f"{project_id}.0", "schema": schema})
        r.raise_for_status()
        return r.json()["model_version"]


@dataclass
class Backend(BackendApi):
    url: str
    server: ManagedProcess
    worker: ManagedProcess
    model_dir: Path
    redis_url: str
    http: httpx.Client

    def logs(self, lines: int = 60) -> str:
        return (
            f"===== backend server ({self.server.log_path}) =====\n{self.server.tail(lines)}\n"
            f"===== backend worker ({self.worker.log_path}) =====\n{self.worker.tail(lines)}"
        )

    def stop(self) -> None:
        self.http.close()
        self.worker.stop()
        self.server.stop()


def start_backend(ls_url: str, token: str, redis_url: str, workdir: Path) -> Backend:
    model_dir = workdir / "models"
    model_dir.mkdir(parents=True, exist_ok=True)
    env = backend_env(ls_url, token, redis_url, model_dir)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = ManagedProcess(
        "backend server",
        [sys.executable, "-m", "ml_backend", "serve", "--host", "127.0.0.1", "--port", str(port)],
        workdir / "backend-server.log",
        env=env,
        cwd=REPO_ROOT,
    )
    worker = ManagedProcess(
        "backend worker",
        [sys.executable, "-m", "ml_backend", "worker"],
        workdir / "backend-worker.log",
        env=env,
        cwd=REPO_ROOT,
    )
    try:
        wait_until(lambda: health_is_up(url), BACKEND_START_TIMEOUT, 0.5, f"{url}/health", server)
        if not worker.alive():
            raise RuntimeError(worker.describe_failure("exited right after start"))
    except BaseException:
        worker.stop()
        server.stop()
        raise
    return Backend(
        url, server, worker, model_dir, redis_url, httpx.Client(base_url=url, timeout=30)
    )
