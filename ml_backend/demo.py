"""`make demo`: a local Redis (when REDIS_URL is not set), the server and a worker, until Ctrl-C."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

DATA = Path("data")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start_redis(logs: Path) -> tuple[subprocess.Popen, str]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed: run `make system-deps` or set REDIS_URL")
    port = free_port()
    (DATA / "redis").mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(DATA / "redis"),
         "--appendonly", "yes", "--save", ""],
        stdout=(logs / "redis.log").open("w"), stderr=subprocess.STDOUT,
    )
    return proc, f"redis://127.0.0.1:{port}/0"


def _wait_http(url: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process for {url} exited with {proc.returncode}; see data/logs")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url} did not come up within {timeout:.0f} s")


def run(host: str = "127.0.0.1", port: int = 9090) -> None:
    logs = DATA / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    procs: list[subprocess.Popen] = []
    env = dict(os.environ)
    env.setdefault("MODEL_DIR", str(DATA / "models"))
    try:
        if "REDIS_URL" not in env:
            redis_proc, env["REDIS_URL"] = _start_redis(logs)
            procs.append(redis_proc)
        for name, args in (("server", ["serve", "--host", host, "--port", str(port)]),
                           ("worker", ["worker"])):
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "ml_backend", *args], env=env,
                stdout=(logs / f"{name}.log").open("w"), stderr=subprocess.STDOUT,
            ))
        _wait_http(f"http://{host}:{port}/health", procs[-2])
        print(f"Backend:  http://{host}:{port}  (status page at /, health at /health)")
        print(f"Redis:    {env['REDIS_URL']}")
        print(f"Models:   {env['MODEL_DIR']}   Logs: {logs}/")
        print("Connect it in Label Studio: Project settings > Model > Connect model, URL above.")
        print("Press Ctrl-C to stop.")
        while all(p.poll() is None for p in procs):
            time.sleep(1)
        raise RuntimeError("a demo process exited; see data/logs")
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT if proc is not procs[0] else signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
