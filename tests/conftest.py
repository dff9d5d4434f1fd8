"""Fixtures every suite may use: a private Redis server, one flushed database per test."""

from __future__ import annotations

import itertools
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator

import pytest
import redis

REDIS_DATABASES = 64


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory) -> Iterator[str]:
    """A private redis-server for this run; yields its base URL `redis://127.0.0.1:N`."""
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.fail("redis-server is not on PATH: run `make system-deps`", pytrace=False)
    workdir = tmp_path_factory.mktemp("redis")
    port = _free_port()
    with (workdir / "redis.log").open("wb") as log:
        proc = subprocess.Popen(
            [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(workdir), "--databases", str(REDIS_DATABASES)],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    base = f"redis://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                redis.Redis.from_url(f"{base}/0").ping()
                break
            except redis.ConnectionError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"redis-server did not start: {(workdir / 'redis.log').read_text()}")
                time.sleep(0.05)
        yield base
    finally:
        proc.terminate()
        proc.wait(10)


_db_numbers = itertools.cycle(range(1, REDIS_DATABASES))


def fresh_database(base: str) -> Iterator[str]:
    """A database of the private server, flushed before and after use."""
    url = f"{base}/{next(_db_numbers)}"
    client = redis.Redis.from_url(url)
    client.flushdb()
    yield url
    client.flushdb()
    client.close()


@pytest.fixture
def redis_url(redis_server) -> Iterator[str]:
    """`redis://127.0.0.1:N/<db>`: a database of the private server for this test only."""
    yield from fresh_database(redis_server)
