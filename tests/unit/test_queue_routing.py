"""Scaling out: with GPU_QUEUE_NAME set, the jobs that embed or fine-tune go to the GPU queue,
and a worker on a GPU machine listens there first."""

from __future__ import annotations

import pytest
from redis import Redis
from rq import Queue

from ml_backend.__main__ import worker_queues
from ml_backend.queueing import enqueue
from ml_backend.settings import Settings


@pytest.mark.parametrize("gpu_queue, expected", [
    ("gpu", {"retrain": "gpu", "prioritize": "gpu", "finetune": "gpu", "reconcile": "al-backend"}),
    ("", {"retrain": "al-backend", "prioritize": "al-backend", "finetune": "al-backend",
          "reconcile": "al-backend"}),
])
def test_jobs_are_queued_where_their_workers_listen(redis_url, gpu_queue, expected):
    settings = Settings(redis_url=redis_url, gpu_queue_name=gpu_queue)
    redis = Redis.from_url(redis_url)
    for kind in expected:
        assert enqueue(redis, settings, kind, 1, "test")["status"] == "queued"
    for name in ("gpu", "al-backend"):
        queued = {job.id.split("-")[0] for job in Queue(name, connection=redis).jobs}
        assert queued == {k for k, q in expected.items() if q == name}, name


def test_a_worker_listens_on_the_gpu_queue_first_only_on_a_gpu():
    assert worker_queues(Settings(gpu_queue_name="gpu", device="cpu"), None) == ["al-backend"]
    assert worker_queues(Settings(gpu_queue_name="gpu", device="cuda"), None) == [
        "gpu", "al-backend"]
    assert worker_queues(Settings(device="cuda"), None) == ["al-backend"]
    assert worker_queues(Settings(), "gpu, al-backend,") == ["gpu", "al-backend"]
