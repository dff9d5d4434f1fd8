"""Rank everything, publish the head (real Label Studio): a retrain stores predictions for the
first QUEUE_HEAD tasks of its order only; annotators working through the head faster than
retrains land get it topped up from the rest of the order; a task Label Studio predicts on
demand joins the queue at its place in that order."""

from __future__ import annotations

import pytest

from .dataset import CLASSES
from .loop import connect_backend, retrieve_predictions, wait_for_idle_version
from .procs import wait_until
from .stack import start_stack

pytestmark = pytest.mark.integration

HEAD = 4


@pytest.fixture
def stack(label_studio, redis_url, tmp_path):
    # RETRAIN_EVERY high: annotations never retrain here, so only top-ups extend the order.
    s = start_stack(label_studio.url, label_studio.token, redis_url, tmp_path,
                    QUEUE_HEAD=str(HEAD), RETRAIN_EVERY="100", RECONCILE_INTERVAL="0")
    yield s
    print(s.logs(80))
    s.stop()


def of_version(project, version: str) -> dict[int, float]:
    """Task -> score of its prediction of `version` (one each)."""
    preds = [p for p in project.api.project_predictions(project.id)
             if p["model_version"] == version]
    assert len({p["task"] for p in preds}) == len(preds), preds
    return {p["task"]: p["score"] for p in preds}


def test_label_all_tasks_follows_the_whole_order_through_top_ups(ls_project, stack):
    api, pid = ls_project.api, ls_project.id
    connect_backend(ls_project, stack)
    labelled = {ls_project.tasks_of(c)[0] for c in CLASSES}
    for t in labelled:
        api.annotate(t, ls_project.truth[t])
    stack.http.post("/webhook", json={"action": "START_TRAINING", "project": pid})
    status = wait_for_idle_version(stack, pid, len(labelled))
    version = "al-" + status["serving_version"]
    assert api.get(f"/api/projects/{pid}/")["model_version"] == version
    assert len(of_version(ls_project, version)) == HEAD  # the head only

    served: list[float] = []
    pushed = HEAD
    for _ in range(2):
        for _ in range(HEAD // 2):  # half the head: a top-up is due
            task = api.next_task(pid)
            (pred,) = [p for p in task["predictions"] if p["model_version"] == version]
            served.append(pred["score"])
            api.annotate(task["id"], ls_project.truth[task["id"]])
            labelled.add(task["id"])
        pushed += HEAD // 2
        wait_until(lambda: len(of_version(ls_project, version)) == pushed or None, 60, 0.5,
                   f"the head topped up to {pushed} predictions")
    assert served == sorted(served), served  # each the lowest score left: the order

    # The rest of the order on demand ("Retrieve predictions": Label Studio calls /predict):
    # scores on the same scale, so every one of them comes after what was pushed.
    scores = of_version(ls_project, version)
    rest = [t for t in ls_project.task_ids if t not in labelled and t not in scores]
    assert rest
    retrieve_predictions(ls_project, rest)
    scores = of_version(ls_project, version)
    assert set(scores) >= set(rest)
    assert min(scores[t] for t in rest) >= max(s for t, s in scores.items() if t not in rest)
    unlabelled = {t: s for t, s in scores.items() if t not in labelled}
    task = api.next_task(pid)
    assert unlabelled[task["id"]] == min(unlabelled.values()), (task["id"], unlabelled)
    print(f"served scores {served}; {len(rest)} predicted on demand")
