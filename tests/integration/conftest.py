"""Fixtures driving a real Redis, a real Label Studio 1.23.2 and the backend's real processes.

Session: `redis_server` (private redis-server), `colour_images` (PNG dataset),
`label_studio_template` (a migrated LS data dir, built once per run).
Per test module: `redis_url` (a clean DB of that server), `label_studio` (LS started from a copy
of the template, ~5 s), `backend` (server + RQ worker). Per test: `ls_project` (a new project with
the images imported). Tests of one module share LS and the backend but never a project; the
backend keeps everything per project (model versions, Redis keys).
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import fresh_database

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

# --- Redis --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def redis_url(redis_server) -> Iterator[str]:
    """A database of the private server (tests/conftest.py), flushed, for this module."""
    yield from fresh_database(redis_server)


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
