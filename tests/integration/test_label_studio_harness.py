"""The harness itself: a real Redis, a real Label Studio, a project whose images resolve."""

from __future__ import annotations

import io

import httpx
import numpy as np
import pytest
import redis
from PIL import Image

from .dataset import CLASSES, IMAGE_SIZE, LABEL_CONFIG

pytestmark = pytest.mark.integration


def test_redis_db_is_private_and_clean(redis_url):
    client = redis.Redis.from_url(redis_url)
    assert client.dbsize() == 0
    client.set("probe", "1")
    assert client.get("probe") == b"1"


def test_label_studio_project_with_local_images(label_studio, ls_project):
    api = label_studio.api
    health = httpx.get(f"{label_studio.url}/health", timeout=5).json()
    assert health["status"] == "UP"

    # The SDK client authenticates with the legacy token.
    project = label_studio.client.projects.get(id=ls_project.id)
    assert project.id == ls_project.id
    assert project.label_config.replace(" ", "") == LABEL_CONFIG.replace(" ", "")

    assert len(ls_project.task_ids) == 18
    assert sorted(set(ls_project.truth.values())) == sorted(CLASSES)
    assert all(len(ls_project.tasks_of(c)) == 6 for c in CLASSES)

    # Local-files URLs resolve with the token, and only with it.
    task_id = ls_project.tasks_of("red")[0]
    task = api.get(f"/api/tasks/{task_id}")
    image_url = task["data"]["image"]
    assert image_url.startswith("/data/local-files/?d=colors/")
    r = api.http.get(image_url)
    assert r.status_code == 200, r.text[:500]
    img = Image.open(io.BytesIO(r.content)).convert("RGB")
    assert img.size == (IMAGE_SIZE, IMAGE_SIZE)
    red, green, blue = np.asarray(img, dtype=np.float32).mean(axis=(0, 1))
    assert red > green + 60 and red > blue + 60
    anonymous = httpx.get(f"{label_studio.url}{image_url}", timeout=10, follow_redirects=False)
    assert anonymous.status_code != 200

    # An annotation through the API lands on the task.
    created = api.annotate(task_id, "red")
    assert created["result"][0]["value"]["choices"] == ["red"]
    assert api.get(f"/api/tasks/{task_id}")["total_annotations"] == 1
