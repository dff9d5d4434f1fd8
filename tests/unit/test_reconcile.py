"""Reconciliation against the stand-in for Label Studio and a real Redis: nothing a lost webhook
carried is lost, and labels already trained on are never trained again."""

import threading

import pytest
from fastapi.testclient import TestClient
from redis import Redis
from rq import Queue, SimpleWorker

from ml_backend import reconcile
from ml_backend.publish import secure_webhooks
from ml_backend.queue_state import ProjectQueue
from ml_backend.queueing import enqueuer
from ml_backend.server import create_app
from ml_backend.settings import Settings
from ml_backend.steps import StepContext, retrain

SECRET = "s3cret-header-value"


@pytest.fixture
def redis(settings) -> Redis:
    return Redis.from_url(settings.redis_url)


@pytest.fixture
def ctx(settings, redis) -> StepContext:
    """The command line's context: checks queue their jobs on the test's Redis."""
    return StepContext(enqueue_followup=enqueuer(redis, settings))


@pytest.fixture
def work(settings, worker_runtime, redis):
    """Run a burst worker over the queue (the worker's runtime is the test's)."""

    def run() -> None:
        SimpleWorker([Queue(settings.queue_name, connection=redis)], connection=redis).work(
            burst=True)

    return run


def test_labels_that_no_version_has_seen_queue_one_retrain(ctx, runtime, fake_ls, redis, work):
    first = reconcile.check(runtime, 1, ctx)
    assert first["status"] == "queued" and first["labels"] == 12
    assert reconcile.check(runtime, 1, ctx)["status"] == "coalesced"
    work()
    assert runtime.versions(1).names() == ["v1"]
    assert ProjectQueue(redis, 1).history()[0]["reason"] == reconcile.REASON
    assert reconcile.check(runtime, 1, ctx)["status"] == "in step"


def test_only_a_change_to_what_training_reads_queues_a_retrain(ctx, runtime, fake_ls, redis,
                                                               work):
    retrain(runtime, 1)
    unlabelled = next(t for t in fake_ls.task_list if not t["annotations"])
    unlabelled["annotations"] = [fake_ls.annotation("red", unlabelled["id"], cancelled=True)]
    assert reconcile.check(runtime, 1, ctx)["status"] == "in step"  # a skip is not a label
    labelled = fake_ls.task_list[0]
    labelled["annotations"].append(fake_ls.annotation("blue", 99))  # a corrected label
    assert reconcile.check(runtime, 1, ctx)["status"] == "queued"
    work()
    assert runtime.versions(1).meta("v2")["n_labels"] == 12
    assert reconcile.check(runtime, 1, ctx)["status"] == "in step"


def test_a_project_without_labels_is_in_step(ctx, runtime, fake_ls, redis):
    for task in fake_ls.task_list:
        task["annotations"] = []
    assert reconcile.check(runtime, 1, ctx)["status"] == "in step"


def test_a_webhook_lost_while_redis_was_down_is_trained_once_redis_is_back(
        settings, runtime, redis, work):
    down = Settings(**(settings.model_dump() | {"redis_url": "redis://127.0.0.1:1/0"}))
    client = TestClient(create_app(down, runtime))
    event = {"action": "ANNOTATION_CREATED", "project": {"id": 7}, "annotation": {"id": 1}}
    res = client.post("/webhook", json=event)
    assert res.status_code == 503 and res.json()["project"] == 7
    assert runtime.versions(7).names() == []
    # Redis is back: a worker's periodic pass queues a check of every known project.
    stopped = threading.Event()
    stopped.set()  # one pass, then return
    reconcile.every_interval(settings, stopped)
    work()
    assert runtime.versions(7).serving() == "v1"
    assert runtime.versions(7).meta("v1")["n_labels"] == 12


def test_the_periodic_pass_survives_redis_being_down(settings, runtime, caplog):
    down = Settings(**(settings.model_dump() | {"redis_url": "redis://127.0.0.1:1/0"}))
    runtime.versions(3).root.mkdir(parents=True)
    stopped = threading.Event()
    stopped.set()
    reconcile.every_interval(down, stopped)
    assert "cannot queue reconciliation" in caplog.text


def test_our_webhook_gets_the_secret_header_and_no_other_does(settings, runtime, fake_ls):
    runtime.settings = Settings(**(settings.model_dump() | {"webhook_secret": SECRET}))
    assert secure_webhooks(runtime, 1) == 1
    ours, other = fake_ls.hooks
    assert ours["headers"] == {"X-Webhook-Secret": SECRET} and other["headers"] == {}
    assert secure_webhooks(runtime, 1) == 0  # already in place


def test_with_basic_auth_only_the_webhook_sends_basic_auth(settings, runtime, fake_ls):
    runtime.settings = Settings(**(settings.model_dump() | {
        "basic_auth_user": "ls", "basic_auth_pass": "pw"}))
    assert secure_webhooks(runtime, 1) == 1
    assert fake_ls.hooks[0]["headers"] == {"Authorization": "Basic bHM6cHc="}


def test_without_credentials_webhooks_are_left_alone(runtime, fake_ls):
    assert secure_webhooks(runtime, 1) == 0
    assert all(h["headers"] == {} for h in fake_ls.hooks)


def test_old_versions_left_over_are_queued_for_deletion(ctx, runtime, fake_ls, redis, work):
    """A slice that could not finish (or a `seed` or `rollback` run outside any worker) leaves
    old versions behind; the periodic check queues their deletion."""
    runtime.settings.keep_versions = 1
    fake_ls.deletes_per_call = 0  # Label Studio too busy to delete anything
    retrain(runtime, 1)
    retrain(runtime, 1)
    assert set(fake_ls.model_versions(1)) == {"al-v1", "al-v2"}
    assert reconcile.check(runtime, 1, ctx)["prune"] == "queued"
    fake_ls.deletes_per_call = 10**9
    work()
    assert set(fake_ls.model_versions(1)) == {"al-v2"}
    assert "prune" not in reconcile.check(runtime, 1, ctx)
