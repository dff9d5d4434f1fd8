"""Everything the backend asks of Label Studio, in one place.

Label Studio is the source of truth for annotations: a retrain always reads them from here, never
from webhook payloads. Both legacy tokens and personal access tokens work, because the SDK's own
client decides the auth header (and refreshes a personal access token's short-lived JWT).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Hashable, Iterator
from contextlib import ExitStack
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

import httpx
from label_studio_sdk import LabelStudio
from label_studio_sdk.core.api_error import ApiError

from ml_backend.annotation_cache import AnnotatedTasks, Counts, read_began, refresh
from ml_backend.image_hosts import allowed_url, download, origins
from ml_backend.settings import Settings

log = logging.getLogger(__name__)

# Label Studio 1.23 has no maximum page size, and every page of /api/tasks/ re-counts the
# annotations and predictions of the whole listing: a few large pages beat many small ones.
TASK_PAGE_SIZE = 1000
# Predictions per import request. Label Studio 1.23 re-counts the predictions of every task of
# the project after each request, so one request of 5,000 is about 4x faster than five of 1,000.
PREDICTIONS_PER_REQUEST = 10_000
LONG_TIMEOUT = 600  # seconds for a listing page or an import on a busy Label Studio
EXPORT_IDS = 500
# Pauses before trying a prediction's deletion again after a 5xx (SQLite: "database is locked").
DELETE_PAUSES = (0.5, 1.0, 2.0, 4.0, 8.0)

# What to do about an answer, by status code.
HINTS = {
    401: "check LABEL_STUDIO_API_KEY (a legacy token or a personal access token)",
    403: "the user of LABEL_STUDIO_API_KEY may not do this in the project",
    404: "check the project id, and LABEL_STUDIO_URL",
}


class LabelStudioError(RuntimeError):
    """Label Studio answered a request with an error status (`status_code`)."""

    def __init__(self, method: str, path: str, status_code: int, text: str = ""):
        self.method, self.path, self.status_code = method, path, status_code
        hint = HINTS.get(status_code, "Label Studio is busy or failing: try again later"
                         if status_code >= 500 else "")
        super().__init__(f"{method} {path} answered {status_code}: {text[:200]}"
                         + (f" ({hint})" if hint else ""))


class LabelStudioAPI(Protocol):
    """What the loop asks of Label Studio: `LabelStudioClient`, or the unit tests' stand-in."""

    def project(self, project: int) -> Any: ...
    def label_config(self, project: int) -> str: ...
    def labelling_tasks(self, project: int, *, token: Hashable | None = None,
                        counts: Counts | None = None) -> list[dict]: ...
    def tasks_lacking(self, project: int, version: str) -> set[int]: ...
    def forget_tasks(self, project: int) -> None: ...
    def fetch_image(self, url: str) -> bytes: ...
    def import_predictions(self, project: int, predictions: list[dict],
                           chunk: int = ...) -> int: ...
    def serve_by_priority(self, project: int, version: str) -> None: ...
    def model_versions(self, project: int) -> dict[str, int]: ...
    def delete_model_version(self, project: int, version: str, *,
                             more: Callable[[], bool] | None = None) -> int: ...
    def ml_backends(self, project: int) -> list[dict]: ...
    def retitle_backend(self, backend: dict, title: str) -> None: ...
    def set_webhook_headers(self, project: int, urls: set[str],
                            headers: dict[str, str]) -> int: ...


class LabelStudioClient:
    """`http`: the client for the requests the SDK does not make (tests pass a mock transport's)."""

    def __init__(self, settings: Settings, http: httpx.Client | None = None):
        self.settings = settings
        self.url = settings.label_studio_url
        self.sdk = LabelStudio(
            base_url=self.url,
            api_key=settings.label_studio_api_key.get_secret_value(),
            timeout=60,
        )
        self._http = http or httpx.Client(timeout=settings.image_timeout, follow_redirects=False)
        self._allowed_origins = origins(self.url).union(*map(origins, settings.image_hosts))
        # project -> (token, monotonic time listed, [{"id", "data"}]): see `labelling_tasks`.
        self._listings: dict[int, tuple[Hashable, float, list[dict]]] = {}
        self._annotated: dict[int, AnnotatedTasks] = {}  # project -> see `labelling_tasks`
        # (project, version) -> ids of its predictions still to delete: see delete_model_version.
        self._doomed: dict[tuple[int, str], list[int]] = {}

    def close(self) -> None:
        self._http.close()

    def _headers(self) -> dict[str, str]:
        if not self.settings.label_studio_api_key.get_secret_value():
            return {}  # the SDK would send an invalid "Token " header
        return self.sdk._client_wrapper.get_headers()

    # -- projects and tasks -------------------------------------------------------------
    def project(self, project: int):
        """The project as Label Studio describes it (`label_config`, `task_number`, ...); the
        first request of every job, so a wrong key or project id is said here."""
        try:
            return self.sdk.projects.get(id=project)
        except ApiError as exc:
            raise LabelStudioError("GET", f"/api/projects/{project}/", exc.status_code or 0,
                                   str(exc.body)) from None

    def label_config(self, project: int) -> str:
        return self.project(project).label_config or ""

    def tasks(self, project: int) -> Iterator[dict]:
        """Every task of `project` as a plain dict with its annotations and predictions."""
        yield from self.list_tasks(project, fields="all")

    def annotated_tasks(self, project: int,
                        ids: list[int] | None = None) -> tuple[list[dict], datetime]:
        """Every task with an annotation (skipped included), or those of `ids` that have one,
        in full, and the time the read began: Label Studio's export of finished tasks, twice as
        fast as the Data Manager's listing. Its task data is as imported (cloud URIs unresolved);
        it names annotators by id only: with ANNOTATORS set, `completed_by` becomes {id, email}.
        """
        tasks, began = [], None  # ids travel in the query string, EXPORT_IDS at a time
        for start in range(0, len(ids), EXPORT_IDS) if ids is not None else [None]:
            chunk = {} if start is None else {"ids[]": ids[start : start + EXPORT_IDS]}
            sent = time.monotonic()
            resp = self._request("GET", f"/api/projects/{project}/export",
                                 params={"exportType": "JSON", "download_all_tasks": "false",
                                         **chunk}, timeout=LONG_TIMEOUT)
            began = began or read_began(resp.headers.get("date"), time.monotonic() - sent)
            tasks += resp.json()
        if self.settings.annotators and tasks:
            emails = {u.id: u.email or "" for u in self.sdk.users.list()}
            for annotation in (a for t in tasks for a in t.get("annotations") or []):
                who = annotation.get("completed_by")
                if isinstance(who, int):
                    annotation["completed_by"] = {"id": who, "email": emails.get(who, "")}
        return tasks, began or read_began(None)

    def changed_tasks(self, project: int, since: datetime) -> tuple[set[int], list[dict], datetime]:
        """Ids of the tasks with annotations (skipped included) `updated_at` after `since`,
        those in full, and the time the listing began. (Deleting a prediction bumps `updated_at`
        too: hence the filter on annotation counts.)"""
        after = {"filter": "filter:tasks:updated_at", "operator": "greater", "type": "Datetime",
                 "value": since.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")}
        items = [after | {"child_filter": {"filter": f"filter:tasks:{column}",
                                           "operator": "greater", "type": "Number", "value": 0}}
                 for column in ("total_annotations", "cancelled_annotations")]
        began: list[datetime] = []
        ids = {int(t["id"]) for t in self.list_tasks(project, began=began, filters={
            "conjunction": "or", "items": items})}
        return ids, self.annotated_tasks(project, sorted(ids))[0] if ids else [], began[0]

    def labelling_tasks(self, project: int, *, token: Hashable | None = None,
                        counts: Counts | None = None) -> list[dict]:
        """Every task's id and data, with its annotations (none: the kept listing's own dict,
        not a copy); no predictions. What a retrain and seeding read.

        Annotated tasks: with a `token`, this worker's copy brought up to date with what changed
        and checked against Label Studio's `counts` (`annotation_cache`), else all afresh. Every
        task without annotations (10 s for 5,000 tasks), whose resolved data is used: with a
        `token` (the task list's size, a count of task events), kept while the token is the same,
        no annotated task is missing from it and it is younger than TASK_LIST_MAX_AGE seconds.
        """
        annotated = {int(t["id"]): t for t in self.annotated_tasks(project)[0]} if token is None \
            else dict(self._kept_annotations(project, counts).tasks)
        every = self._every_task(project, token)
        if token is not None and not annotated.keys() <= {int(t["id"]) for t in every}:
            self._listings.pop(project, None)  # a task the kept listing lacks: list them again
            every = self._every_task(project, token)
        tasks = [t if (a := annotated.pop(int(t["id"]), None)) is None
                 else t | {"annotations": a.get("annotations") or []} for t in every]
        return tasks + list(annotated.values())  # created between the two listings

    def _kept_annotations(self, project: int, counts: Counts | None) -> AnnotatedTasks:
        kept = self._annotated[project] = refresh(
            self._annotated.get(project), counts, self.settings.annotations_full_read_every,
            lambda: self.annotated_tasks(project), lambda t: self.changed_tasks(project, t))
        log.info("project %s: annotations read: %s", project, kept.how)
        return kept

    def _every_task(self, project: int, token: Hashable | None) -> list[dict]:
        kept = self._listings.get(project)
        if (token is not None and kept is not None and kept[0] == token
                and time.monotonic() - kept[1] < self.settings.task_list_max_age):
            return kept[2]
        started = time.monotonic()
        every = [{"id": t["id"], "data": t.get("data") or {}, "annotations": ()}
                 for t in self.list_tasks(project)]
        if token is not None:
            self._listings[project] = (token, started, every)
        return every

    def tasks_lacking(self, project: int, version: str) -> set[int]:
        """Ids of the tasks with no prediction of `version`, listed by Label Studio itself.

        Its filter matches versions by substring: a task with a prediction of v12 but not of v1
        is not among those lacking v1 (only after a rollback can an older version serve).
        """
        lacking = {"conjunction": "and", "items": [{
            "filter": "filter:tasks:predictions_model_versions", "operator": "not_contains",
            "type": "List", "value": [version]}]}
        return {int(t["id"]) for t in self.list_tasks(project, filters=lacking)}

    def forget_tasks(self, project: int) -> None:
        """Drop the kept task listing and annotations: the next `labelling_tasks` reads every
        task and annotation again."""
        self._listings.pop(project, None)
        self._annotated.pop(project, None)

    def list_tasks(self, project: int, *, fields: str | None = None, filters: dict | None = None,
                   began: list[datetime] | None = None) -> Iterator[dict]:
        """The project's tasks page by page, as the Data Manager lists them (`fields="all"`:
        with annotations and predictions; `filters`: a Data Manager filter; `began` gets the
        server time the listing began)."""
        given = {"fields": fields, "query": filters and json.dumps({"filters": filters})}
        params = {"project": project, "page_size": TASK_PAGE_SIZE} | {
            k: v for k, v in given.items() if v}
        page, seen = 1, 0
        while True:
            sent = time.monotonic()
            resp = self._http.get(self.url + "/api/tasks/", params=params | {"page": page},
                                  headers=self._headers(), timeout=LONG_TIMEOUT)
            if resp.status_code == 404 and page > 1:
                return  # past the last page (tasks deleted meanwhile)
            if resp.status_code >= 400:
                raise LabelStudioError("GET", "/api/tasks/", resp.status_code, resp.text)
            if began is not None and page == 1:
                began.append(read_began(resp.headers.get("date"), time.monotonic() - sent))
            body = resp.json()
            batch = body.get("tasks", []) if isinstance(body, dict) else body
            yield from batch
            seen += len(batch)
            if not batch or not isinstance(body, dict) or seen >= int(body.get("total") or 0):
                return
            page += 1

    # -- importing images (import-images, the demo) ----------------------------------------
    def import_tasks(self, project: int, tasks: list[dict], chunk: int = 500) -> list[int]:
        """Create tasks (with any annotations they carry); their ids, in order."""
        ids: list[int] = []
        for start in range(0, len(tasks), chunk):
            resp = self.sdk.projects.import_tasks(
                id=project, request=tasks[start : start + chunk], return_task_ids=True
            )
            ids += list((resp.model_extra or {}).get("task_ids") or [])
        return ids

    def local_storage_paths(self, project: int) -> list[str]:
        return [s.path for s in self.sdk.import_storage.local.list(project=project) if s.path]

    def add_local_storage(self, project: int, path: str) -> None:
        """A local-files storage is what lets Label Studio serve /data/local-files/ URLs under
        `path`; it is never synced: tasks are imported with their labels instead."""
        self.sdk.import_storage.local.create(
            project=project, path=path, title=f"images in {path}", use_blob_urls=True
        )

    def upload_files(self, project: int, paths: list[Path]) -> list[str]:
        """Upload image files into Label Studio without creating tasks; their task-data URLs
        (/data/upload/...), in order. (The SDK has no multipart import.)"""
        names = []
        with ExitStack() as stack:
            files = [(f"file{i}", (p.name, stack.enter_context(p.open("rb"))))
                     for i, p in enumerate(paths)]  # unique field names keep every file
            resp = self._request("POST", f"/api/projects/{project}/import",
                                 params={"commit_to_project": "false"}, files=files)
        ids = resp.json()["file_upload_ids"]
        stored = {f.id: f.file for f in self.sdk.files.list(id=project, ids=json.dumps(ids))}
        for upload_id in ids:
            names.append("/data/" + str(stored[upload_id]).lstrip("/"))
        return names

    # -- the queue: predictions, sampling, model versions ---------------------------------
    def import_predictions(self, project: int, predictions: list[dict],
                           chunk: int = PREDICTIONS_PER_REQUEST) -> int:
        """Create predictions in bulk, in as few requests as is reasonable (see
        PREDICTIONS_PER_REQUEST)."""
        for start in range(0, len(predictions), chunk):
            self._request("POST", f"/api/projects/{project}/import/predictions",
                          json=predictions[start : start + chunk], timeout=LONG_TIMEOUT)
        return len(predictions)

    def serve_by_priority(self, project: int, version: str) -> None:
        """Make "Label All Tasks" serve the lowest-score prediction of `version` first."""
        self.sdk.projects.update(id=project, sampling="Uncertainty sampling", model_version=version)

    def model_versions(self, project: int) -> dict[str, int]:
        """Prediction versions in the project and how many predictions each has."""
        resp = self._request("GET", f"/api/projects/{project}/model-versions/")
        data = resp.json()
        if isinstance(data, list):  # older servers answer a plain list of names
            return {str(v): 0 for v in data}
        return {str(k): int(v or 0) for k, v in data.items()}

    def prediction_ids(self, project: int, version: str) -> list[int]:
        """Ids of the project's predictions of `version` (Label Studio lists every prediction of
        the project in one answer; it cannot filter by version)."""
        resp = self._request("GET", "/api/predictions/", params={"project": project},
                             timeout=LONG_TIMEOUT)
        return [int(p["id"]) for p in resp.json() if p.get("model_version") == version]

    def delete_model_version(self, project: int, version: str, *,
                             more: Callable[[], bool] | None = None) -> int:
        """Delete the predictions of `version`, one request each, while `more()` says so (None:
        all of them); how many are left.

        Label Studio's own `DELETE /model-versions/` deletes a version in one transaction that
        updates the task of each prediction in turn: 40-80 s for 5,000 predictions on 2 cores,
        during which annotators' submits fail on SQLite ("database is locked" after 5 s) or wait
        for all of it on PostgreSQL. One prediction per request keeps every write short (about
        90 ms each). The ids still to delete are kept between calls with `more`.
        """
        key = (project, version)
        ids = self._doomed.pop(key, None) if more is not None else None
        if not ids:
            ids = self.prediction_ids(project, version)
        while ids and (more is None or more()):
            resp = self._delete_prediction(ids[-1])
            if resp.status_code >= 400 and resp.status_code != 404:  # 404: gone already
                self._doomed[key] = ids
                raise LabelStudioError("DELETE", f"/api/predictions/{ids[-1]}/",
                                       resp.status_code, resp.text)
            ids.pop()
        if ids:
            self._doomed[key] = ids
        return len(ids)

    def _delete_prediction(self, prediction: int) -> httpx.Response:
        """One DELETE, tried again after a pause while Label Studio answers 5xx: on SQLite a
        delete that meets another writer (a submit, an import) can be answered "database is
        locked", at once or after 5 s, and giving way to those writers is the point of deleting
        one at a time."""
        url = f"{self.url}/api/predictions/{prediction}/"
        for pause in DELETE_PAUSES:
            resp = self._http.delete(url, headers=self._headers(), timeout=60)
            if resp.status_code < 500:
                return resp
            log.info("DELETE %s answered %s; again in %.1fs", url, resp.status_code, pause)
            time.sleep(pause)
        return self._http.delete(url, headers=self._headers(), timeout=60)

    def ml_backends(self, project: int) -> list[dict]:
        return [b.model_dump() for b in self.sdk.ml.list(project=project)]

    def retitle_backend(self, backend: dict, title: str) -> None:
        """Label Studio answers 500 unless a PATCH of an ML backend also carries url and project,
        and re-checks the connection: behind basic auth it needs our credentials again."""
        auth = {}
        if self.settings.basic_auth_user:
            auth = {"auth_method": "BASIC_AUTH", "basic_auth_user": self.settings.basic_auth_user,
                    "basic_auth_pass": self.settings.basic_auth_pass.get_secret_value()}
        self.sdk.ml.update(id=backend["id"], url=backend["url"], project=backend["project"],
                           title=title, **auth)

    def set_webhook_headers(self, project: int, urls: set[str], headers: dict[str, str]) -> int:
        """Add `headers` to the project's webhooks posting to one of `urls`; how many changed.

        Label Studio creates the webhook to <backend>/webhook when the backend is connected, with
        no headers, and sends a webhook's stored headers with every event.
        """
        wanted = {u.rstrip("/") for u in urls}
        changed = 0
        for hook in self.sdk.webhooks.list(project=str(project)):
            stored = hook.headers if isinstance(hook.headers, dict) else {}
            if (hook.project == project and (hook.url or "").rstrip("/") in wanted
                    and any(stored.get(k) != v for k, v in headers.items())):
                self.sdk.webhooks.update(id=hook.id, headers=stored | headers)
                changed += 1
        return changed

    def _request(self, method: str, path: str, **kwargs) -> httpx.Response:
        kwargs.setdefault("timeout", 60)
        resp = self._http.request(method, self.url + path, headers=self._headers(), **kwargs)
        if resp.status_code >= 400:
            raise LabelStudioError(method, path, resp.status_code, resp.text)
        return resp

    # -- images ---------------------------------------------------------------------------
    def resolve(self, url: str) -> str:
        """An absolute URL for task data; refuses hosts outside the allow-list."""
        return allowed_url(url, self.url, self._allowed_origins)

    def fetch_image(self, url: str) -> bytes:
        """The bytes behind a task's image URL (uploads, local files, allowed http hosts); our
        credentials go only to Label Studio itself."""
        absolute = self.resolve(url)
        own = urlparse(absolute).netloc.lower() == urlparse(self.url).netloc.lower()
        return download(self._http, absolute, self._headers() if own else {},
                        self.settings.image_max_bytes)
