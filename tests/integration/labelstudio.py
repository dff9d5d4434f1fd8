"""Start a real Label Studio 1.23 (from its own venv) and talk to its REST API."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tools.demo import label_studio_env

from .procs import REPO_ROOT, ManagedProcess, free_port, health_is_up, wait_until

LS_BIN = REPO_ROOT / ".venv-ls" / "bin" / "label-studio"
ADMIN_EMAIL = "admin@example.com"
ADMIN_PASSWORD = "integration-tests-pw-123"
# Legacy token (any string > 5 chars is accepted; 40 hex chars like LS's own tokens).
ADMIN_TOKEN = "0123456789abcdef0123456789abcdef01234567"
FIRST_START_TIMEOUT = 300.0  # migrations: 45-100 s on 2 cores
RESTART_TIMEOUT = 90.0


def require_label_studio() -> Path:
    if not os.access(LS_BIN, os.X_OK):
        raise RuntimeError(
            f"Label Studio is not installed at {LS_BIN}: run `make labelstudio` "
            "(integration tests need a real Label Studio 1.23.2 in .venv-ls)"
        )
    return LS_BIN




class PortTaken(RuntimeError):
    pass


def _start_once(
    ls_bin: Path, port: int, data_dir: Path, images_root: Path, log_path: Path, timeout: float
) -> ManagedProcess:
    argv = [
        str(ls_bin), "start", "--no-browser",
        "--internal-host", "127.0.0.1", "-p", str(port),
        "--username", ADMIN_EMAIL, "--password", ADMIN_PASSWORD,
        "--user-token", ADMIN_TOKEN, "--enable-legacy-api-token",
    ]  # fmt: skip
    env = label_studio_env(data_dir, images_root)
    proc = ManagedProcess("label-studio", argv, log_path, env=env, cwd=data_dir)
    url = f"http://127.0.0.1:{port}"
    banner = f"127.0.0.1:{port}/"

    def bound() -> str | None:
        log = proc.tail(400)
        return "moved" if "is in use" in log else ("ours" if banner in log else None)

    try:
        wait_until(lambda: health_is_up(url), timeout, 0.5, f"{url}/health == UP", proc)
        # Tie the answer to our process: runserver logs the address it bound.
        if wait_until(bound, 10, 0.2, "runserver banner", proc) == "moved":
            raise PortTaken(f"port {port} was taken; Label Studio moved to another one")
    except BaseException:
        proc.stop()
        raise
    return proc


def start_label_studio(
    data_dir: Path, images_root: Path, log_path: Path, timeout: float, attempts: int = 3
) -> tuple[ManagedProcess, str]:
    """Start LS on a fresh free port; return (process, base url) once /health is UP on that port.

    LS silently moves to the next port when the chosen one is busy, so a start whose log says so
    is stopped and retried on another port.
    """
    ls_bin = require_label_studio()
    data_dir.mkdir(parents=True, exist_ok=True)
    for attempt in range(attempts):
        port = free_port()
        try:
            proc = _start_once(ls_bin, port, data_dir, images_root, log_path, timeout)
        except PortTaken:
            if attempt == attempts - 1:
                raise
            continue
        except (RuntimeError, TimeoutError) as exc:
            raise RuntimeError(f"Label Studio did not start:\n{exc}") from None
        return proc, f"http://127.0.0.1:{port}"
    raise AssertionError("unreachable")


class LSApiError(AssertionError):
    pass


class LSApi:
    """Thin httpx wrapper over LS's REST API with the admin's legacy token; errors show bodies."""

    def __init__(self, url: str, token: str = ADMIN_TOKEN, timeout: float = 120.0):
        self.url = url
        self.http = httpx.Client(
            base_url=url, headers={"Authorization": f"Token {token}"}, timeout=timeout
        )

    def request(self, method: str, path: str, expect: tuple[int, ...] = (200, 201, 204), **kw):
        r = self.http.request(method, path, **kw)
        if r.status_code not in expect:
            raise LSApiError(f"{method} {path} -> {r.status_code}: {r.text[:2000]}")
        if r.status_code == 204 or not r.content:
            return None
        ctype = r.headers.get("content-type", "")
        return r.json() if "json" in ctype else r

    def get(self, path: str, **kw):
        return self.request("GET", path, **kw)

    def post(self, path: str, **kw):
        return self.request("POST", path, **kw)

    def patch(self, path: str, **kw):
        return self.request("PATCH", path, **kw)

    def delete(self, path: str, **kw):
        return self.request("DELETE", path, **kw)

    def close(self) -> None:
        self.http.close()

    # --- project-level conveniences -------------------------------------------------------

    def list_tasks(self, project_id: int) -> list[dict[str, Any]]:
        tasks: list[dict[str, Any]] = []
        page = 1
        while True:
            r = self.http.get(
                "/api/tasks/", params={"project": project_id, "page": page, "page_size": 100}
            )
            if r.status_code == 404:  # past the last page
                break
            if r.status_code != 200:
                raise LSApiError(f"GET /api/tasks/ -> {r.status_code}: {r.text[:2000]}")
            body = r.json()
            batch = body["tasks"] if isinstance(body, dict) else body
            tasks.extend(batch)
            total = body.get("total") if isinstance(body, dict) else None
            if not batch or (total is not None and len(tasks) >= total):
                break
            page += 1
        return tasks

    def annotate(self, task_id: int, choice: str | None, *, was_cancelled: bool = False) -> dict:
        """Submit (or skip) an annotation as the admin: LS fires the webhook inside this call."""
        result = [] if choice is None else [choice_result(choice)]
        body: dict[str, Any] = {"result": result}
        if was_cancelled:
            body["was_cancelled"] = True
        return self.post(f"/api/tasks/{task_id}/annotations/", json=body)

    def predictions(self, task_id: int) -> list[dict[str, Any]]:
        return self.get("/api/predictions/", params={"task": task_id})

    def project_predictions(self, project_id: int) -> list[dict[str, Any]]:
        """Every prediction of the project, of every model version."""
        return self.get("/api/predictions/", params={"project": project_id})

    def next_task(self, project_id: int) -> dict[str, Any] | None:
        """What "Label All Tasks" serves this user next (`GET /api/projects/{id}/next/`), now
        locked for them; None when nothing is left for them."""
        path = f"/api/projects/{project_id}/next/"
        r = self.http.get(path)
        if r.status_code == 404:
            return None
        if r.status_code != 200:
            raise LSApiError(f"GET {path} -> {r.status_code}: {r.text[:2000]}")
        return r.json()

    def import_tasks(self, project_id: int, tasks: list[dict[str, Any]]) -> list[int]:
        """`POST /api/projects/{id}/import` (LS sends TASKS_CREATED); the new tasks' ids."""
        body = self.post(
            f"/api/projects/{project_id}/import", params={"return_task_ids": "true"}, json=tasks
        )
        return list(body["task_ids"])


def sign_up(admin: LSApi, email: str, password: str) -> str:
    """Create a user in the admin's organization through the invite link, as a person would
    (LS 1.23 community has no API that returns another user's token); their legacy token."""
    invite = admin.get("/api/invite")
    with httpx.Client(base_url=admin.url, timeout=admin.http.timeout) as browser:
        browser.get("/user/signup/", params={"token": invite["token"]})  # sets the CSRF cookie
        r = browser.post(
            "/user/signup/",
            params={"token": invite["token"]},
            data={"email": email, "password": password,
                  "csrfmiddlewaretoken": browser.cookies.get("csrftoken", "")},
            headers={"Referer": f"{admin.url}/user/signup/"},
        )  # fmt: skip
        if r.status_code != 302:
            raise LSApiError(f"sign-up of {email} -> {r.status_code}: {r.text[:2000]}")
        r = browser.get("/api/current-user/token")  # the session the sign-up logged in
        if r.status_code != 200:
            raise LSApiError(f"token of {email} -> {r.status_code}: {r.text[:2000]}")
        return r.json()["token"]


def choice_result(choice: str, from_name: str = "label", to_name: str = "image") -> dict:
    return {
        "from_name": from_name,
        "to_name": to_name,
        "type": "choices",
        "value": {"choices": [choice]},
    }


@dataclass
class LabelStudioServer:
    """A running Label Studio: what tests get from the `label_studio` fixture."""

    url: str
    token: str
    images_root: Path
    data_dir: Path
    log_path: Path
    process: ManagedProcess
    api: LSApi
    client: Any  # label_studio_sdk.LabelStudio
    extra: dict[str, Any] = field(default_factory=dict)

    def log_tail(self, lines: int = 80) -> str:
        return self.process.tail(lines)
