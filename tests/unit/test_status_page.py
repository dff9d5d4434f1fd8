import io
import time

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from ml_backend.queue_state import ProjectQueue
from ml_backend.server import create_app
from ml_backend.steps import retrain
from tests.browser import chromium, served

CURVE_BLUE = np.array([0x1F, 0x77, 0xB4])


def blue_pixels(png: bytes) -> int:
    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    return int((np.abs(pixels - CURVE_BLUE).sum(axis=2) < 40).sum())


@pytest.fixture
def trained_app(settings, runtime, fake_ls):
    # Three versions with growing label counts make a curve.
    for n in (6, 12, 18):
        for t in fake_ls.task_list:
            t["annotations"] = [fake_ls.annotation(t["truth"], t["id"])] if t["id"] <= n else []
        retrain(runtime, 1)
    return create_app(settings, runtime)


def test_status_lists_versions_with_metrics_and_the_curve_is_drawn(trained_app):
    client = TestClient(trained_app)
    status = client.get("/status/1").json()
    assert [v["n_labels"] for v in status["versions"]] == [6, 12, 18]
    assert status["serving_version"] == "v3"
    assert status["serving_label_studio_version"] == "al-v3"  # its predictions' model_version
    res = client.get("/status/1/curve.png")
    assert res.headers["content-type"] == "image/png"
    assert blue_pixels(res.content) > 50  # the line is there
    page = client.get("/").text
    assert "v3 (serving) <span class='muted'>al-v3 in Label Studio</span>" in page
    assert "/status/1/curve.png" in page


def test_a_failed_job_shows_its_error_escaped(settings, runtime, trained_app):
    from redis import Redis

    ProjectQueue(Redis.from_url(settings.redis_url), 1).record({
        "kind": "retrain", "status": "failed", "reason": "START_TRAINING",
        "error": "RuntimeError: <script>alert(1)</script>", "started_at": time.time()})
    page = TestClient(trained_app).get("/").text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "<script>alert" not in page


def test_the_page_renders_in_headless_chromium(trained_app, tmp_path):
    shot = tmp_path / "page.png"
    with served(trained_app) as url:
        dom = chromium(tmp_path / "profile", "1000,900", "--dump-dom", url + "/").stdout
        assert "Project 1" in dom and "v3 (serving)" in dom
        chromium(tmp_path / "profile", "1000,900", f"--screenshot={shot}", url + "/")
    assert blue_pixels(shot.read_bytes()) > 50  # the curve image loaded and rendered
