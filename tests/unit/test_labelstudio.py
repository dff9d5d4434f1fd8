import base64
import json

import pytest

from ml_backend.labelstudio import ANNOTATED, ImageFetchError, LabelStudioClient
from ml_backend.settings import Settings

LEGACY = "a" * 40


def _b64(obj: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


# A personal access token is a JWT refresh token (three base64 parts) with an expiry.
PAT = f"{_b64({'alg': 'HS256'})}.{_b64({'token_type': 'refresh', 'exp': 4102444800})}.c2ln"


def client(**kw) -> LabelStudioClient:
    return LabelStudioClient(Settings(label_studio_url="http://ls.test:8080/", **kw))


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


def test_both_kinds_of_api_key_are_sent_the_way_label_studio_expects():
    assert client(label_studio_api_key=LEGACY)._headers()["Authorization"] == f"Token {LEGACY}"
    assert client(label_studio_api_key=PAT).sdk._client_wrapper._tokens_client._use_legacy_token is False


def test_bad_label_studio_url_is_a_settings_error():
    with pytest.raises(ValueError, match="LABEL_STUDIO_URL"):
        Settings(label_studio_url="ls.test:8080")


def test_labelling_tasks_list_every_task_light_and_only_annotated_ones_in_full(monkeypatch):
    """Two listings: every task without annotations and predictions (fast), annotated tasks
    (skipped included) with them; merged in the order of the first, nothing lost in between."""
    ls = client(label_studio_api_key=LEGACY)
    light = [{"id": i, "data": {"image": f"/i/{i}.png"}} for i in (1, 2, 3)]
    full = [{"id": 2, "data": {"image": "/i/2.png"}, "annotations": [{"id": 7}]},
            {"id": 4, "data": {"image": "/i/4.png"}, "annotations": [{"id": 8}]}]  # new meanwhile
    calls = []

    def listing(project, *, fields=None, filters=None):
        calls.append((project, fields, filters))
        return iter(full if filters else light)

    monkeypatch.setattr(ls, "_list_tasks", listing)
    tasks = list(ls.labelling_tasks(5))
    assert [(t["id"], [a["id"] for a in t["annotations"]]) for t in tasks] == [
        (1, []), (2, [7]), (3, []), (4, [8])]
    assert calls[0][1:] == ("all", ANNOTATED) and calls[1][1:] == (None, None)
    columns = {item["filter"] for item in ANNOTATED["items"]}
    assert columns == {"filter:tasks:total_annotations", "filter:tasks:cancelled_annotations"}
    assert ANNOTATED["conjunction"] == "or"
