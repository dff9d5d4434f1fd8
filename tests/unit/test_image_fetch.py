"""Task image URLs against real HTTP servers on 127.0.0.1: what is fetched, refused and rejected.

A second server stands for everything the backend must never reach (cloud metadata, other
internal services); it counts connections, so "refused" means no connection was even opened.
"""

import io
import struct
import zlib

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from ml_backend.image_hosts import ImageFetchError
from ml_backend.labelstudio import LabelStudioClient
from ml_backend.runtime import Runtime
from ml_backend.server import create_app
from ml_backend.settings import Settings
from ml_backend.steps import retrain
from tests.http_servers import Reply, serving
from tests.images import png_bytes
from tests.unit.fakes import CONFIG

LIMIT = 200_000


def claimed_size_png(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims `width` x `height` pixels: a decompression bomb's shape."""
    buf = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buf, format="PNG")
    data = bytearray(buf.getvalue())
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


GOOD = png_bytes("red", 1)
FILES = {
    "/good.png": Reply(GOOD),
    "/corrupt.png": Reply(b"\x89PNG\r\n\x1a\n" + b"\x00garbage" * 50),
    "/truncated.png": Reply(GOOD[: len(GOOD) // 2]),
    "/bomb.png": Reply(claimed_size_png(40_000, 40_000)),
    "/page.html": Reply(b"<html><body>not an image</body></html>",
                        headers={"Content-Type": "text/html"}),
    "/huge.png": Reply(GOOD + b"\x00" * LIMIT),
    "/huge-chunked.png": Reply(GOOD + b"\x00" * LIMIT, chunked=True),
}


@pytest.fixture
def elsewhere():
    """A host the backend must never contact."""
    with serving({"/secret": Reply(b"internal data")}) as server:
        yield server


@pytest.fixture
def ls_server(elsewhere):
    """Label Studio's host: the images above, and a redirect to the other host."""
    replies = dict(FILES)
    replies["/redirect.png"] = Reply(status=302, headers={"Location": elsewhere.url + "/secret"})
    with serving(replies) as server:
        yield server


def client_for(ls_server, **kw) -> LabelStudioClient:
    return LabelStudioClient(Settings(label_studio_url=ls_server.url, image_max_bytes=LIMIT, **kw))


@pytest.mark.parametrize("url", [
    "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
    "http://[fd00:ec2::254]/latest/meta-data/",
    "http://metadata.google.internal/computeMetadata/v1/",
    "ftp://127.0.0.1/x.png",
])
def test_urls_off_the_allow_list_are_refused_before_any_connection(ls_server, url):
    with pytest.raises(ImageFetchError, match="not allowed|scheme"):
        client_for(ls_server).fetch_image(url)


def test_an_internal_service_is_never_contacted(ls_server, elsewhere):
    ls = client_for(ls_server)
    for url in (elsewhere.url + "/secret", f"//{elsewhere.netloc}/secret",
                f"http://user@{elsewhere.netloc}/secret",
                f"http://{ls_server.netloc}@{elsewhere.netloc}/"):
        with pytest.raises(ImageFetchError, match="not allowed"):
            ls.fetch_image(url)
    assert elsewhere.connections == 0


def test_a_redirect_to_another_host_is_not_followed(ls_server, elsewhere):
    with pytest.raises(ImageFetchError, match="302"):
        client_for(ls_server).fetch_image("/redirect.png")
    assert ls_server.paths == ["/redirect.png"]
    assert elsewhere.connections == 0


def test_a_host_on_the_allow_list_is_fetched(ls_server, elsewhere):
    ls = client_for(ls_server, image_hosts=elsewhere.netloc)
    assert ls.fetch_image(elsewhere.url + "/secret") == b"internal data"
    assert elsewhere.connections == 1  # the counter does see connections


@pytest.mark.parametrize("path", ["/huge.png", "/huge-chunked.png"])
def test_files_over_the_size_limit_are_refused(ls_server, path):
    with pytest.raises(ImageFetchError, match=f"larger than {LIMIT}"):
        client_for(ls_server).fetch_image(path)


def test_predict_serves_good_images_and_rejects_each_hostile_one(settings, runtime, ls_server,
                                                                 elsewhere):
    retrain(runtime, 1)  # a serving version, trained on the stand-in's images
    real = Settings(**(settings.model_dump() | {"label_studio_url": ls_server.url,
                                                 "image_max_bytes": LIMIT}))
    client = TestClient(create_app(real, Runtime(real)), raise_server_exceptions=False)
    urls = ["/good.png", *[p for p in FILES if p != "/good.png"], "/redirect.png",
            "http://169.254.169.254/latest/meta-data/", elsewhere.url + "/secret",
            "/missing.png", "", None, 42]
    body = {"tasks": [{"id": 100 + i, "data": {"image": u}} for i, u in enumerate(urls)],
            "project": "1.1700000000", "label_config": CONFIG}
    res = client.post("/predict", json=body)
    assert res.status_code == 200, res.text
    results = res.json()["results"]
    assert len(results) == len(urls)
    assert results[0]["result"] and results[0]["model_version"] == "al-v1"
    # no prediction, and served last (the order holds no priority for these tasks)
    for url, entry in zip(urls[1:], results[1:]):
        assert entry == {"result": [], "score": 1.0, "model_version": "al-v1"}, url
    assert elsewhere.connections == 0
