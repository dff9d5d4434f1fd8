"""Faults injected into the real processes: Redis stopped while annotators submit, a worker
SIGKILLed half way through writing a version, Label Studio unreachable during a retrain.
Annotations are never lost and never blocked; the serving version is never a half-written one."""

from __future__ import annotations

import html
import time

import pytest
import redis
from rq import Queue

from .dataset import CLASSES
from .loop import connect_backend, retrains, retrieve_predictions, timed, wait_for_idle_version
from .procs import wait_until
from .stack import RedisServer, TcpProxy, start_stack

pytestmark = pytest.mark.integration

MAX_SUBMIT_SECONDS = 3.0  # LS waits at most 1 s for a webhook; a submit must never hang on us


def label_some(project, per_class: int, start: int = 0) -> list[int]:
    """Annotate `per_class` tasks of each class with their true label; the task ids."""
    done = []
    for label in CLASSES:
        for task in project.tasks_of(label)[start : start + per_class]:
            _, seconds = timed(project.api.annotate, task, label)
            assert seconds < MAX_SUBMIT_SECONDS, f"submit took {seconds:.1f}s"
            done.append(task)
    return done


@pytest.fixture
def stacks():
    started = []
    yield started
    for s in started:
        print(s.logs(60))
        s.stop()


def test_annotations_made_while_redis_is_down_are_trained_once_it_is_back(
        ls_project, label_studio, tmp_path, stacks):
    queue_redis = RedisServer(tmp_path)
    try:
        stack = start_stack(label_studio.url, label_studio.token, queue_redis.url,
                            tmp_path / "backend", RECONCILE_INTERVAL="3")
        stacks.append(stack)
        connect_backend(ls_project, stack)
        queue_redis.stop()

        labelled = label_some(ls_project, per_class=2)  # each submit's webhook meets a 503
        for task in labelled:
            assert ls_project.api.get(f"/api/tasks/{task}")["annotations"], task
        res = stack.http.post("/webhook", json={"action": "ANNOTATION_CREATED",
                                                "project": ls_project.id})
        assert res.status_code == 503 and "queue" in res.json()["detail"]
        assert "error" in stack.status(ls_project.id)["queue"]

        queue_redis.start()  # empty: every queued job and key is gone too
        status = wait_for_idle_version(stack, ls_project.id, n_labels=len(labelled))
        assert {j["reason"] for j in retrains(status)} == {"RECONCILE"}, status["jobs"]
    finally:
        queue_redis.stop()


def test_a_worker_killed_while_writing_a_version_leaves_nothing_half_written(
        ls_project, label_studio, redis_url, tmp_path, stacks):
    flag = tmp_path / "stalled"
    stack = start_stack(label_studio.url, label_studio.token, redis_url, tmp_path / "backend",
                        worker=False, RETRAIN_LOCK_TTL="10", RECONCILE_INTERVAL="2")
    stacks.append(stack)
    slow = stack.start_worker("tests.integration.slow_worker", SLOW_SAVE_FLAG=str(flag))
    connect_backend(ls_project, stack)
    labelled = label_some(ls_project, per_class=1)
    wait_until(flag.exists, 180, 0.5, "the worker to stall inside VersionStore.save", slow)
    stack.kill(slow)

    half_written = flag.read_text()
    assert (tmp_path / "backend" / "models").as_posix() in half_written
    status = stack.status(ls_project.id)
    assert status["serving_version"] is None and status["versions"] == [], status
    assert stack.setup_version(ls_project.id, ls_project.raw["label_config"]) == "al-untrained"
    lock_ttl = redis.Redis.from_url(redis_url).ttl(f"al:retrain-lock:{ls_project.id}")
    assert 0 < lock_ttl <= 10  # the dead worker's lock, expiring on its own

    stack.start_worker()  # reconciliation finds the labels untrained; the retrain waits out
    # the dead worker's lock
    status = wait_for_idle_version(stack, ls_project.id, n_labels=len(labelled))
    assert [v["version"] for v in status["versions"]] == ["v1"]
    retrieve_predictions(ls_project, [t for t in ls_project.task_ids if t not in labelled][:3])
    assert any(p["model_version"] == "al-v1"
               for t in ls_project.task_ids for p in ls_project.api.predictions(t))


def test_label_studio_unreachable_during_a_retrain_fails_visibly_and_keeps_the_old_order(
        ls_project, label_studio, redis_url, tmp_path, stacks):
    proxy = TcpProxy(label_studio.url)  # the backend reaches Label Studio only through it
    stack = start_stack(proxy.url, label_studio.token, redis_url, tmp_path / "backend",
                        JOB_RETRIES="2", JOB_RETRY_DELAY="1", RECONCILE_INTERVAL="0")
    stacks.append(stack)
    connect_backend(ls_project, stack)
    first = label_some(ls_project, per_class=1)
    wait_for_idle_version(stack, ls_project.id, n_labels=len(first))
    assert ls_project.api.get(f"/api/projects/{ls_project.id}")["model_version"] == "al-v1"

    proxy.down()  # Label Studio goes away for the backend; annotators still reach it
    cut = time.time()
    second = label_some(ls_project, per_class=1, start=1)

    conn = redis.Redis.from_url(redis_url)
    queue = Queue(stack.env["QUEUE_NAME"], connection=conn)

    def given_up():
        """Every retrain queued since has run out of retries: each has recorded its failure
        (RQ's scheduler moves a retry between registries, so an empty queue alone can be a
        moment between two attempts), and nothing is queued, due or running."""
        jobs = [j for j in retrains(stack.status(ls_project.id)) if j["started_at"] > cut]
        idle = not (queue.count or queue.scheduled_job_registry.count
                    or queue.started_job_registry.count)
        ended = {j["job_id"] for j in jobs if j["status"] == "failed"}
        return jobs if idle and jobs and ended == {j["job_id"] for j in jobs} else None

    jobs = wait_until(given_up, 120, 1.0, "the retrains to fail after their retries")
    attempts: dict[str, list[str]] = {}
    for j in reversed(jobs):
        attempts.setdefault(j["job_id"], []).append(j["status"])
        assert j["error"], j
    assert all(a == ["retrying", "retrying", "failed"] for a in attempts.values()), attempts
    assert stack.status(ls_project.id)["serving_version"] == "v1"
    assert ls_project.api.get(f"/api/projects/{ls_project.id}")["model_version"] == "al-v1"
    assert stack.setup_version(ls_project.id, ls_project.raw["label_config"]) == "al-v1"
    assert jobs[0]["error"] in html.unescape(stack.http.get("/").text)

    # Label Studio is back; the reconcile command finds the labels no version has seen.
    proxy.up()
    out = stack.cli("reconcile", "--project", str(ls_project.id))
    assert "retrain queued" in out, out

    def trained():
        serving = [v for v in stack.status(ls_project.id)["versions"] if v["serving"]]
        return serving and serving[-1]["n_labels"] == len(first) + len(second)

    wait_until(trained, 180, 1.0, "a version with every label")
    assert ls_project.api.get(f"/api/projects/{ls_project.id}")["model_version"] == "al-v2"
