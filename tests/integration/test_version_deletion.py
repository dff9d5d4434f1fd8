"""Old prediction versions are deleted while annotators keep submitting (real Label Studio).

Label Studio's own `DELETE /api/projects/{id}/model-versions/` deletes a version in one
transaction, about 8 ms per prediction on 2 cores; on SQLite a submit that waits more than 5 s
for it fails ("database is locked"), on PostgreSQL it waits for all of it. The backend deletes one
prediction per request instead, so every submit meets a write of a few milliseconds.
"""

from __future__ import annotations

import threading
import time

import pytest

from ml_backend.labelstudio import LabelStudioClient
from ml_backend.settings import Settings
from .labelstudio import LSApi, LSApiError

pytestmark = pytest.mark.integration

# Label Studio's bulk deletion of this many would lock its database for about 7 s.
N_PREDICTIONS = 800
SUBMIT_LIMIT = 4.0  # seconds: below SQLite's 5 s, after which a waiting submit fails


def submit(api: LSApi, task: int, choice: str) -> float:
    """Seconds until the submit succeeded. SQLite answers "database is locked" at once, without
    waiting, to one of two writers that would otherwise deadlock (any two, two annotators alike),
    and an annotator submits again; a write held too long makes the other wait 5 s and fail
    instead, which this never retries."""
    t0 = time.monotonic()
    for _ in range(3):
        try:
            api.annotate(task, choice)
            break
        except LSApiError:
            if time.monotonic() - t0 > 1.0:
                raise
    else:
        raise AssertionError(f"submitting task {task} failed three times")
    return time.monotonic() - t0


def test_annotators_submit_while_an_old_version_is_deleted(label_studio, ls_project):
    api, pid, ids = ls_project.api, ls_project.id, ls_project.task_ids
    api.post(f"/api/projects/{pid}/import/predictions", json=[
        {"task": ids[i % len(ids)], "result": [], "score": 0.5, "model_version": "v1"}
        for i in range(N_PREDICTIONS)])
    assert api.get(f"/api/projects/{pid}/model-versions/")["v1"] == N_PREDICTIONS
    client = LabelStudioClient(Settings(label_studio_url=label_studio.url,
                                        label_studio_api_key=label_studio.token))
    left: list[int] = []
    deleting = threading.Thread(target=lambda: left.append(client.delete_model_version(pid, "v1")))
    deleting.start()
    submits: list[float] = []
    try:
        while deleting.is_alive() and len(submits) < len(ids):
            task = ids[len(submits)]
            submits.append(submit(api, task, ls_project.truth[task]))
            time.sleep(0.5)
    finally:
        deleting.join()
        client.close()
    assert left == [0]
    assert "v1" not in api.get(f"/api/projects/{pid}/model-versions/")
    assert len(submits) >= 3, submits  # annotators were at work while it deleted
    assert max(submits) < SUBMIT_LIMIT, submits
    print(f"{N_PREDICTIONS} predictions deleted; {len(submits)} submits meanwhile, "
          f"slowest {max(submits):.2f}s")
