import pytest
from redis import Redis
from rq import Queue, SimpleWorker

from ml_backend import jobs


def test_retrain_trains_a_version_from_label_studio_state(runtime, fake_ls):
    result = jobs._retrain(runtime, 1)
    assert result["version"] == "v1" and result["n_labels"] == 12
    store = runtime.versions(1)
    assert store.serving() == "v1"
    meta = store.meta("v1")
    assert meta["label_counts"] == {"red": 4, "green": 4, "blue": 4}
    assert meta["metrics"]["n"] == meta["n_heldout"] > 0


def test_retrain_ignores_skips_and_reports_unknown_labels(runtime, fake_ls):
    fake_ls.task_list[0]["annotations"] = [fake_ls.annotation("red", 1, cancelled=True)]
    fake_ls.task_list[1]["annotations"] = [fake_ls.annotation("purple", 2)]
    result = jobs._retrain(runtime, 1)
    assert result["n_labels"] == 10
    skipped = runtime.versions(1).meta("v1")["skipped"]
    assert skipped["skipped"] == 1 and any("purple" in k for k in skipped)


def test_retrain_with_no_labels_writes_no_version(runtime, fake_ls):
    for task in fake_ls.task_list:
        task["annotations"] = []
    assert jobs._retrain(runtime, 1)["version"] is None
    assert runtime.versions(1).names() == []


def test_unloadable_labelled_images_are_left_out_not_fatal(runtime, fake_ls):
    fake_ls.images[fake_ls.task_list[0]["data"]["image"]] = b"corrupt"
    assert jobs._retrain(runtime, 1)["n_labels"] == 11


def test_a_burst_of_webhooks_enqueues_one_retrain(settings):
    redis = Redis.from_url(settings.redis_url)
    outcomes = [jobs.enqueue_retrain(redis, settings, 5, "ANNOTATION_CREATED")["status"]
                for _ in range(5)]
    assert outcomes == ["queued"] + ["coalesced"] * 4
    assert Queue(settings.queue_name, connection=redis).count == 1
    # Another project is independent.
    assert jobs.enqueue_retrain(redis, settings, 6, "START_TRAINING")["status"] == "queued"


def test_webhooks_during_a_running_retrain_lead_to_exactly_one_follow_up(settings, runtime,
                                                                        fake_ls, monkeypatch):
    redis = Redis.from_url(settings.redis_url)
    monkeypatch.setattr(jobs, "runtime", lambda: runtime)
    queue = Queue(settings.queue_name, connection=redis)
    seen_during_run = []
    real = jobs._retrain

    def retrain_while_webhooks_arrive(rt, project, **kw):
        if not seen_during_run:  # the first run: annotators keep submitting meanwhile
            seen_during_run.extend(
                jobs.enqueue_retrain(redis, settings, 1, "ANNOTATION_CREATED")["status"]
                for _ in range(4)
            )
            result = real(rt, project, **kw)
            fake_ls.task_list[4]["annotations"] = [fake_ls.annotation("red", 5)]
            return result
        return real(rt, project, **kw)

    monkeypatch.setattr(jobs, "_retrain", retrain_while_webhooks_arrive)
    jobs.enqueue_retrain(redis, settings, 1, "ANNOTATION_CREATED")
    SimpleWorker([queue], connection=redis).work(burst=True)
    assert seen_during_run == ["queued", "coalesced", "coalesced", "coalesced"]
    assert runtime.versions(1).names() == ["v1", "v2"]
    history = jobs.job_history(redis, 1)
    assert [h["status"] for h in history] == ["finished", "finished"]
    assert history[0]["version"] == "v2" and history[0]["seconds"] >= 0
    assert not redis.exists(jobs.lock_key(1)) and not redis.exists(jobs.pending_key(1))


def test_a_failed_retrain_is_recorded_and_releases_the_lock(settings, runtime, fake_ls,
                                                           monkeypatch):
    redis = Redis.from_url(settings.redis_url)
    monkeypatch.setattr(jobs, "runtime", lambda: runtime)
    fake_ls.config = "<View/>"
    job = Queue(settings.queue_name, connection=redis).enqueue(jobs.retrain, 1, "test")
    SimpleWorker([Queue(settings.queue_name, connection=redis)], connection=redis).work(
        burst=True)
    assert job.get_status(refresh=True) in ("failed", "scheduled")
    entry = jobs.job_history(redis, 1)[0]
    assert entry["status"] == "failed" and "UnsupportedConfig" in entry["error"]
    assert not redis.exists(jobs.lock_key(1))
