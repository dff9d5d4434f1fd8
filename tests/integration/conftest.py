"""Fixtures driving a real Redis, a real Label Studio 1.23.2 and the backend's real processes.

Session: `redis_server` (private redis-server), `colour_images` (PNG dataset),
`label_studio_template` (a migrated LS data dir, built once per run).
Per test module: `redis_url` (a clean DB of that server), `label_studio` (LS started from a copy
of the template, ~5 s), `backend` (server + RQ worker). Per test: `ls_project` (a new project with
the images imported). Tests of one module share LS and the backend but never a project; the
backend keeps everything per project (model versions, Redis keys).
"""

from __future__ import annotations

import itertools
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from .backend import Backend, start_backend
from .dataset import create_project, make_images
from .labelstudio import (
    ADMIN_TOKEN,
    FIRST_START_TIMEOUT,
    RESTART_TIMEOUT,
    LabelStudioServer,
    LSApi,
    require_label_studio,
    start_label_studio,
)
from .procs import ManagedProcess, free_port, wait_until

REDIS_DATABASES = 64


# --- Redis --------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory) -> Iterator[str]:
    """A private redis-server for this run; yields its base URL `redis://127.0.0.1:N`."""
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.fail("redis-server is not on PATH: run `make system-deps`", pytrace=False)
    workdir = tmp_path_factory.mktemp("redis")
    port = free_port()
    proc = ManagedProcess(
        "redis-server",
        [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(workdir), "--databases", str(REDIS_DATABASES)],
        workdir / "redis.log",
    )  # fmt: skip
    base = f"redis://127.0.0.1:{port}"
    try:
        wait_until(lambda: redis.Redis.from_url(f"{base}/0").ping(), 20, 0.1, "redis PING", proc)
    except BaseException:
        proc.stop()
        raise
    yield base
    proc.stop()


_db_numbers = itertools.cycle(range(1, REDIS_DATABASES))


@pytest.fixture(scope="module")
def redis_url(redis_server) -> Iterator[str]:
    """`redis://127.0.0.1:N/<db>`: a database of the private server, flushed, for this module."""
    url = f"{redis_server}/{next(_db_numbers)}"
    client = redis.Redis.from_url(url)
    client.flushdb()
    yield url
    client.flushdb()
    client.close()


# --- Images -------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def colour_images(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """(images_root, {relative path: true label}): 6 noisy PNGs per class red/green/blue."""
    root = tmp_path_factory.mktemp("images")
    return root, make_images(root, per_class=6)


# --- Label Studio -------------------------------------------------------------------------


@pytest.fixture(scope="session")
def label_studio_template(tmp_path_factory, colour_images) -> Path:
    """A Label Studio data dir with migrations applied and the admin user + token created."""
    try:
        require_label_studio()
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)
    images_root, _ = colour_images
    base = tmp_path_factory.mktemp("ls-template")
    data_dir = base / "data"
    t0 = time.monotonic()
    proc, _url = start_label_studio(data_dir, images_root, base / "ls.log", FIRST_START_TIMEOUT)
    proc.stop()
    print(f"Label Studio template migrated in {time.monotonic() - t0:.0f}s")
    return data_dir


@pytest.fixture(scope="module")
def label_studio(
    tmp_path_factory, label_studio_template, colour_images
) -> Iterator[LabelStudioServer]:
    """A fresh Label Studio started from a copy of the template (about 5 s)."""
    from label_studio_sdk import LabelStudio

    images_root, _ = colour_images
    tmp_path = tmp_path_factory.mktemp("ls")
    data_dir = tmp_path / "ls-data"
    subprocess.run(["cp", "-r", str(label_studio_template), str(data_dir)], check=True)
    log_path = tmp_path / "label-studio.log"
    t0 = time.monotonic()
    proc, url = start_label_studio(data_dir, images_root, log_path, RESTART_TIMEOUT)
    print(f"Label Studio started from the template in {time.monotonic() - t0:.1f}s at {url}")
    api = LSApi(url, ADMIN_TOKEN)
    server = LabelStudioServer(
        url=url,
        token=ADMIN_TOKEN,
        images_root=images_root,
        data_dir=data_dir,
        log_path=log_path,
        process=proc,
        api=api,
        client=LabelStudio(base_url=url, api_key=ADMIN_TOKEN),
    )
    yield server
    print(f"===== label studio ({log_path}) =====\n{proc.tail(40)}")
    api.close()
    proc.stop()


@pytest.fixture
def ls_project(label_studio, colour_images):
    """An Image+Choices project with all colour images imported as tasks (truth kept test-side)."""
    images_root, truth_by_path = colour_images
    return create_project(label_studio.api, images_root, truth_by_path)


# --- Backend ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def backend(label_studio, redis_url, tmp_path_factory) -> Iterator[Backend]:
    """The backend's server and RQ worker, pointed at this module's LS and Redis DB."""
    workdir = tmp_path_factory.mktemp("backend")
    t0 = time.monotonic()
    b = start_backend(label_studio.url, label_studio.token, redis_url, workdir)
    print(f"backend server and worker up in {time.monotonic() - t0:.1f}s at {b.url}")
    yield b
    print(b.logs(80))
    b.stop()
