"""The queue Label Studio serves follows the pushed priorities (against a fake Label Studio)."""

import pytest
from redis import Redis

from ml_backend.pruning import ROOM_SLACK, prune_versions, stale_versions
from ml_backend.queue_state import ProjectQueue
from ml_backend.queueing import enqueue, enqueue_retrain
from ml_backend.seeding import seed
from ml_backend.steps import prioritize, retrain


def unlabelled(fake_ls):
    return {t["id"] for t in fake_ls.task_list if not t["annotations"]}


def test_a_retrain_gives_every_unlabelled_task_a_prediction_of_the_new_version(runtime, fake_ls):
    result = retrain(runtime, 1)
    assert result["queue"]["pushed"] == len(unlabelled(fake_ls)) == 6
    preds = [p for p in fake_ls.predictions if p["model_version"] == "al-v1"]
    assert {p["task"] for p in preds} == unlabelled(fake_ls)
    assert all(0 <= p["score"] <= 1 and p["result"] for p in preds)
    assert fake_ls.sampling == {"sampling": "Uncertainty sampling", "model_version": "al-v1"}
    # Our backend's title follows the version; another backend is left alone.
    assert [b["title"] for b in fake_ls.backends] == ["al-v1", "someone else's"]


def test_each_retrain_reorders_under_a_new_version_and_prunes_old_ones(runtime, fake_ls):
    runtime.settings.keep_versions = 2
    for _ in range(3):
        retrain(runtime, 1)
    assert set(fake_ls.model_versions(1)) == {"al-v2", "al-v3"}
    assert fake_ls.sampling["model_version"] == "al-v3"


def test_a_failed_deletion_of_an_old_version_leaves_the_new_order_live(runtime, fake_ls):
    """Deleting a large version can outlast the timeout on a busy Label Studio; the order is
    live by then, so the job must not fail (and retrain again): the next round deletes it."""
    runtime.settings.keep_versions = 1
    retrain(runtime, 1)
    delete = fake_ls.delete_model_version

    def busy(project: int, version: str, *, more=None) -> int:
        raise RuntimeError("DELETE /api/predictions/3/ timed out")

    fake_ls.delete_model_version = busy
    result = retrain(runtime, 1)
    assert result["queue"]["deleted_versions"] == []
    assert fake_ls.sampling["model_version"] == "al-v2"
    fake_ls.delete_model_version = delete
    result = retrain(runtime, 1)
    assert result["queue"]["made_room"] + result["queue"]["deleted_versions"] == ["al-v1", "al-v2"]
    assert set(fake_ls.model_versions(1)) == {"al-v3"}


def test_labelling_removes_a_task_from_the_next_order(runtime, fake_ls):
    retrain(runtime, 1)
    first = fake_ls.queue("al-v1")[0]
    task = next(t for t in fake_ls.task_list if t["id"] == first)
    task["annotations"] = [fake_ls.annotation(task["truth"], first)]
    retrain(runtime, 1)
    assert first not in fake_ls.queue("al-v2")
    assert len(fake_ls.queue("al-v2")) == 5


def test_a_task_with_a_broken_image_is_served_last(runtime, fake_ls):
    broken = next(t for t in fake_ls.task_list if not t["annotations"])
    fake_ls.images[broken["data"]["image"]] = b"broken"
    retrain(runtime, 1)
    assert fake_ls.queue("al-v1")[-1] == broken["id"]


def test_seed_queues_the_chosen_subset_first_without_pre_annotations(runtime, fake_ls):
    for t in fake_ls.task_list:
        t["annotations"] = []
    out = seed(runtime, 1, 3, "kcenter", progress=False)
    assert len(out["chosen"]) == 3 and out["version"] == "al-untrained"
    assert fake_ls.queue("al-untrained")[:3] == out["chosen"]
    assert all(p["result"] == [] for p in fake_ls.predictions)
    assert fake_ls.sampling["model_version"] == "al-untrained"
    again = seed(runtime, 1, 3, "kcenter", progress=False)
    assert again["chosen"] == out["chosen"]
    assert len(fake_ls.predictions) == len(fake_ls.task_list)  # replaced, not duplicated


def test_seed_dry_run_changes_nothing_and_covers_the_classes(runtime, fake_ls):
    for t in fake_ls.task_list:
        t["annotations"] = []
    out = seed(runtime, 1, 3, "auto", dry_run=True, progress=False)
    assert fake_ls.predictions == [] and fake_ls.sampling["sampling"] == "Sequential sampling"
    truth = {t["id"]: t["truth"] for t in fake_ls.task_list}
    assert {truth[t] for t in out["chosen"]} == {"red", "green", "blue"}


@pytest.mark.parametrize("change, message", [
    (lambda ls: setattr(ls, "config", "<View><Text name='t' value='$t'/></View>"), "Image"),
    (lambda ls: setattr(ls, "task_list", []), "no tasks"),
])
def test_seed_errors_are_one_line(runtime, fake_ls, change, message):
    change(fake_ls)
    with pytest.raises(ValueError, match=message):
        seed(runtime, 1, 3, progress=False)


def test_new_tasks_get_a_priority_under_the_serving_version(runtime, fake_ls):
    retrain(runtime, 1)
    new = {"id": 99, "data": {"image": fake_ls.task_list[0]["data"]["image"]},
           "annotations": [], "truth": "red"}
    fake_ls.task_list.append(new)
    result = prioritize(runtime, 1)
    assert result == {"pushed": 1, "version": "al-v1", "strategy": result["strategy"]}
    assert 99 in fake_ls.queue("al-v1")
    assert prioritize(runtime, 1)["pushed"] == 0  # idempotent


def test_retrain_every_n_annotations(settings):
    redis = Redis.from_url(settings.redis_url)
    settings.retrain_every = 3
    got = [enqueue_retrain(redis, settings, 1, "ANNOTATION_CREATED")["status"]
           for _ in range(3)]
    assert got == ["counted", "counted", "queued"]
    assert enqueue_retrain(redis, settings, 2, "START_TRAINING")["status"] == "queued"


def test_tasks_the_annotation_filters_leave_out_are_not_queued(runtime, fake_ls):
    """An annotated task whose annotations ANNOTATORS ignores is neither trained on nor offered
    for labelling again."""
    annotated = [t for t in fake_ls.task_list if t["annotations"]]
    for i, task in enumerate(annotated):
        task["annotations"][0]["completed_by"] = 7 if i % 2 else 8
    runtime.settings.annotators = ["7"]
    result = retrain(runtime, 1)
    assert result["n_labels"] == 6
    queued = {p["task"] for p in fake_ls.predictions if p["model_version"] == "al-v1"}
    assert queued == unlabelled(fake_ls)


def test_a_large_old_version_is_deleted_in_slices_by_prune_jobs(settings, worker_runtime,
                                                                fake_ls):
    """Deleting thousands of predictions takes minutes: each job deletes for one slice and a
    `prune` job goes on with the rest, queued behind any retrain, recorded only if it fails."""
    from rq import Queue, SimpleWorker

    redis = Redis.from_url(settings.redis_url)
    worker_runtime.settings.keep_versions = 1
    fake_ls.deletes_per_call = 2  # 6 predictions of v1: three slices
    queue = Queue(settings.queue_name, connection=redis)
    for _ in range(2):
        enqueue(redis, settings, "retrain", 1, "START_TRAINING")
        SimpleWorker([queue], connection=redis).work(burst=True, max_jobs=1)
    assert fake_ls.model_versions(1) == {"al-v1": 4, "al-v2": 6}  # one slice done in the retrain
    assert queue.count == 1 and queue.jobs[0].func_name == "ml_backend.jobs.prune"
    enqueue(redis, settings, "retrain", 1, "START_TRAINING")  # an annotation meanwhile
    SimpleWorker([queue], connection=redis).work(burst=True)
    assert set(fake_ls.model_versions(1)) == {"al-v3"}
    assert [h["kind"] for h in ProjectQueue(redis, 1).history()] == ["retrain"] * 3
    assert not ProjectQueue(redis, 1).is_pending("prune")


def test_deleting_old_versions_gives_way_to_a_waiting_retrain_but_never_piles_up(
        runtime, fake_ls):
    """A retrain queued while old versions are deleted goes first (annotators wait for their
    new order, not for clean-up); but more than one stale version (ROOM_SLACK) is never left:
    a retrain deletes the oldest in full before it pushes."""
    runtime.settings.keep_versions = 2
    fake_ls.deletes_per_call = 0  # Label Studio too busy to delete anything within a slice
    for _ in range(3):
        retrain(runtime, 1)
    stored = fake_ls.model_versions(1)
    assert stale_versions(runtime, 1, "al-v3", stored) == ["al-v1"]
    fake_ls.deletes_per_call = 10**9
    deleted, pending = prune_versions(runtime, 1, "al-v3", stored, interrupted=lambda: True)
    assert (deleted, pending) == ([], True) and fake_ls.model_versions(1) == stored

    fake_ls.deletes_per_call = 0
    for _ in range(3):
        result = retrain(runtime, 1)
        stale = stale_versions(runtime, 1, "al-" + result["version"],
                               fake_ls.model_versions(1))
        assert len(stale) <= ROOM_SLACK, stale
    assert result["queue"]["made_room"] == ["al-v3"]
    assert set(fake_ls.model_versions(1)) == {"al-v4", "al-v5", "al-v6"}  # 2 kept, 1 waiting


def test_question_weights_read_as_name_weight_pairs(settings):
    from pydantic import ValidationError

    from ml_backend.settings import Settings

    base = settings.model_dump() | {"question_weights": "species:2, tags:0.5"}
    assert Settings(**base).question_weights == {"species": 2.0, "tags": 0.5}
    for bad in ("species", "species:heavy", "species:-1", ":2"):
        with pytest.raises(ValidationError, match="QUESTION_WEIGHTS"):
            Settings(**base | {"question_weights": bad})


def test_a_question_added_mid_project_keeps_the_first_one_answered(runtime, fake_ls):
    from tests.unit.fakes import answer_both

    retrain(runtime, 1)  # one single-choice question: a plain head, as always
    answer_both(fake_ls, 0)  # the config now asks two questions; nothing answers the tags yet
    for t in fake_ls.task_list[:12]:
        t["annotations"] = [fake_ls.annotation(t["truth"], t["id"])]
    assert retrain(runtime, 1)["version"] == "v2"
    preds = [p for p in fake_ls.predictions if p["model_version"] == "al-v2"]
    assert preds and all({r["from_name"] for r in p["result"]} == {"colour"} for p in preds)
    # Once some annotations answer the tags too, the next version answers both.
    answer_both(fake_ls, 6)
    for t in fake_ls.task_list[6:12]:
        t["annotations"] = [fake_ls.annotation(t["truth"], t["id"])]
    assert retrain(runtime, 1)["version"] == "v3"
    preds = [p for p in fake_ls.predictions if p["model_version"] == "al-v3"]
    assert any({r["from_name"] for r in p["result"]} == {"colour", "tags"} for p in preds)
    assert runtime.versions(1).load("v3").meta["label_counts"]["tags"]
