"""`/status` counts the labels Label Studio holds (submitted, not skipped), read from the real
Label Studio's project counters, not the newest version's training set."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from ml_backend.server import create_app
from ml_backend.settings import Settings

pytestmark = pytest.mark.integration


def test_status_labels_are_label_studios_labelled_tasks(label_studio, ls_project, redis_url,
                                                         tmp_path):
    api, ids = ls_project.api, ls_project.task_ids
    api.annotate(ids[0], ls_project.truth[ids[0]])
    api.annotate(ids[1], ls_project.truth[ids[1]])
    api.annotate(ids[2], None, was_cancelled=True)  # a skip is no label
    settings = Settings(label_studio_url=label_studio.url,
                        label_studio_api_key=label_studio.token, redis_url=redis_url,
                        model_dir=tmp_path / "models", weights="none")
    client = TestClient(create_app(settings))
    status = client.get(f"/status/{ls_project.id}").json()
    assert (status["labels"], status["labels_error"], status["labels_trained"]) == (2, None, 0)
    assert status["queue"]["summary"] == ["idle: nothing running or queued"]
