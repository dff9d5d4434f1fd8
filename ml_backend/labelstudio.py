"""Everything the backend asks of Label Studio, in one place.

Label Studio is the source of truth for annotations: a retrain always reads them from here, never
from webhook payloads. Both legacy tokens and personal access tokens work, because the SDK's own
client decides the auth header (and refreshes a personal access token's short-lived JWT).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from urllib.parse import urljoin, urlparse

import httpx
from label_studio_sdk import LabelStudio

from ml_backend.settings import Settings

log = logging.getLogger(__name__)


class ImageFetchError(RuntimeError):
    """An image URL is refused, unreachable or too large; the message says which."""


class LabelStudioClient:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.url = settings.label_studio_url
        self.sdk = LabelStudio(
            base_url=self.url,
            api_key=settings.label_studio_api_key.get_secret_value(),
            timeout=60,
        )
        self._http = httpx.Client(timeout=settings.image_timeout, follow_redirects=False)
        self._allowed_hosts = {urlparse(self.url).netloc.lower(), *settings.image_hosts}

    def close(self) -> None:
        self._http.close()

    def _headers(self) -> dict[str, str]:
        if not self.settings.label_studio_api_key.get_secret_value():
            return {}  # the SDK would send an invalid "Token " header
        return self.sdk._client_wrapper.get_headers()

    # -- projects and tasks -------------------------------------------------------------
    def label_config(self, project: int) -> str:
        return self.sdk.projects.get(id=project).label_config or ""

    def tasks(self, project: int, *, only_annotated: bool = False) -> Iterator[dict]:
        """Every task of `project` as a plain dict with its annotations, page by page."""
        pager = self.sdk.tasks.list(
            project=project, fields="all", only_annotated=only_annotated or None, page_size=100
        )
        for task in pager:
            yield task.model_dump() if hasattr(task, "model_dump") else dict(task)

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
    def import_predictions(self, project: int, predictions: list[dict], chunk: int = 1000) -> int:
        """Create predictions in bulk (Label Studio accepts about 1000 per request quickly)."""
        for start in range(0, len(predictions), chunk):
            self.sdk.projects.import_predictions(id=project, request=predictions[start : start + chunk])
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

    def delete_model_version(self, project: int, version: str) -> None:
        self._request("DELETE", f"/api/projects/{project}/model-versions/", json={"model_version": version})

    def ml_backends(self, project: int) -> list[dict]:
        return [b.model_dump() for b in self.sdk.ml.list(project=project)]

    def retitle_backend(self, backend: dict, title: str) -> None:
        """Label Studio answers 500 unless a PATCH of an ML backend also carries url and project."""
        self.sdk.ml.update(id=backend["id"], url=backend["url"], project=backend["project"], title=title)

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
        resp = self._http.request(method, self.url + path, headers=self._headers(), timeout=60, **kwargs)
        if resp.status_code >= 400:
            raise RuntimeError(f"{method} {path} answered {resp.status_code}: {resp.text[:200]}")
        return resp

    # -- images ---------------------------------------------------------------------------
    def resolve(self, url: str) -> str:
        """An absolute URL for task data; refuses hosts outside the allow-list."""
        if not isinstance(url, str) or not url:
            raise ImageFetchError("task has no image URL")
        absolute = urljoin(self.url + "/", url) if url.startswith("/") else url
        parsed = urlparse(absolute)
        if parsed.scheme not in ("http", "https"):
            raise ImageFetchError(f"unsupported image URL scheme {parsed.scheme!r}: {url}")
        host = parsed.netloc.lower()
        if host not in self._allowed_hosts and parsed.hostname not in self._allowed_hosts:
            raise ImageFetchError(
                f"image host {parsed.hostname!r} is not allowed; add it to IMAGE_HOSTS to fetch it"
            )
        return absolute

    def fetch_image(self, url: str) -> bytes:
        """The bytes behind a task's image URL (uploads, local files, allowed http hosts)."""
        absolute = self.resolve(url)
        own = urlparse(absolute).netloc.lower() == urlparse(self.url).netloc.lower()
        headers = self._headers() if own else {}
        limit = self.settings.image_max_bytes
        try:
            with self._http.stream("GET", absolute, headers=headers) as resp:
                if resp.status_code != 200:
                    raise ImageFetchError(f"GET {url} answered {resp.status_code}")
                if int(resp.headers.get("content-length") or 0) > limit:
                    raise ImageFetchError(f"image {url} is larger than {limit} bytes")
                chunks, size = [], 0
                for chunk in resp.iter_bytes():
                    size += len(chunk)
                    if size > limit:
                        raise ImageFetchError(f"image {url} is larger than {limit} bytes")
                    chunks.append(chunk)
                return b"".join(chunks)
        except httpx.HTTPError as exc:
            raise ImageFetchError(f"cannot fetch {url}: {exc}") from None

