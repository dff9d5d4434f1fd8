"""Walking skeleton: Label Studio -> webhook -> RQ retrain -> new version -> predictions in LS."""

from __future__ import annotations

import pytest

from .dataset import CLASSES
from .loop import (
    connect_backend,
    project_webhooks,
    retrieve_predictions,
    timed,
    wait_for_idle_version,
)

pytestmark = pytest.mark.integration

# LS sends webhooks inside the annotator's request with a 1 s timeout; a submit that takes
# much longer than that means the backend is doing work in /webhook.
MAX_SUBMIT_SECONDS = 3.0


def _choices(prediction: dict) -> list[str]:
    return [c for r in prediction.get("result") or [] for c in r["value"].get("choices", [])]


def test_annotations_retrain_and_predictions_reach_label_studio(ls_project, backend):
    api = ls_project.api
    assert backend.status(ls_project.id)["serving_version"] is None
    assert backend.setup_version(ls_project.id, api.get(f"/api/projects/{ls_project.id}")[
        "label_config"]) == "untrained"

    ml = connect_backend(ls_project, backend)
    assert ml["url"] == backend.url
    hooks = project_webhooks(ls_project)
    assert [h["url"] for h in hooks] == [f"{backend.url}/webhook"], hooks

    labelled = {label: ls_project.tasks_of(label)[:3] for label in CLASSES}
    for label, task_ids in labelled.items():
        for task_id in task_ids:
            _, seconds = timed(api.annotate, task_id, label)
            assert seconds < MAX_SUBMIT_SECONDS, f"submit took {seconds:.1f}s"
    n_labels = sum(len(t) for t in labelled.values())

    status = wait_for_idle_version(backend, ls_project.id, n_labels)
    version = status["serving_version"]
    assert version.startswith("v") and version[1:].isdigit(), status
    assert backend.setup_version(ls_project.id, ls_project.raw["label_config"]) == version
    assert any(j.get("status") == "finished" for j in status["jobs"]), status["jobs"]

    assert {j["reason"] for j in status["jobs"]} == {"ANNOTATION_CREATED"}, status["jobs"]
    print("versions:", status["versions"])

    unlabeled = [t for t in ls_project.task_ids if all(t not in ids for ids in labelled.values())]
    # Opening one task through the API makes LS ask /predict for it (it has no prediction yet).
    first, rest = unlabeled[0], unlabeled[1:]
    api.get(f"/api/tasks/{first}")
    # The Data Manager action sends the rest to /predict in one batch.
    retrieve_predictions(ls_project, rest)
    correct = 0
    for task_id in unlabeled:
        preds = [p for p in api.predictions(task_id) if p["model_version"] == version]
        assert len(preds) == 1, (task_id, api.predictions(task_id), backend.logs(40))
        (choice,) = _choices(preds[0])
        assert choice in CLASSES
        assert 0.0 <= preds[0]["score"] <= 1.0
        correct += choice == ls_project.truth[task_id]
    print(f"{version}: {correct}/{len(unlabeled)} unlabeled tasks predicted correctly")


def test_skipped_annotation_is_not_a_label(ls_project, backend):
    api = ls_project.api
    connect_backend(ls_project, backend)
    # The skip comes first and carries a wrong choice: if training counted it, the final
    # version would have one label more (and a red image taught as blue).
    skipped_task = ls_project.tasks_of("red")[-1]
    skip = api.annotate(skipped_task, "blue", was_cancelled=True)
    assert skip["was_cancelled"] is True
    labelled = {label: ls_project.tasks_of(label)[:2] for label in CLASSES}
    for label, task_ids in labelled.items():
        for task_id in task_ids:
            api.annotate(task_id, label)

    status = wait_for_idle_version(backend, ls_project.id, n_labels=6)
    final = [v for v in status["versions"] if v["serving"]][-1]
    assert final["n_labels"] == 6, final
    print("versions:", status["versions"])


def test_burst_of_annotations_coalesces_retrains(ls_project, backend):
    api = ls_project.api
    connect_backend(ls_project, backend)
    burst = [t for label in CLASSES for t in ls_project.tasks_of(label)[:2]][:5]
    _, burst_seconds = timed(lambda: [api.annotate(t, ls_project.truth[t]) for t in burst])

    status = wait_for_idle_version(backend, ls_project.id, n_labels=len(burst))
    jobs = status["jobs"]
    summary = [(j["status"], j.get("n_labels"), j["seconds"]) for j in reversed(jobs)]
    # One retrain starts on the first webhook; every webhook while it runs folds into a single
    # follow-up. Five submits (~0.3 s each) fit in about one retrain.
    assert len(status["versions"]) <= 3, (burst_seconds, summary)
    assert len(jobs) <= 3, (burst_seconds, summary)
    assert status["versions"][-1]["n_labels"] == len(burst)
    print(f"burst of {len(burst)} submits in {burst_seconds:.2f}s -> jobs {summary}")

    # Webhooks straight to the backend, faster than any retrain: at most one is queued behind
    # the one that may already be running; the rest are folded in.
    before = len(jobs)
    answers = [
        backend.http.post("/webhook", json={"action": "START_TRAINING", "project": ls_project.id})
        for _ in range(10)
    ]
    assert all(a.status_code == 200 for a in answers), [a.text for a in answers]
    statuses = [a.json()["status"] for a in answers]
    assert statuses[0] == "queued", statuses
    assert statuses.count("queued") <= 2, statuses
    assert set(statuses) <= {"queued", "coalesced"}, statuses
    status = wait_for_idle_version(backend, ls_project.id, n_labels=len(burst))
    assert 1 <= len(status["jobs"]) - before <= 2, status["jobs"]
