"""What an annotator sees: "Label All Tasks" serves, pre-annotated, the task the model needs most.

Every task here is taken from Label Studio's own label stream (`GET /api/projects/{id}/next/`,
what "Label All Tasks" calls; it also locks the task for the user) and answered with an
annotation, as an annotator would. Label Studio 1.23 serves, under "Uncertainty sampling", the
unlocked unlabelled task whose prediction of the project's `model_version` has the lowest score,
taking the first in that order while the project has no team members (community edition):
so the order served must be exactly the order of the scores the backend pushed.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from PIL import Image

from .dataset import CLASSES, IMAGE_SIZE, IMAGE_SUBDIR, local_files_url
from .labelstudio import LSApi, sign_up
from .loop import (
    TRAIN_TIMEOUT,
    UNTRAINED,
    connect_backend,
    run_seed,
    served_name,
    served_order,
    wait_for_idle_version,
)
from .procs import wait_until

pytestmark = pytest.mark.integration

UNCERTAINTY = "Uncertainty sampling"
SEED_SIZE = 6


def _choices(prediction: dict) -> list[str]:
    return [c for r in prediction.get("result") or [] for c in r["value"].get("choices", [])]


def _serve(api: LSApi, project_id: int) -> dict:
    task = api.next_task(project_id)
    assert task is not None, "the label stream served nothing"
    return task


def _label_first_served(project, n: int, already: set[int]) -> list[int]:
    """Take `n` tasks from the admin's label stream and annotate each with its true label."""
    served = []
    for _ in range(n):
        task = _serve(project.api, project.id)
        assert task["id"] not in already | set(served), (task["id"], served)
        project.api.annotate(task["id"], project.truth[task["id"]])
        served.append(task["id"])
    return served


def _annotate_one_per_class(project) -> list[int]:
    tasks = [project.tasks_of(label)[0] for label in CLASSES]
    for t in tasks:
        project.api.annotate(t, project.truth[t])
    return tasks


def assert_queue_follows(project, backend, version: str, labelled: set[int]) -> list[int]:
    """Label Studio serves `version`'s order: one prediction of it per unlabelled task (with a
    pre-annotation), the project on uncertainty sampling over it, our backend titled with it.
    Returns the served order (lowest score first)."""
    api, pid = project.api, project.id
    settings = api.get(f"/api/projects/{pid}/")
    assert (settings["sampling"], settings["model_version"]) == (UNCERTAINTY, version), settings
    ml = api.get("/api/ml/", params={"project": pid})
    assert [b["title"] for b in ml] == [version], ml
    assert backend.setup_version(pid, settings["label_config"]) == version

    unlabelled = set(project.task_ids) - labelled
    current = [p for p in api.project_predictions(pid) if p["model_version"] == version]
    per_task = {}
    for p in current:
        per_task.setdefault(p["task"], []).append(p)
    assert set(per_task) == unlabelled, (sorted(per_task), sorted(unlabelled))
    assert all(len(ps) == 1 for ps in per_task.values()), per_task
    for (p,) in per_task.values():
        assert 0.0 <= p["score"] <= 1.0, p
        if version != UNTRAINED:
            (choice,) = _choices(p)
            assert choice in CLASSES, p
    stored = api.get(f"/api/projects/{pid}/model-versions/")
    assert stored.get(version) == len(unlabelled), stored
    return served_order(project, version)


def test_seeded_order_is_served_then_each_retrain_reorders_it(ls_project, backend, label_studio):
    """Seed, label the seed from the stream, then a retrain's order takes over."""
    api, pid = ls_project.api, ls_project.id
    chosen = run_seed(ls_project, backend, label_studio.url, label_studio.token,
                      SEED_SIZE, "kcenter")  # fmt: skip
    settings = api.get(f"/api/projects/{pid}/")
    assert (settings["sampling"], settings["model_version"]) == (UNCERTAINTY, UNTRAINED)
    order = served_order(ls_project, UNTRAINED)
    assert sorted(order) == ls_project.task_ids, order  # one seed prediction per task
    assert order[:SEED_SIZE] == chosen, (order, chosen)

    # The seed's tasks are served exactly in the seed's order, without pre-annotations (there
    # is no model yet). No backend is connected yet: no retrain may reorder in between.
    labelled: list[int] = []
    for expected in chosen:
        task = _serve(api, pid)
        assert task["id"] == expected, (task["id"], task.get("queue"), chosen, labelled)
        assert [(p["model_version"], p["result"]) for p in task["predictions"]] == [
            (UNTRAINED, [])
        ], task["predictions"]
        api.annotate(expected, ls_project.truth[expected])
        labelled.append(expected)

    # Connected, the next submit goes to /webhook and retrains; what it submits is still the
    # seed's continuation.
    connect_backend(ls_project, backend)
    task = _serve(api, pid)
    assert task["id"] == order[SEED_SIZE], (task["id"], order)
    api.annotate(task["id"], ls_project.truth[task["id"]])
    labelled.append(task["id"])

    status = wait_for_idle_version(backend, pid, n_labels=len(labelled))
    assert status["serving_version"] == status["versions"][-1]["version"], status["versions"]
    version = served_name(status)
    new_order = assert_queue_follows(ls_project, backend, version, set(labelled))
    assert UNTRAINED in api.get(f"/api/projects/{pid}/model-versions/")  # within KEEP_VERSIONS

    # The next image is the one with the lowest score, pre-annotated by the new version.
    task = _serve(api, pid)
    best = new_order[0]
    scores = {p["task"]: p["score"] for p in api.project_predictions(pid)
              if p["model_version"] == version}  # fmt: skip
    assert scores[task["id"]] == scores[best], (task["id"], best, scores)
    (pred,) = task["predictions"]
    assert pred["model_version"] == version and _choices(pred)[0] in CLASSES, pred
    print(f"seed {chosen}; {version} serves {new_order[:5]}...")


def test_two_annotators_never_get_the_same_task(ls_project, backend, label_studio):
    """Two people on "Label All Tasks" at once, while retrains reorder the queue under them."""
    api, pid = ls_project.api, ls_project.id
    connect_backend(ls_project, backend)
    labelled = set(_annotate_one_per_class(ls_project))
    status = wait_for_idle_version(backend, pid, n_labels=len(labelled))
    order = assert_queue_follows(ls_project, backend, served_name(status), labelled)

    other = LSApi(label_studio.url, sign_up(api, "annotator2@example.com", "annotator-2-pw-123"))
    users = {"admin": api, "annotator2": other}
    try:
        # At rest: the first gets the head of the queue, the second the next one (the head is
        # locked), and asking again returns one's own locked task.
        held = {"admin": _serve(api, pid)["id"]}
        held["annotator2"] = _serve(other, pid)["id"]
        assert [held["admin"], held["annotator2"]] == order[:2], (held, order[:4])
        again = _serve(other, pid)
        assert (again["id"], again["queue"]) == (held["annotator2"], "Task lock"), again

        # Interleaved: each submits and asks for the next while the other holds a task and
        # the submits retrain and reorder the queue.
        served = {name: [t] for name, t in held.items()}
        for _ in range(4):
            for name, mine in (("admin", "annotator2"), ("annotator2", "admin")):
                me = users[name]
                me.annotate(held[name], ls_project.truth[held[name]])
                labelled.add(held[name])
                task = _serve(me, pid)
                assert task["id"] != held[mine], (name, task["id"], held)
                assert task["id"] not in labelled, (name, task["id"], sorted(labelled))
                held[name] = task["id"]
                served[name].append(task["id"])
        both = set(served["admin"]) & set(served["annotator2"])
        assert not both, served
        print("served:", served)
    finally:
        other.close()

    for t in labelled:  # every submitted task has exactly one annotation
        assert len(api.get(f"/api/tasks/{t}/annotations/")) == 1, t
    # Both still hold one task each; the last retrain saw every submit.
    wait_for_idle_version(backend, pid, n_labels=len(labelled), timeout=TRAIN_TIMEOUT)


def test_imported_task_gets_a_priority_of_the_serving_version(ls_project, backend, label_studio):
    """A task imported mid-way joins the queue: TASKS_CREATED makes the worker push its
    prediction under the serving version, so it is not served only after all the others."""
    api, pid = ls_project.api, ls_project.id
    connect_backend(ls_project, backend)
    labelled = set(_annotate_one_per_class(ls_project))
    status = wait_for_idle_version(backend, pid, n_labels=len(labelled))
    version = served_name(status)
    assert_queue_follows(ls_project, backend, version, labelled)
    before = [j for j in status["jobs"] if j.get("kind") == "prioritize"]

    rel = f"{IMAGE_SUBDIR}/late/late_{pid}.png"
    path = label_studio.images_root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(pid).normal((200, 40, 40), 25, (IMAGE_SIZE, IMAGE_SIZE, 3))
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB").save(path)
    t0 = time.monotonic()
    (new,) = api.import_tasks(pid, [{"data": {"image": local_files_url(rel)}}])

    # Only GET /api/predictions/ here: opening the task would make LS call /predict itself.
    def pushed() -> list[dict] | None:
        return [p for p in api.predictions(new) if p["model_version"] == version] or None

    (pred,) = wait_until(pushed, TRAIN_TIMEOUT, 1.0, f"a {version} prediction for task {new}")
    seconds = time.monotonic() - t0
    assert 0.0 <= pred["score"] <= 1.0 and _choices(pred)[0] in CLASSES, pred

    def recorded() -> dict | None:  # the job records itself just after its push
        status = backend.status(pid)
        done = [j for j in status["jobs"] if j.get("kind") == "prioritize" and j not in before]
        return status if any(j["reason"] == "TASKS_CREATED" and j["status"] == "finished"
                             and j.get("pushed") == 1 for j in done) else None  # fmt: skip

    status = wait_until(recorded, 60, 0.5, "the TASKS_CREATED job in the history")
    assert served_name(status) == version

    ls_project.truth[new] = "red"
    order = assert_queue_follows(ls_project, backend, version, labelled)
    assert new in order
    print(f"task {new} got a {version} priority after {seconds:.1f}s: place {order.index(new)}")

    # The worker keeps its listing of the project's tasks between retrains; the import made it
    # list them again, so the next retrain orders the new task too.
    other = next(t for t in ls_project.task_ids if t not in labelled and t != new)
    api.annotate(other, ls_project.truth[other])
    labelled.add(other)
    status = wait_for_idle_version(backend, pid, n_labels=len(labelled))
    assert served_name(status) != version
    assert new in assert_queue_follows(ls_project, backend, served_name(status), labelled)
