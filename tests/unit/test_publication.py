"""Publishing an order: only our own versions, the head of the order, and a retrain that failed
half way published by its retry (against the fake Label Studio; tests/integration has the real
one)."""

import json

import pytest
from fastapi.testclient import TestClient
from redis import Redis

from ml_backend import orders, reconcile
from ml_backend.ownership import ForeignVersion, record_path
from ml_backend.queue_state import ProjectQueue
from ml_backend.server import create_app
from ml_backend.steps import StepContext, prioritize, retrain, topup
from tests.unit.fakes import CONFIG


def foreign(fake_ls, version: str, n: int = 3) -> list[dict]:
    """Predictions a user imported under `version`."""
    preds = [{"task": t["id"], "result": [], "score": 0.5, "model_version": version}
             for t in fake_ls.task_list[:n]]
    fake_ls.predictions += [dict(p) for p in preds]
    return preds


def of(fake_ls, version: str) -> list[dict]:
    return [p for p in fake_ls.predictions if p["model_version"] == version]


def test_foreign_versions_named_like_ours_survive_retrains_and_pruning(runtime, fake_ls):
    runtime.settings.keep_versions = 1
    theirs = {v: foreign(fake_ls, v) for v in ("v1", "v2", "untrained")}
    for _ in range(3):
        retrain(runtime, 1)
    for version, preds in theirs.items():
        assert of(fake_ls, version) == preds, version
    assert set(fake_ls.model_versions(1)) == {"v1", "v2", "untrained", "al-v3"}
    assert fake_ls.sampling["model_version"] == "al-v3"


def test_a_push_into_a_version_someone_else_holds_is_refused(runtime, fake_ls):
    theirs = foreign(fake_ls, "al-v1")
    with pytest.raises(ForeignVersion, match="'al-v1'.*did not create"):
        retrain(runtime, 1)
    assert fake_ls.predictions == theirs
    assert fake_ls.sampling["model_version"] == ""


def test_versions_an_older_release_pushed_are_still_ours(runtime, fake_ls):
    """Before VERSION_PREFIX, versions were pushed as `v<N>` and seeds as `untrained`: those
    of a project's own versions are still recognised, retitled away from and deleted."""
    retrain(runtime, 1)
    store = runtime.versions(1)
    path = store.versions_dir / "v1" / "meta.json"
    meta = json.loads(path.read_text())
    del meta["label_studio_prefix"]  # as an older release wrote it
    path.write_text(json.dumps(meta))
    record_path(runtime.settings, 1).unlink()
    for p in fake_ls.predictions:
        p["model_version"] = "v1"
    foreign(fake_ls, "untrained")  # the old seed
    fake_ls.sampling["model_version"] = "v1"
    fake_ls.backends[0] |= {"title": "v1", "model_version": "v1"}
    assert runtime.serving_version(1) == "v1"  # /setup goes on answering what LS serves

    runtime.settings.keep_versions = 1
    retrain(runtime, 1)
    assert set(fake_ls.model_versions(1)) == {"al-v2"}
    assert [b["title"] for b in fake_ls.backends] == ["al-v2", "someone else's"]


def test_a_queue_head_is_pushed_and_the_rest_predicted_on_its_scale(runtime, fake_ls):
    runtime.settings.queue_head = 2
    result = retrain(runtime, 1)
    assert (result["queue"]["pushed"], result["queue"]["ranked"]) == (2, 6)
    head = sorted(of(fake_ls, "al-v1"), key=lambda p: p["score"])
    rest = [t["id"] for t in fake_ls.task_list
            if not t["annotations"] and t["id"] not in {p["task"] for p in head}]
    client = TestClient(create_app(runtime.settings, runtime))
    body = {"tasks": [{"id": t, "data": {"image": fake_ls.task_list[t - 1]["data"]["image"]}}
                      for t in rest], "project": "1.1", "label_config": CONFIG}
    answers = client.post("/predict", json=body).json()["results"]
    assert all(a["model_version"] == "al-v1" and a["result"] for a in answers)
    scores = [a["score"] for a in answers]
    assert min(scores) >= head[-1]["score"]  # on the order's scale: after the head
    assert len(set(scores)) == len(scores)  # each its own place, not a class probability


def test_only_new_tasks_get_a_priority_not_those_outside_the_head(runtime, fake_ls):
    runtime.settings.queue_head = 2
    retrain(runtime, 1)
    fake_ls.task_list.append({"id": 99, "data": {"image": fake_ls.task_list[0]["data"]["image"]},
                              "annotations": [], "truth": "red"})
    assert prioritize(runtime, 1)["pushed"] == 1
    assert sorted(p["task"] for p in of(fake_ls, "al-v1"))[-1] == 99
    assert len(of(fake_ls, "al-v1")) == 3


def test_a_head_running_low_is_topped_up_from_the_stored_order(runtime, fake_ls, redis_url):
    redis = Redis.from_url(redis_url)
    runtime.settings.queue_head = 2
    ctx = StepContext(redis=redis)
    retrain(runtime, 1, ctx)
    first = [p["task"] for p in sorted(of(fake_ls, "al-v1"), key=lambda p: p["score"])]
    client = TestClient(create_app(runtime.settings, runtime))
    event = {"action": "ANNOTATION_CREATED", "project": 1, "annotation": {"id": 1}}
    assert client.post("/webhook", json=event).status_code == 200
    assert ProjectQueue(redis, 1).is_pending("topup")  # 1 of 2 left: half the head
    out = topup(runtime, 1, ctx)
    assert out == {"pushed": 1, "version": "al-v1"}
    order = [p["task"] for p in of(fake_ls, "al-v1")]
    assert order[:2] == first and len(order) == 3
    new = of(fake_ls, "al-v1")[-1]
    assert new["score"] >= max(p["score"] for p in of(fake_ls, "al-v1")[:2]) and new["result"]


def test_top_ups_go_on_after_redis_lost_the_record_of_the_head(runtime, fake_ls, redis_url):
    """Redis restarted without its data forgets how far the order was pushed: the next
    annotation still leads to a top-up, which rebuilds the record from Label Studio and pushes
    the next places of the order, not those already there."""
    redis = Redis.from_url(redis_url)
    runtime.settings.queue_head = 2
    ctx = StepContext(redis=redis)
    retrain(runtime, 1, ctx)
    stored = orders.load(runtime.settings, 1, "al-v1")
    redis.flushdb()
    taken = next(t for t in fake_ls.task_list if t["id"] == int(stored.tasks[0]))
    taken["annotations"] = [fake_ls.annotation(taken["truth"], taken["id"])]
    client = TestClient(create_app(runtime.settings, runtime))
    event = {"action": "ANNOTATION_CREATED", "project": 1, "annotation": {"id": 1}}
    assert client.post("/webhook", json=event).status_code == 200
    assert ProjectQueue(redis, 1).is_pending("topup")
    assert topup(runtime, 1, ctx) == {"pushed": 1, "version": "al-v1"}
    assert [p["task"] for p in of(fake_ls, "al-v1")] == stored.tasks[:3].tolist()
    assert ProjectQueue(redis, 1).head() == {"version": "al-v1", "pushed": 3, "left": 2,
                                             "complete": False}


FAULTS = {
    # step -> (fake Label Studio method, fails before or after doing its work)
    "after save": ("import_predictions", "before"),
    "during push": ("import_predictions", "half"),
    "before switch": ("serve_by_priority", "before"),
    "after switch": ("serve_by_priority", "after"),
    "during pruning": ("delete_model_version", "before"),
}


@pytest.mark.parametrize("step", FAULTS)
def test_a_retrain_failing_at_any_step_is_published_by_its_retry(step, runtime, fake_ls,
                                                                 redis_url):
    runtime.settings.keep_versions = 1
    retrain(runtime, 1)
    method, when = FAULTS[step]
    real = getattr(fake_ls, method)

    def failing(project, arg, *args, **kwargs):
        setattr(fake_ls, method, real)  # once
        if when == "half":
            real(project, arg[: len(arg) // 2])
        elif when == "after":
            real(project, arg, *args, **kwargs)
        raise ConnectionError(f"Label Studio went away ({step})")

    setattr(fake_ls, method, failing)
    task = next(t for t in fake_ls.task_list if not t["annotations"])
    task["annotations"] = [fake_ls.annotation(task["truth"], task["id"])]
    try:
        retrain(runtime, 1)
    except ConnectionError:
        assert step != "during pruning"  # deleting is best effort: the job succeeds
    redis = Redis.from_url(redis_url)
    queued = []
    ctx = StepContext(redis=redis, enqueue_followup=lambda *a: queued.append(a) or {
        "status": "queued"})
    if step != "during pruning":
        assert reconcile.check(runtime, 1, ctx)["unpublished"] == "v2"
        # The version Label Studio still serves is never deleted; after the switch it may be.
        kinds = [kind for kind, _, _ in queued]
        assert kinds == (["prune", "retrain"] if step == "after switch" else ["retrain"])
    out = retrain(runtime, 1, ctx, force=False)  # the retry, or reconcile's retrain
    assert out["unchanged"] and runtime.versions(1).names() == ["v1", "v2"]
    assert runtime.serving_version(1) == "al-v2"
    assert fake_ls.sampling["model_version"] == "al-v2"
    assert [b["title"] for b in fake_ls.backends][0] == "al-v2"
    unlabelled = {t["id"] for t in fake_ls.task_list if not t["annotations"]}
    assert sorted(p["task"] for p in of(fake_ls, "al-v2")) == sorted(unlabelled)
    assert "unpublished" not in reconcile.check(runtime, 1, ctx)


def ours_in_label_studio(fake_ls) -> dict[str, int]:
    return {v: n for v, n in fake_ls.model_versions(1).items() if v.startswith("al-")}


def label_one(fake_ls) -> None:
    task = next(t for t in fake_ls.task_list if not t["annotations"])
    task["annotations"] = [fake_ls.annotation(task["truth"], task["id"])]


def test_retrains_failing_back_to_back_after_their_push_never_pile_up_versions(settings,
                                                                             redis_url):
    """Label Studio fails every push half way and no pruning slice ever gets to run (a retrain
    is always waiting): the versions those retrains left stay bounded, the order Label Studio
    serves keeps its predictions, a user's are untouched, and the retry serves the newest."""
    from ml_backend.runtime import Runtime
    from tests.unit.fakes import FakeLabelStudio

    fake_ls = FakeLabelStudio(n_per_class=8, labelled_per_class=4)
    rt = Runtime(settings, labelstudio=fake_ls)
    rt.settings.keep_versions, rt.settings.queue_head = 1, 4
    busy = StepContext(redis=Redis.from_url(redis_url), should_stop=lambda: True)
    theirs = foreign(fake_ls, "al-imported-by-hand")
    retrain(rt, 1, busy)
    live = of(fake_ls, "al-v1")
    real = fake_ls.import_predictions

    def half(project, predictions, *args, **kwargs):
        real(project, predictions[: len(predictions) // 2])
        raise ConnectionError("Label Studio went away during the push")

    for _ in range(6):
        label_one(fake_ls)
        fake_ls.import_predictions = half
        with pytest.raises(ConnectionError):
            retrain(rt, 1, busy)
        assert fake_ls.sampling["model_version"] == "al-v1" and of(fake_ls, "al-v1") == live
        assert len(ours_in_label_studio(fake_ls)) <= rt.settings.keep_versions + 3
    fake_ls.import_predictions = real
    retrain(rt, 1, busy, force=False)
    assert fake_ls.sampling["model_version"] == "al-v7"
    assert len(ours_in_label_studio(fake_ls)) <= rt.settings.keep_versions + 3
    assert of(fake_ls, "al-imported-by-hand") == theirs


def test_pruning_that_gives_way_to_every_retrain_still_bounds_the_versions(runtime, fake_ls,
                                                                          redis_url):
    """Annotators label faster than old heads are deleted: every pruning slice stops at once
    for the waiting retrain. A retrain then deletes old versions before its push, so Label
    Studio never holds more than one of ours beyond KEEP_VERSIONS."""
    runtime.settings.keep_versions = 3
    busy = StepContext(redis=Redis.from_url(redis_url), should_stop=lambda: True)
    for n in range(1, 7):
        retrain(runtime, 1, busy)
        label_one(fake_ls)
        assert fake_ls.sampling["model_version"] == f"al-v{n}"
        assert len(ours_in_label_studio(fake_ls)) <= min(n, runtime.settings.keep_versions + 1)
