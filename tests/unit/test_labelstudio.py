import base64
import json

import httpx
import pytest
from label_studio_sdk import LabelStudio

from ml_backend.annotation_cache import read_began
from ml_backend.image_hosts import ImageFetchError
from ml_backend.labelstudio import LabelStudioClient, LabelStudioError
from ml_backend.pool import annotator_ids
from ml_backend.settings import Settings

LEGACY = "a" * 40


def _b64(obj: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


# A personal access token is a JWT refresh token (three base64 parts) with an expiry.
PAT = f"{_b64({'alg': 'HS256'})}.{_b64({'token_type': 'refresh', 'exp': 4102444800})}.c2ln"


def client(http: httpx.Client | None = None, **kw) -> LabelStudioClient:
    return LabelStudioClient(Settings(label_studio_url="http://ls.test:8080/", **kw), http=http)


def mock(answer) -> httpx.Client:
    """An HTTP client whose requests `answer(request)` answers."""
    return httpx.Client(transport=httpx.MockTransport(answer))


def test_relative_task_urls_resolve_against_label_studio():
    ls = client(label_studio_api_key=LEGACY)
    assert ls.resolve("/data/local-files/?d=a/b.png") == "http://ls.test:8080/data/local-files/?d=a/b.png"
    assert ls.resolve("/data/upload/3/x.jpg") == "http://ls.test:8080/data/upload/3/x.jpg"


@pytest.mark.parametrize("url", [
    "http://169.254.169.254/latest/meta-data/",
    "http://127.0.0.1:6379/",
    "https://example.com/cat.jpg",
    "file:///etc/passwd",
    "s3://bucket/key.png",
    "",
])
def test_urls_outside_the_allow_list_are_refused(url):
    with pytest.raises(ImageFetchError):
        client().resolve(url)


def test_extra_image_hosts_can_be_allowed():
    ls = client(image_hosts="cdn.example.com, images.example.org")
    assert ls.resolve("https://cdn.example.com/a.png") == "https://cdn.example.com/a.png"
    with pytest.raises(ImageFetchError, match="IMAGE_HOSTS"):
        ls.resolve("https://evil.example.com/a.png")


@pytest.mark.parametrize("ls_url, image_hosts, allowed, refused", [
    ("http://ls.test", "", "http://ls.test/data/upload/1/a.png", "http://ls.test:6379/"),
    ("http://ls.test", "", "http://ls.test:80/a.png", "https://ls.test/a.png"),
    ("https://ls.test:8443", "", "https://ls.test:8443/a.png", "https://ls.test/a.png"),
    ("http://ls.test:8080", "cdn.example.com", "https://cdn.example.com/a.png",
     "https://cdn.example.com:444/a.png"),
    ("http://ls.test:8080", "cdn.example.com:9000", "http://cdn.example.com:9000/a.png",
     "http://cdn.example.com/a.png"),
    ("http://ls.test:8080", "https://cdn.example.com", "https://cdn.example.com/a.png",
     "http://cdn.example.com/a.png"),
])
def test_allow_list_matches_scheme_host_and_port(ls_url, image_hosts, allowed, refused):
    ls = LabelStudioClient(Settings(label_studio_url=ls_url, image_hosts=image_hosts))
    assert ls.resolve(allowed) == allowed
    with pytest.raises(ImageFetchError, match="not allowed"):
        ls.resolve(refused)


def test_both_kinds_of_api_key_are_sent_the_way_label_studio_expects():
    assert client(label_studio_api_key=LEGACY)._headers()["Authorization"] == f"Token {LEGACY}"
    assert client(label_studio_api_key=PAT).sdk._client_wrapper._tokens_client._use_legacy_token is False


def test_bad_label_studio_url_is_a_settings_error():
    with pytest.raises(ValueError, match="LABEL_STUDIO_URL"):
        Settings(label_studio_url="ls.test:8080")


def _counting_listing(ls, monkeypatch, light: list[dict], full: list[dict]) -> list[str]:
    """Stand-ins for the two listings that record which ran."""
    calls = []

    def every(project, *, fields=None, filters=None):
        calls.append("every")
        return iter(list(light))

    def annotated(project, ids=None):
        calls.append("annotated")
        return [dict(t) for t in full], read_began(None)

    monkeypatch.setattr(ls, "list_tasks", every)
    monkeypatch.setattr(ls, "annotated_tasks", annotated)
    return calls


def test_labelling_tasks_list_every_task_light_and_only_annotated_ones_in_full(monkeypatch):
    """Two listings: every task without annotations and predictions (fast), annotated tasks
    (skipped included) with them; merged in the order of the first, with its resolved data,
    nothing lost in between."""
    ls = client(label_studio_api_key=LEGACY)
    light = [{"id": i, "data": {"image": f"/i/{i}.png"}} for i in (1, 2, 3)]
    full = [{"id": 2, "data": {"image": "s3://b/2.png"}, "annotations": [{"id": 7}]},
            {"id": 4, "data": {"image": "/i/4.png"}, "annotations": [{"id": 8}]}]  # new meanwhile
    calls = _counting_listing(ls, monkeypatch, light, full)
    tasks = list(ls.labelling_tasks(5))
    assert [(t["id"], [a["id"] for a in t["annotations"]]) for t in tasks] == [
        (1, []), (2, [7]), (3, []), (4, [8])]
    assert tasks[1]["data"] == {"image": "/i/2.png"}  # as the Data Manager resolves it
    assert calls == ["annotated", "every"]


def test_annotated_tasks_come_from_the_export_of_finished_tasks():
    """The export is twice as fast as the Data Manager's listing; it names annotators by id
    only, so with ANNOTATORS set their emails are looked up for the filter."""
    exported = [{"id": 2, "data": {}, "annotations": [{"id": 7, "completed_by": 3}]}]
    seen = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append((request.url.path, dict(request.url.params)))
        if request.url.path == "/api/projects/5/export":
            return httpx.Response(200, json=exported)
        if request.url.path == "/api/users/":
            return httpx.Response(200, json=[{"id": 3, "email": "Ann@example.com"}])
        return httpx.Response(404)

    ls = client(label_studio_api_key=LEGACY, http=mock(answer))
    [task], _ = ls.annotated_tasks(5)
    assert task["annotations"][0]["completed_by"] == 3  # no ANNOTATORS: no user listing
    assert seen == [("/api/projects/5/export",
                     {"exportType": "JSON", "download_all_tasks": "false"})]

    ls = client(label_studio_api_key=LEGACY, annotators="ann@example.com", http=mock(answer))
    ls.sdk = LabelStudio(base_url="http://ls.test:8080", api_key=LEGACY,
                         httpx_client=httpx.Client(transport=httpx.MockTransport(answer)))
    [task], _ = ls.annotated_tasks(5)
    assert task["annotations"][0]["completed_by"] == {"id": 3, "email": "Ann@example.com"}
    assert annotator_ids(task["annotations"][0]) == {"3", "ann@example.com"}


def test_a_kept_listing_is_reused_while_the_token_holds(monkeypatch):
    """A retrain re-reads only annotated tasks while the task list is unchanged; annotations
    are always fresh."""
    ls = client(label_studio_api_key=LEGACY)
    light = [{"id": i, "data": {"image": f"/i/{i}.png"}} for i in (1, 2, 3)]
    full = [{"id": 2, "data": {"image": "/i/2.png"}, "annotations": [{"id": 7}]}]
    calls = _counting_listing(ls, monkeypatch, light, full)
    ls.labelling_tasks(5, token=(3, None))
    full[0] = full[0] | {"annotations": [{"id": 9}]}  # relabelled meanwhile
    tasks = ls.labelling_tasks(5, token=(3, None))
    assert calls == ["annotated", "every", "annotated"]
    assert [(t["id"], [a["id"] for a in t["annotations"]]) for t in tasks] == [
        (1, []), (2, [9]), (3, [])]
    ls.labelling_tasks(5, token=(4, None))  # a task more: listed again
    assert calls[-2:] == ["annotated", "every"]


def test_a_kept_listing_is_dropped_when_stale(monkeypatch):
    ls = client(label_studio_api_key=LEGACY)
    light = [{"id": i, "data": {"image": f"/i/{i}.png"}} for i in (1, 2)]
    full = []
    calls = _counting_listing(ls, monkeypatch, light, full)
    ls.labelling_tasks(5, token="t")
    light.append({"id": 3, "data": {"image": "/i/3.png"}})
    full.append({"id": 3, "data": {"image": "/i/3.png"}, "annotations": [{"id": 1}]})
    tasks = ls.labelling_tasks(5, token="t")  # an annotated task it lacks: re-listed
    assert [t["id"] for t in tasks] == [1, 2, 3] and calls[-1] == "every"
    ls.forget_tasks(5)
    ls.labelling_tasks(5, token="t")
    assert calls[-1] == "every"
    ls.labelling_tasks(5)  # no token: never kept
    ls.labelling_tasks(5)
    assert calls[-4:] == ["annotated", "every", "annotated", "every"]


def test_a_kept_listing_ages_out(monkeypatch):
    ls = LabelStudioClient(Settings(label_studio_url="http://ls.test:8080/", task_list_max_age=0))
    calls = _counting_listing(ls, monkeypatch, [{"id": 1, "data": {}}], [])
    ls.labelling_tasks(5, token="t")
    ls.labelling_tasks(5, token="t")
    assert calls.count("every") == 2


def test_tasks_lacking_a_version_are_asked_of_label_studio_by_filter(monkeypatch):
    ls = client(label_studio_api_key=LEGACY)
    seen = {}

    def listing(project, *, fields=None, filters=None):
        seen["filters"] = filters
        return iter([{"id": 4}, {"id": 9}])

    monkeypatch.setattr(ls, "list_tasks", listing)
    assert ls.tasks_lacking(5, "v3") == {4, 9}
    [item] = seen["filters"]["items"]
    assert item["filter"] == "filter:tasks:predictions_model_versions"
    assert (item["operator"], item["value"]) == ("not_contains", ["v3"])


def test_an_old_version_is_deleted_one_prediction_per_request():
    """Label Studio deletes a whole version in one long transaction that makes annotators'
    submits fail (SQLite) or wait (PostgreSQL); one prediction per request keeps each write
    short, and `more` splits the work into slices."""
    stored = [{"id": 1, "model_version": "v1"}, {"id": 2, "model_version": "v2"},
              {"id": 3, "model_version": "v1"}, {"id": 4, "model_version": "v1"}]
    requests = []

    def answer(request: httpx.Request) -> httpx.Response:
        requests.append((request.method, request.url.path))
        if request.method == "GET" and request.url.path == "/api/predictions/":
            assert dict(request.url.params) == {"project": "5"}
            return httpx.Response(200, json=stored)
        if request.method == "DELETE" and request.url.path == "/api/predictions/3/":
            return httpx.Response(404, json={"detail": "Not found."})  # gone meanwhile
        if request.method == "DELETE" and request.url.path.startswith("/api/predictions/"):
            return httpx.Response(204)
        return httpx.Response(500)

    ls = client(label_studio_api_key=LEGACY, http=mock(answer))
    assert ls.delete_model_version(5, "v1", more=lambda: False) == 3  # no time left
    assert ls.delete_model_version(5, "v1", more=lambda: True) == 0
    assert requests == [("GET", "/api/predictions/")] + [
        ("DELETE", f"/api/predictions/{i}/") for i in (4, 3, 1)]  # the kept ids: listed once
    requests.clear()
    assert ls.delete_model_version(5, "v1") == 0  # all at once: listed afresh
    assert requests[0] == ("GET", "/api/predictions/") and len(requests) == 4


def test_a_prediction_delete_that_finds_the_database_locked_is_tried_again(monkeypatch):
    """On SQLite a delete queued behind a long write answers 500 "database is locked"; the
    prediction must still go, and one that keeps failing stays listed for the next slice."""
    from ml_backend import labelstudio

    monkeypatch.setattr(labelstudio, "DELETE_PAUSES", (0, 0, 0))
    locked = {"1": 2, "2": 10**9}  # prediction id -> 500s still to answer

    def answer(request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            return httpx.Response(200, json=[{"id": 1, "model_version": "v1"},
                                             {"id": 2, "model_version": "v1"}])
        pid = request.url.path.rstrip("/").rsplit("/", 1)[1]
        if locked[pid]:
            locked[pid] -= 1
            return httpx.Response(500, text="database is locked")
        return httpx.Response(204)

    ls = client(label_studio_api_key=LEGACY, http=mock(answer))
    with pytest.raises(LabelStudioError, match="predictions/2/ answered 500") as failed:
        ls.delete_model_version(5, "v1", more=lambda: True)
    assert failed.value.status_code == 500
    locked["2"] = 2  # the writer is done
    assert ls.delete_model_version(5, "v1", more=lambda: True) == 0
    assert locked == {"1": 0, "2": 0}


def test_a_refused_key_says_which_setting_to_check():
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(401, json={"detail": "Invalid token."})

    ls = client(label_studio_api_key=LEGACY, http=mock(answer))
    ls.sdk = LabelStudio(base_url="http://ls.test:8080", api_key=LEGACY, httpx_client=mock(answer))
    with pytest.raises(LabelStudioError, match="LABEL_STUDIO_API_KEY") as refused:
        ls.project(5)
    assert refused.value.status_code == 401
    with pytest.raises(LabelStudioError, match="model-versions/ answered 401"):
        ls.model_versions(5)
