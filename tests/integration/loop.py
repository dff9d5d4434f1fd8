"""Steps of the active-learning loop as seen from outside: connect, wait for training, predict."""

from __future__ import annotations

import time
from typing import Any

from .backend import Backend
from .dataset import LSProject
from .procs import wait_until

TRAIN_TIMEOUT = 180.0


def connect_backend(project: LSProject, backend: Backend, title: str = "al-backend") -> dict:
    """`POST /api/ml/`: LS calls /health and /setup and adds a webhook to <url>/webhook."""
    return project.api.post(
        "/api/ml/", json={"url": backend.url, "project": project.id, "title": title}
    )


def project_webhooks(project: LSProject) -> list[dict[str, Any]]:
    return project.api.get("/api/webhooks/", params={"project": project.id})


def wait_for_idle_version(
    backend: Backend, project_id: int, n_labels: int, timeout: float = TRAIN_TIMEOUT
) -> dict[str, Any]:
    """Wait until the serving version was trained on `n_labels` labels and no retrain is left.

    Fails at once, with the backend's logs, when a retrain job records a failure.
    """

    def check() -> dict[str, Any] | None:
        status = backend.status(project_id)
        failed = [j for j in status.get("jobs", []) if j.get("status") == "failed"]
        if failed:
            raise AssertionError(f"retrain failed: {failed}\n{backend.logs(80)}")
        queue = status.get("queue", {})
        versions = status.get("versions") or []
        serving = [v for v in versions if v.get("serving")]
        idle = not (
            queue.get("retrain_pending") or queue.get("retrain_running") or queue.get("queued_jobs")
        )
        if idle and serving and serving[-1].get("n_labels") == n_labels:
            return status
        check.last = status  # type: ignore[attr-defined]
        return None

    check.last = None  # type: ignore[attr-defined]
    try:
        return wait_until(check, timeout, 1.0, f"a version trained on {n_labels} labels")
    except TimeoutError as exc:
        raise AssertionError(
            f"{exc}\nlast /status/{project_id}: {check.last}\n{backend.logs(80)}"  # type: ignore[attr-defined]
        ) from None


def retrieve_predictions(project: LSProject, task_ids: list[int]) -> Any:
    """The Data Manager action "Retrieve predictions": one batched /predict call from LS."""
    return project.api.post(
        "/api/dm/actions",
        params={"id": "retrieve_tasks_predictions", "project": project.id},
        json={"selectedItems": {"all": False, "included": task_ids}},
    )


def timed(fn, *args, **kwargs) -> tuple[Any, float]:
    start = time.perf_counter()
    value = fn(*args, **kwargs)
    return value, time.perf_counter() - start
