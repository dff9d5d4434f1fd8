"""Walking skeleton: Label Studio -> webhook -> RQ retrain -> new version -> predictions in LS."""

from __future__ import annotations

import pytest

from .dataset import CLASSES
from .loop import (
    connect_backend,
    project_webhooks,
    retrains,
    UNTRAINED,
    retrieve_predictions,
    served_name,
    timed,
    wait_for_idle_version,
)

pytestmark = pytest.mark.integration

# LS sends webhooks inside the annotator's request with a 1 s timeout; a submit that takes
# much longer than that means the backend is doing work in /webhook.
MAX_SUBMIT_SECONDS = 3.0


def _choices(prediction: dict) -> list[str]:
    return [c for r in prediction.get("result") or [] for c in r["value"].get("choices", [])]


def _of_version(api, task_id: int, version: str) -> list[dict]:
    return [p for p in api.predictions(task_id) if p["model_version"] == version]


def _assert_one_valid_prediction(api, task_id: int, version: str) -> str:
    preds = _of_version(api, task_id, version)
    assert len(preds) == 1, (task_id, version, api.predictions(task_id))
    (choice,) = _choices(preds[0])
    assert choice in CLASSES, preds[0]
    assert 0.0 <= preds[0]["score"] <= 1.0, preds[0]
    return choice


def test_annotations_retrain_and_predictions_reach_label_studio(ls_project, backend):
    api = ls_project.api
    label_config = ls_project.raw["label_config"]
    assert backend.status(ls_project.id)["serving_version"] is None
    assert backend.setup_version(ls_project.id, label_config) == UNTRAINED

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
    # Below the promotion rule's minimum held-out size a new version always serves.
    assert version == status["versions"][-1]["version"], status["versions"]
    assert version.startswith("v") and version[1:].isdigit(), status
    version = served_name(status)  # its name in Label Studio
    assert backend.setup_version(ls_project.id, label_config) == version
    jobs = retrains(status)
    assert jobs and all(j["status"] == "finished" for j in jobs), status["jobs"]
    # Each retrain was caused by a webhook LS sent on an annotator's submit.
    assert {j["reason"] for j in jobs} == {"ANNOTATION_CREATED"}, status["jobs"]
    print("versions:", status["versions"])

    unlabeled = [t for t in ls_project.task_ids if all(t not in ids for ids in labelled.values())]
    # Every unlabeled task gets exactly one prediction of the serving version, whether the
    # backend pushed it or LS fetched it ("Retrieve predictions" skips tasks that have one).
    retrieve_predictions(ls_project, unlabeled)
    correct = sum(
        _assert_one_valid_prediction(api, t, version) == ls_project.truth[t] for t in unlabeled
    )
    print(f"{version}: {correct}/{len(unlabeled)} unlabeled tasks predicted correctly")

    # LS's own pull through /predict: a task with no prediction at all is predicted when it is
    # opened through the API; the Data Manager action fetches tasks lacking the current version.
    opened, retrieved = unlabeled[0], unlabeled[1]
    for task_id in (opened, retrieved):
        for p in api.predictions(task_id):
            api.delete(f"/api/predictions/{p['id']}/")
        assert api.predictions(task_id) == []
    api.get(f"/api/tasks/{opened}")
    _assert_one_valid_prediction(api, opened, version)
    retrieve_predictions(ls_project, [retrieved])
    _assert_one_valid_prediction(api, retrieved, version)


def test_skipped_annotation_is_not_a_label(ls_project, backend):
    api = ls_project.api
    connect_backend(ls_project, backend)
    # The skip comes first and carries a wrong choice: if training counted it, the final
    # version would have one label more (and a red image taught as blue).
    skipped_task = ls_project.tasks_of("red")[-1]
    skip = api.annotate(skipped_task, "blue", was_cancelled=True)
    assert skip["was_cancelled"] is True
    for label in CLASSES:
        for task_id in ls_project.tasks_of(label)[:2]:
            api.annotate(task_id, label)

    status = wait_for_idle_version(backend, ls_project.id, n_labels=6)
    final = status["versions"][-1]
    assert final["n_labels"] == 6, final
    assert final["serving"], status["versions"]
    print("versions:", status["versions"])


def test_burst_of_annotations_coalesces_retrains(ls_project, backend):
    api = ls_project.api
    connect_backend(ls_project, backend)
    burst = [t for label in CLASSES for t in ls_project.tasks_of(label)[:2]][:5]
    _, burst_seconds = timed(lambda: [api.annotate(t, ls_project.truth[t]) for t in burst])

    status = wait_for_idle_version(backend, ls_project.id, n_labels=len(burst))
    jobs = retrains(status)
    summary = [(j["status"], j.get("n_labels"), j["seconds"]) for j in reversed(jobs)]
    print(f"burst of {len(burst)} submits in {burst_seconds:.2f}s -> retrains {summary}")
    # One retrain starts on the first webhook; every webhook while it runs folds into a single
    # follow-up. Five submits (~0.3 s each) take about as long as one retrain.
    assert len(jobs) <= 3, (burst_seconds, summary)
    assert len(status["versions"]) <= 3, (burst_seconds, status["versions"])
    assert status["versions"][-1]["n_labels"] == len(burst)

    # Webhooks straight to the backend, far faster than a retrain: at most one is queued behind
    # the one that may already have started; the rest are folded in.
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
    status = wait_for_idle_version(
        backend, ls_project.id, n_labels=len(burst), min_retrains=before + 1
    )
    assert 1 <= len(retrains(status)) - before <= 2, status["jobs"]
