"""The backend's image run for real: `serve` and `worker` containers (host networking) against a
real redis-server and a real Label Studio on this machine, through one connect -> annotate ->
retrain -> predictions round trip. `make docker-check` builds the image and runs this.

    python -m tools.docker_check --image al-backend:check

Checks, in order: /health from the host; the user the containers run as (not root); the image's
HEALTHCHECK turning `healthy`; the round trip; the model volume holding the new version, seen by
both containers. Each check prints one line; the first failure ends the run with exit 1 and the
containers' logs. Everything started is stopped and removed, the image is kept.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.integration.backend import BackendApi
from tests.integration.dataset import CLASSES, create_project, make_images
from tests.integration.labelstudio import (
    ADMIN_TOKEN,
    FIRST_START_TIMEOUT,
    LSApi,
    start_label_studio,
)
from tests.integration.loop import connect_backend, retrieve_predictions, wait_for_idle_version
from tests.integration.procs import free_port, wait_until
from tests.integration.stack import RedisServer

HEALTHY_TIMEOUT = 200.0  # the image's HEALTHCHECK: first probe after 30 s, start period 120 s
TRAIN_TIMEOUT = 300.0  # a worker in a container on a shared machine


def docker(*args: str, check: bool = True) -> str:
    done = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=300,
                          check=False)
    if check and done.returncode:
        raise RuntimeError(f"docker {' '.join(args[:3])}... exited {done.returncode}: "
                           f"{done.stderr.strip()}")
    return done.stdout.strip()


@dataclass
class Containers(BackendApi):
    """The backend's server and worker containers; `status`/`logs` as the test helpers expect."""

    image: str
    url: str
    http: httpx.Client
    tag: str = field(default_factory=lambda: f"al-check-{os.getpid()}")
    names: list[str] = field(default_factory=list)

    @property
    def volume(self) -> str:
        return f"{self.tag}-models"

    def run(self, role: str, env: dict[str, str], images: Path, *argv: str) -> str:
        name = f"{self.tag}-{role}"
        flags = [f"--env={k}={v}" for k, v in env.items()]
        docker("run", "--detach", "--name", name, "--network", "host", *flags,
               "--volume", f"{self.volume}:/data/models",
               "--volume", f"{images}:/images:ro", self.image, *argv)
        self.names.append(name)
        return name

    def exec(self, name: str, *argv: str) -> str:
        return docker("exec", name, *argv)

    def logs(self, lines: int = 60) -> str:
        out = []
        for name in self.names:
            done = subprocess.run(["docker", "logs", "--tail", str(lines), name],
                                  capture_output=True, text=True, check=False)
            out.append(f"===== {name} =====\n{done.stdout}{done.stderr}")
        return "\n".join(out)

    def remove(self) -> None:
        self.http.close()
        for name in self.names:
            docker("rm", "--force", name, check=False)
        docker("volume", "rm", "--force", self.volume, check=False)


def passed(what: str) -> None:
    print(f"ok   {what}", flush=True)


def backend_env(ls_url: str, redis_url: str, port: int) -> dict[str, str]:
    return {
        "LABEL_STUDIO_URL": ls_url, "LABEL_STUDIO_API_KEY": ADMIN_TOKEN, "REDIS_URL": redis_url,
        "BACKEND_URL": f"http://127.0.0.1:{port}", "PORT": str(port),
        "QUEUE_NAME": f"al-check-{port}", "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": "/images",
        # No model hub here: random features; the round trip, not the accuracy, is checked.
        "BACKBONE": "resnet18", "WEIGHTS": "none", "LOG_LEVEL": "INFO",
    }


def check_user_and_health(c: Containers, server: str, worker: str) -> None:
    assert c.http.get("/health").json()["status"] == "UP"
    passed(f"GET {c.url}/health answers UP from the serve container")
    configured = docker("image", "inspect", "--format", "{{.Config.User}}", c.image)
    for name in (server, worker):
        uid = c.exec(name, "id", "-u")
        assert uid != "0" and configured not in ("", "root", "0"), (name, uid, configured)
    passed(f"both containers run as {configured!r} (uid {uid}), not root")

    def healthy() -> bool:
        state = docker("inspect", "--format", "{{json .State.Health}}", server)
        status = json.loads(state)["Status"]
        assert status != "unhealthy", state
        return status == "healthy"

    start = time.monotonic()
    wait_until(healthy, HEALTHY_TIMEOUT, 2.0, "the image's HEALTHCHECK to report healthy")
    passed(f"the image's HEALTHCHECK reports healthy ({time.monotonic() - start:.0f} s after "
           "the checks began)")


def round_trip(c: Containers, api: LSApi, images: Path, truth: dict[str, str]) -> str:
    """connect -> annotate -> retrain -> predictions; returns the serving version."""
    project = create_project(api, images, truth, title="docker check")
    connect_backend(project, c)
    passed("Label Studio connected the backend (it called /health and /setup in the container)")
    labelled = [t for label in CLASSES for t in project.tasks_of(label)[:3]]
    for task_id in labelled:
        api.annotate(task_id, project.truth[task_id])
    status = wait_for_idle_version(c, project.id, len(labelled), timeout=TRAIN_TIMEOUT)
    version = "al-" + status["serving_version"]  # its name in Label Studio
    assert status["serving_version"], status
    passed(f"{len(labelled)} annotations -> webhooks -> the worker container trained {version}")
    unlabeled = [t for t in project.task_ids if t not in labelled]
    retrieve_predictions(project, unlabeled)
    served = [p for t in unlabeled for p in api.predictions(t) if p["model_version"] == version]
    assert {p["task"] for p in served} == set(unlabeled), served
    correct = sum(p["result"][0]["value"]["choices"][0] == project.truth[p["task"]]
                  for p in served)
    passed(f"every unlabeled task has a {version} prediction in Label Studio "
           f"({correct}/{len(unlabeled)} right)")
    return version


def check_volume(c: Containers, server: str, worker: str, version: str) -> None:
    listings = [c.exec(name, "find", "/data/models", "-name", f"*{version}*") for name in
                (server, worker)]
    assert listings[0] and listings[0] == listings[1], listings
    owner = c.exec(worker, "stat", "-c", "%U", "/data/models")
    passed(f"the model volume {c.volume} (owner {owner}) holds {version}, seen by both "
           "containers")


def run(image: str, workdir: Path) -> None:
    images = workdir / "images"
    truth = make_images(images, per_class=6)
    redis = RedisServer(workdir)
    ls_proc, ls_url = start_label_studio(workdir / "ls", images, workdir / "ls.log",
                                         FIRST_START_TIMEOUT)
    api = LSApi(ls_url, ADMIN_TOKEN)
    passed(f"redis-server at {redis.url} and Label Studio at {ls_url} started on the host")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    c = Containers(image, url, httpx.Client(base_url=url, timeout=30))
    try:
        env = backend_env(ls_url, redis.url, port)
        server = c.run("serve", env, images, "serve", "--host", "127.0.0.1", "--port", str(port))
        worker = c.run("worker", env, images, "worker")
        wait_until(lambda: c.http.get("/health").status_code == 200, 180, 1.0,
                   f"{url}/health from the container")
        check_user_and_health(c, server, worker)
        version = round_trip(c, api, images, truth)
        check_volume(c, server, worker, version)
    except BaseException:
        print(c.logs(80), file=sys.stderr)
        raise
    finally:
        c.remove()
        api.close()
        ls_proc.stop()
        redis.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.docker_check", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image", default="al-backend:check")
    args = parser.parse_args(argv)
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="al-docker-check-") as tmp:
        try:
            run(args.image, Path(tmp))
        except (AssertionError, RuntimeError, TimeoutError) as exc:
            print(f"FAILED: {exc}", file=sys.stderr)
            return 1
    print(f"docker check passed in {time.monotonic() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
