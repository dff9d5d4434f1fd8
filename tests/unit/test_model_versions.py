"""Versions through the retrain job: promotion, evaluation roles, annotation filters, rollback."""

import json

import pytest

from ml_backend.runtime import Runtime
from ml_backend.steps import retrain, rollback
from model.versions import UnknownVersion


def runtime_with(settings, fake_ls, **changes) -> Runtime:
    return Runtime(settings.model_copy(update=changes), labelstudio=fake_ls)


def relabel(fake_ls, task_ids, mapping):
    for task in fake_ls.task_list:
        if task["id"] in task_ids:
            old = fake_ls.choice(task)
            task["annotations"] = [fake_ls.annotation(mapping[old], task["id"] + 100)]


@pytest.fixture
def fake_choice(fake_ls):
    fake_ls.choice = lambda task: task["annotations"][0]["result"][0]["value"]["choices"][0]
    return fake_ls


def test_a_worse_version_is_kept_but_does_not_serve(settings, fake_choice):
    fake_ls = fake_choice
    rt = runtime_with(settings, fake_ls, promotion_min_heldout=0, promotion_tolerance=0.0,
                      promotion_metric="accuracy")
    first = retrain(rt, 1)
    store = rt.versions(1)
    held = json.loads((store.versions_dir / "v1" / "tasks.json").read_text())["val"]
    assert first["version"] == "v1" and store.serving() == "v1" and held
    # Annotators get the training tasks wrong; the held-out tasks keep their labels.
    trained = set(store.load("v1").tasks["train"])
    relabel(fake_ls, trained, {"red": "green", "green": "blue", "blue": "red"})
    second = retrain(rt, 1)
    assert second["version"] == "v2" and second["promoted"] is False
    assert store.serving() == "v1" and store.names() == ["v1", "v2"]
    verdict = store.meta("v2")["promotion"]
    assert verdict["promoted"] is False and verdict["metric"] == "accuracy"
    assert verdict["new"] < verdict["old"] and "keeps serving" in verdict["reason"]
    assert store.meta("v1")["promotion"]["promoted"] is True

    # Rolling back and forth never changes a version, only which one serves.
    assert rollback(rt, 1, "v2") == {"project": 1, "serving": "v2", "was": "v1", "pushed": 6}
    assert store.serving() == "v2" and rt.serving_model(1).name == "v2"
    # Label Studio's queue follows the rolled-back version, title included.
    assert fake_ls.sampling["model_version"] == "al-v2" and fake_ls.backends[0]["title"] == "al-v2"
    assert sorted(fake_ls.queue("al-v2")) == sorted(
        t["id"] for t in fake_ls.task_list if not t["annotations"])
    assert store.meta("v2")["rolled_back_from"] == "v1"
    with pytest.raises(UnknownVersion, match=r"no version 'v9' \(it has: v1, v2\)"):
        rollback(rt, 1, "v9")
    with pytest.raises(UnknownVersion):
        rollback(rt, 1, "../2/versions/v1")
    assert store.serving() == "v2"


def test_tasks_marked_val_or_test_are_never_trained_on(settings, fake_ls):
    for task in fake_ls.task_list:
        if task["annotations"] and task["id"] % 4 == 1:
            task["data"]["split"] = "test"
        elif task["annotations"] and task["id"] % 4 == 2:
            task["data"]["split"] = "val"
    marked = {t["id"]: t["data"].get("split") for t in fake_ls.task_list if t["annotations"]}
    rt = runtime_with(settings, fake_ls)
    retrain(rt, 1)
    version = rt.versions(1).load("v1")
    assert sorted(version.tasks["test"]) == sorted(t for t, s in marked.items() if s == "test")
    assert sorted(version.tasks["val"]) == sorted(t for t, s in marked.items() if s == "val")
    assert not set(version.tasks["train"]) & {t for t, s in marked.items() if s}
    assert version.meta["n_train"] == len(version.tasks["train"]) == 6
    assert version.meta["test_metrics"]["n"] == len(version.tasks["test"])
    assert version.meta["train"]["holdout"] == 0.2  # the config used is recorded


def test_annotation_filters_choose_what_is_trained_on(settings, fake_ls):
    for i, task in enumerate(t for t in fake_ls.task_list if t["annotations"]):
        ann = task["annotations"][0]
        ann["completed_by"] = 7 if i % 2 else 8
        ann["created_username"] = "ann@example.com, 7" if i % 2 else "bob@example.com, 8"
        ann["ground_truth"] = i < 4
    rt = runtime_with(settings, fake_ls, annotators=["ANN@example.com"])
    assert retrain(rt, 1)["n_labels"] == 6
    skipped = rt.versions(1).meta("v1")["skipped"]
    assert skipped["annotated only by annotators not in ANNOTATORS"] == 6

    rt = runtime_with(settings, fake_ls, annotators=["7", "8"], ground_truth_only=True)
    assert retrain(rt, 1)["n_labels"] == 4
