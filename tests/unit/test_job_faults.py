"""Retrain jobs under faults, with a real Redis and real RQ workers: duplicate and out-of-order
webhooks, two workers on one project, Label Studio down."""

import itertools
import json
import multiprocessing
import os
import time

import pytest
from fastapi.testclient import TestClient
from redis import Redis
from rq import Queue, SimpleWorker
from rq.scheduler import RQScheduler

from ml_backend import jobs
from ml_backend.queue_state import ProjectQueue
from ml_backend.queueing import enqueue
from ml_backend.server import create_app
from ml_backend.settings import Settings
from ml_backend.steps import retrain


@pytest.fixture
def redis(settings) -> Redis:
    return Redis.from_url(settings.redis_url)


@pytest.fixture
def queue(settings, redis) -> Queue:
    return Queue(settings.queue_name, connection=redis)


@pytest.fixture
def work(worker_runtime, queue, redis):
    return lambda: SimpleWorker([queue], connection=redis).work(burst=True)


def event(action: str, annotation: int, task: int) -> dict:
    return {"action": action, "project": {"id": 1}, "task": {"id": task, "project": 1},
            "annotation": {"id": annotation, "task": task}}


def test_duplicate_and_out_of_order_webhooks_train_once(settings, runtime, fake_ls, redis, work):
    client = TestClient(create_app(settings, runtime))
    # The update arrives before the creation it follows, and both twice.
    burst = [event("ANNOTATION_UPDATED", 1, 1), event("ANNOTATION_CREATED", 1, 1),
             event("ANNOTATION_CREATED", 1, 1), event("ANNOTATION_UPDATED", 1, 1)]
    assert [client.post("/webhook", json=e).json()["status"] for e in burst] == [
        "queued", "coalesced", "coalesced", "coalesced"]
    work()
    # Late replays of the same webhooks after the retrain.
    for e in burst:
        client.post("/webhook", json=e)
    work()
    assert runtime.versions(1).names() == ["v1"]
    history = ProjectQueue(redis, 1).history()
    assert [h["status"] for h in history] == ["finished", "finished"]
    assert history[0]["unchanged"] is True and history[0]["version"] is None
    # A new label is trained on; "Start Training" retrains even unchanged labels.
    fake_ls.task_list[4]["annotations"] = [fake_ls.annotation("red", 5)]
    client.post("/webhook", json=event("ANNOTATION_CREATED", 5, 5))
    work()
    client.post("/webhook", json={"action": "START_TRAINING", "project": 1})
    work()
    assert runtime.versions(1).names() == ["v1", "v2", "v3"]


def _burst_worker(redis_url: str, queue_name: str) -> None:
    redis = Redis.from_url(redis_url)
    SimpleWorker([Queue(queue_name, connection=redis)], connection=redis).work(burst=True)


class SlowListing:
    """Reading the project's tasks takes a while; each read records its span in Redis."""

    def __init__(self, real, redis_url: str):
        self.real, self.redis_url = real, redis_url

    def __call__(self, project, **kw):
        start = time.time()
        time.sleep(0.4)
        Redis.from_url(self.redis_url).rpush("spans", json.dumps([start, time.time(),
                                                                  os.getpid()]))
        return self.real(project, **kw)


def test_two_workers_never_retrain_one_project_at_once(settings, queue, redis, worker_runtime,
                                                       fake_ls):
    for task in fake_ls.task_list:  # no labels: each retrain is the read and little else
        task["annotations"] = []
    fake_ls.labelling_tasks = SlowListing(fake_ls.labelling_tasks, settings.redis_url)
    for _ in range(4):  # straight onto the queue, past the coalescing
        queue.enqueue(jobs.retrain, 1, "ANNOTATION_CREATED")
    # Forked workers inherit the runtime; each has its own Redis connection.
    fork = multiprocessing.get_context("fork")
    workers = [fork.Process(target=_burst_worker, args=(settings.redis_url, settings.queue_name))
               for _ in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
        assert w.exitcode == 0
    spans = sorted(json.loads(s) for s in redis.lrange("spans", 0, -1))
    assert len(spans) == 4
    assert len({pid for _, _, pid in spans}) == 2  # both workers did take jobs
    for (_, end, _), (start, _, _) in itertools.pairwise(spans):
        assert start >= end, spans


def test_label_studio_down_retries_then_fails_visibly_and_the_old_order_stays(
        settings, runtime, fake_ls, queue, redis, work):
    retrain(runtime, 1)
    assert fake_ls.sampling["model_version"] == "al-v1"
    runtime.settings = Settings(**(settings.model_dump() | {"job_retries": 2,
                                                            "job_retry_delay": 1}))
    fake_ls.down = True
    job = enqueue(redis, runtime.settings, "retrain", 1, "ANNOTATION_CREATED")
    assert queue.fetch_job(job["job_id"]).retry_intervals == [1, 2]
    scheduler = RQScheduler([queue], connection=redis)
    scheduler.acquire_locks()
    deadline = time.monotonic() + 30
    while not any(h["status"] == "failed" for h in ProjectQueue(redis, 1).history()):
        assert time.monotonic() < deadline, ProjectQueue(redis, 1).history()
        work()
        time.sleep(0.5)
        scheduler.enqueue_scheduled_jobs()  # what a worker's scheduler does once a retry is due
    history = ProjectQueue(redis, 1).history()
    assert [h["status"] for h in history] == ["failed", "retrying", "retrying"]
    assert all("Connection refused" in h["error"] for h in history)
    # The previous version keeps serving and keeps ordering Label Studio's queue.
    assert runtime.versions(1).names() == ["v1"] and runtime.serving_version(1) == "al-v1"
    assert fake_ls.sampling == {"sampling": "Uncertainty sampling", "model_version": "al-v1"}
    client = TestClient(create_app(settings, runtime))
    status = client.get("/status/1").json()
    assert status["serving_version"] == "v1" and status["jobs"][0]["status"] == "failed"
    assert "Connection refused" in client.get("/").text


def test_retries_follow_the_settings(settings, redis, queue):
    job = enqueue(redis, settings, "retrain", 1, "x")
    assert queue.fetch_job(job["job_id"]).retry_intervals == [10, 20, 40]
    none = Settings(**(settings.model_dump() | {"job_retries": 0}))
    job = enqueue(redis, none, "retrain", 2, "x")
    assert queue.fetch_job(job["job_id"]).retries_left is None
