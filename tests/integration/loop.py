"""Steps of the active-learning loop as seen from outside: connect, wait for training, predict."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from typing import Any

from .backend import Backend, backend_env
from .dataset import LSProject
from .procs import REPO_ROOT, wait_until

TRAIN_TIMEOUT = 180.0
# The backend's prediction versions in Label Studio are named apart (VERSION_PREFIX).
UNTRAINED = "al-untrained"
SEED_TIMEOUT = 300.0  # a fresh process imports torch and embeds every image


def served_name(status: dict[str, Any]) -> str:
    """The Label Studio name of the version /status says serves (`v3` -> `al-v3`)."""
    return "al-" + status["serving_version"]


def connect_backend(project: LSProject, backend: Backend, title: str = "al-backend") -> dict:
    """`POST /api/ml/`: LS calls /health and /setup and adds a webhook to <url>/webhook."""
    return project.api.post(
        "/api/ml/", json={"url": backend.url, "project": project.id, "title": title}
    )


def project_webhooks(project: LSProject) -> list[dict[str, Any]]:
    return project.api.get("/api/webhooks/", params={"project": project.id})


def retrains(status: dict[str, Any]) -> list[dict[str, Any]]:
    """The retrain entries of /status's job history (other job kinds left out)."""
    return [j for j in status.get("jobs", []) if j.get("kind", "retrain") == "retrain"]


def queue_busy(status: dict[str, Any]) -> bool:
    """Whether /status shows any job pending, queued or running for the project.

    Reads every flag and count under `queue` (nested ones too) rather than fixed key names, so
    a renamed flag cannot make a busy backend look idle; only `summary`, the same state in words
    for people, is passed over. A Redis error counts as busy.
    """
    queue = status.get("queue")
    if not isinstance(queue, dict) or "error" in queue:
        return True

    def busy(value: Any) -> bool:
        return any(map(busy, value.values())) if isinstance(value, dict) else bool(value)

    return any(busy(v) for k, v in queue.items() if k != "summary")


def wait_for_idle_version(
    backend: Backend,
    project_id: int,
    n_labels: int,
    timeout: float = TRAIN_TIMEOUT,
    min_retrains: int = 1,
) -> dict[str, Any]:
    """Wait until the newest version (promoted or not) was trained on `n_labels` labels, at
    least `min_retrains` retrains are recorded, and nothing is pending, queued or running for
    the project. Whether that version serves is for the caller to check.

    Fails at once, with the backend's logs, when a retrain job records a failure.
    """
    last: dict[str, Any] = {}

    def check() -> dict[str, Any] | None:
        status = backend.status(project_id)
        last["status"] = status
        failed = [j for j in status.get("jobs", []) if j.get("status") == "failed"]
        if failed:
            raise AssertionError(f"job failed: {failed}\n{backend.logs(80)}")
        versions = status.get("versions") or []
        if (
            not queue_busy(status)
            and len(retrains(status)) >= min_retrains
            and versions
            and versions[-1].get("n_labels") == n_labels
        ):
            return status
        return None

    try:
        return wait_until(check, timeout, 1.0, f"a version trained on {n_labels} labels")
    except TimeoutError as exc:
        raise AssertionError(
            f"{exc}\nlast /status/{project_id}: {last.get('status')}\n{backend.logs(80)}"
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


def run_seed(
    project: LSProject, backend: Backend, ls_url: str, token: str, size: int,
    method: str = "auto", timeout: float = SEED_TIMEOUT,
) -> list[int]:
    """`python -m ml_backend seed` as a user runs it, with the backend's settings (same model
    dir, so the worker reuses its embeddings); the chosen tasks, first to be served first."""
    env = backend_env(ls_url, token, backend.redis_url, backend.model_dir)
    argv = [sys.executable, "-m", "ml_backend", "seed", "--project", str(project.id),
            "--size", str(size), "--method", method]  # fmt: skip
    done = subprocess.run(argv, env=env, cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=timeout, check=False)  # fmt: skip
    if done.returncode != 0:
        raise AssertionError(f"seed exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
    chosen = [int(m) for m in re.findall(r"^\s*\d+\. task (\d+)\s", done.stdout, re.MULTILINE)]
    if len(chosen) != size:
        raise AssertionError(f"seed printed {len(chosen)} tasks, not {size}:\n{done.stdout}")
    return chosen


def served_order(project: LSProject, version: str) -> list[int]:
    """The project's tasks with a prediction of `version`, lowest score (served first) first."""
    preds = [p for p in project.api.project_predictions(project.id)
             if p["model_version"] == version]  # fmt: skip
    return [p["task"] for p in sorted(preds, key=lambda p: (p["score"], p["task"]))]
