"""docker-compose.yml's wiring run for real, on the host's network (docker-compose.host.yml):
PostgreSQL, Redis with its append-only file, a Label Studio whose first start creates the admin
and its API token from the environment, the backend's server and a worker with its health check,
and a connect -> annotate -> retrain -> predictions round trip over images in IMAGES_DIR.

    python -m tools.compose_check [--image al-backend:check]

The settings come from .env.example, its secrets filled with fresh random values and its ports
with free ones; the stack gets its own compose project and volumes, removed at the end. Each
check prints one line; the first failure ends the run with exit 1 and the services' logs.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml

from tests.integration.dataset import make_images
from tests.integration.labelstudio import LSApi
from tests.integration.procs import free_port, wait_until
from tools.docker_check import Containers, docker, passed, round_trip

ROOT = Path(__file__).resolve().parents[1]
SERVICES = ["postgres", "redis", "label-studio", "backend", "worker"]
LS_FIRST_START = 600.0  # migrations on PostgreSQL, two shared cores


def env_file(path: Path, image: str, base: str) -> dict[str, str]:
    """.env.example with secrets and free ports filled in, written to `path`; the values."""
    values = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key] = value
    values.update(
        LABEL_STUDIO_API_KEY=secrets.token_hex(20), LABEL_STUDIO_PASSWORD=secrets.token_hex(8),
        POSTGRES_PASSWORD=secrets.token_hex(16),
        LABEL_STUDIO_PORT=str(free_port()), BACKEND_PORT=str(free_port()),
        REDIS_PORT=str(free_port()), POSTGRES_PORT=str(free_port()),
        BACKEND_IMAGE=image, BASE_IMAGE=base, WEIGHTS="none", IMAGES_DIR=str(path.parent / "images"),
    )
    path.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    return values


class Compose:
    """docker-compose over docker-compose.yml + docker-compose.host.yml, resolved once with the
    env file. docker-compose refuses published ports on the host network (they would not apply
    anyway), and an override cannot remove docker-compose.yml's: the resolved file drops them."""

    def __init__(self, env_path: Path):
        files = ["-f", str(ROOT / "docker-compose.yml"), "-f", str(ROOT / "docker-compose.host.yml")]
        self.argv = ["docker-compose", "--project-name", f"al-compose-check-{os.getpid()}",
                     "--env-file", str(env_path), "--project-directory", str(ROOT)]
        config = yaml.safe_load(self(*files, "config"))
        for service in config["services"].values():
            if service.get("network_mode") == "host":
                service.pop("ports", None)
        resolved = env_path.parent / "compose.yml"
        resolved.write_text(yaml.safe_dump(config))
        self.argv += ["-f", str(resolved)]

    def __call__(self, *args: str, timeout: float = 1800) -> str:
        done = subprocess.run([*self.argv, *args], cwd=ROOT, capture_output=True, text=True,
                              timeout=timeout, check=False)
        if done.returncode:
            raise RuntimeError(f"docker-compose {' '.join(args)} exited {done.returncode}:\n"
                               f"{done.stderr[-3000:]}")
        return done.stdout.strip()

    def container(self, service: str) -> str:
        return self("ps", "-q", service)

    def health(self, service: str) -> str:
        state = json.loads(docker("inspect", "--format", "{{json .State}}",
                                  self.container(service)))
        if not state["Running"]:
            raise RuntimeError(f"{service} exited with code {state['ExitCode']}")
        return (state.get("Health") or {}).get("Status", "none")

    def exec(self, service: str, *argv: str, env: dict[str, str] | None = None) -> str:
        flags = [f"--env={k}={v}" for k, v in (env or {}).items()]
        return docker("exec", *flags, self.container(service), *argv)


def wait_healthy(compose: Compose, services: list[str], timeout: float, start: float) -> None:
    """Each service's health check passing; times since `docker-compose up` began (it waits for
    the health of what a service depends on before starting it)."""
    for service in services:
        wait_until(lambda s=service: compose.health(s) == "healthy",
                   max(1.0, timeout - (time.monotonic() - start)), 3.0, f"{service} healthy")
        passed(f"{service}: healthy (seen {time.monotonic() - start:.0f} s after `up` began)")


def check_label_studio(values: dict[str, str], compose: Compose) -> None:
    url = f"http://127.0.0.1:{values['LABEL_STUDIO_PORT']}"
    token = values["LABEL_STUDIO_API_KEY"]
    who = httpx.get(f"{url}/api/current-user/whoami", headers={"Authorization": f"Token {token}"},
                    timeout=30)
    assert who.status_code == 200, (who.status_code, who.text[:300])
    assert who.json()["email"] == values["LABEL_STUDIO_USERNAME"], who.json()
    passed(f"Label Studio's first start created {values['LABEL_STUDIO_USERNAME']} with "
           "LABEL_STUDIO_API_KEY as its token")
    login = httpx.Client(base_url=url, timeout=30)
    login.get("/user/login/")
    answer = login.post("/user/login/", data={
        "email": values["LABEL_STUDIO_USERNAME"], "password": values["LABEL_STUDIO_PASSWORD"],
        "csrfmiddlewaretoken": login.cookies.get("csrftoken", "")},
        headers={"Referer": f"{url}/user/login/"})
    assert answer.status_code in (200, 302) and "sessionid" in login.cookies, answer.status_code
    passed("... and logs in with LABEL_STUDIO_PASSWORD")
    users = compose.exec("postgres", "psql", "-h", "127.0.0.1", "-p", values["POSTGRES_PORT"],
                         "-U", "labelstudio", "-d", "labelstudio", "-tAc",
                         "select email from htx_user",
                         env={"PGPASSWORD": values["POSTGRES_PASSWORD"]})
    assert values["LABEL_STUDIO_USERNAME"] in users.split(), users
    passed("Label Studio keeps its users in PostgreSQL (psql, with POSTGRES_PASSWORD over TCP, "
           "finds the admin)")


def check_redis_and_backend(values: dict[str, str], compose: Compose) -> None:
    port = values["REDIS_PORT"]
    assert compose.exec("redis", "redis-cli", "-p", port, "config", "get",
                        "appendonly").split() == ["appendonly", "yes"]
    compose.exec("redis", "redis-cli", "-p", port, "set", "compose-check", "1")
    files = compose.exec("redis", "ls", "/data/appendonlydir").split()
    assert any(f.endswith(".aof") for f in files), files
    passed(f"Redis writes its append-only file into its volume (/data/appendonlydir: "
           f"{', '.join(files)})")
    health = httpx.get(f"http://127.0.0.1:{values['BACKEND_PORT']}/health", timeout=10)
    assert health.json()["status"] == "UP", health.text
    passed("the backend's server answers /health UP")
    workers = compose.exec("worker", "python", "-c",
                           "import os; from redis import Redis; from rq import Worker; print("
                           "len(Worker.all(connection=Redis.from_url(os.environ['REDIS_URL']))))")
    assert int(workers) >= 1, workers
    passed(f"the worker is registered in Redis ({workers} worker), which its health check reads")


def check_round_trip(values: dict[str, str], compose: Compose, image: str,
                     truth: dict[str, str]) -> None:
    """The loop through the stack's own wiring: Label Studio serves IMAGES_DIR as /images, the
    backend reaches it at LABEL_STUDIO_URL, the worker gets the webhooks' jobs through Redis."""
    url = f"http://127.0.0.1:{values['BACKEND_PORT']}"
    c = Containers(image, url, httpx.Client(base_url=url, timeout=30),
                   names=[compose.container(s) for s in ("backend", "worker")])
    api = LSApi(f"http://127.0.0.1:{values['LABEL_STUDIO_PORT']}", values["LABEL_STUDIO_API_KEY"])
    try:
        round_trip(c, api, Path("/images"), truth)
    finally:
        api.close()
        c.http.close()


def run(image: str, base: str, workdir: Path) -> None:
    truth = make_images(workdir / "images", per_class=6)
    values = env_file(workdir / ".env", image, base)
    compose = Compose(workdir / ".env")
    start = time.monotonic()
    compose("build", "postgres", "redis", "label-studio")
    passed(f"built postgres, redis and label-studio from {base} "
           f"({time.monotonic() - start:.0f} s, cached after the first time)")
    try:
        start = time.monotonic()
        compose("up", "--detach", *SERVICES, timeout=LS_FIRST_START)
        wait_healthy(compose, ["postgres", "redis", "label-studio", "worker", "backend"],
                     LS_FIRST_START, start)
        check_label_studio(values, compose)
        check_redis_and_backend(values, compose)
        check_round_trip(values, compose, image, truth)
    except BaseException:
        done = subprocess.run([*compose.argv, "logs", "--tail", "40"], cwd=ROOT,
                              capture_output=True, text=True, check=False)
        print(done.stdout[-12000:], file=sys.stderr)
        raise
    finally:
        compose("down", "--volumes", "--timeout", "20")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.compose_check", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image", default="al-backend:check", help="the backend's image")
    parser.add_argument("--base", default="al-base:bookworm", help="BASE_IMAGE of the others")
    args = parser.parse_args(argv)
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="al-compose-check-") as tmp:
        try:
            run(args.image, args.base, Path(tmp))
        except (AssertionError, RuntimeError, TimeoutError) as exc:
            print(f"FAILED: {exc!r}", file=sys.stderr)
            return 1
    print(f"compose check passed in {time.monotonic() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
