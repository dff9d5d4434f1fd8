"""The worker command outlives a Redis restart: RQ itself quits when Redis goes away outside its
wait for jobs (here: while a job runs), which left the queue without workers after every Redis
restart the soak (benchmarks/soak.py) made. SIGTERM still stops it."""

import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
from redis import Redis
from rq import Queue

from tests.integration.procs import free_port


def start_redis(port: int, folder) -> subprocess.Popen:
    proc = subprocess.Popen([shutil.which("redis-server"), "--port", str(port), "--bind",
                             "127.0.0.1", "--save", "", "--appendonly", "no", "--dir",
                             str(folder)], stdout=subprocess.DEVNULL)
    for _ in range(200):
        try:
            Redis(port=port).ping()
            return proc
        except Exception:  # noqa: BLE001 - not up yet
            time.sleep(0.05)
    raise RuntimeError("redis-server did not start")


def wait_for(check, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.2)
    return False


@pytest.mark.timeout(240)
def test_a_worker_works_again_after_redis_restarts_and_stops_on_sigterm(tmp_path):
    port = free_port()
    redis_proc = start_redis(port, tmp_path)
    env = os.environ | {"REDIS_URL": f"redis://127.0.0.1:{port}/0", "QUEUE_NAME": "outage",
                        "MODEL_DIR": str(tmp_path / "models"), "BACKBONE": "mobilenet_v3_small",
                        "WEIGHTS": "none", "RECONCILE_INTERVAL": "0"}
    log = (tmp_path / "worker.log").open("wb")
    worker = subprocess.Popen([sys.executable, "-m", "ml_backend", "worker"], env=env,
                              stdout=log, stderr=subprocess.STDOUT)
    try:
        first = Queue("outage", connection=Redis(port=port)).enqueue("os.getpid")
        assert wait_for(lambda: first.get_status(refresh=True) == "finished", 150), (
            (tmp_path / "worker.log").read_text()[-3000:])
        busy = Queue("outage", connection=Redis(port=port)).enqueue("time.sleep", 3)
        assert wait_for(lambda: busy.get_status(refresh=True) == "started", 30)
        redis_proc.send_signal(signal.SIGKILL)  # gone while a job runs, until after it ends
        redis_proc.wait(10)
        time.sleep(8)
        redis_proc = start_redis(port, tmp_path)  # empty: RQ's keys are gone too
        job = Queue("outage", connection=Redis(port=port)).enqueue("os.getpid")
        assert wait_for(lambda: job.get_status(refresh=True) == "finished", 60), (
            (tmp_path / "worker.log").read_text()[-3000:])
        assert job.return_value() == worker.pid
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(30) == 0
    finally:
        worker.kill()
        redis_proc.kill()
        log.close()
