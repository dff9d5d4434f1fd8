"""Child processes for a source checkout: Redis, Label Studio, the backend's server and worker,
each in its own process group, stopped together. Used by the demo and the integration tests."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_or_free(port: int) -> int:
    """`port` when nothing listens on it, else a free one (Label Studio would silently move).
    Connections of a server stopped a moment ago (TIME_WAIT) do not count, as for the servers."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
            return port
        except OSError:
            return free_port()


@dataclass
class Processes:
    """Children in their own process groups, stopped together, newest first."""

    logs: Path
    running: list[tuple[str, subprocess.Popen]] = field(default_factory=list)

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen:
        with (self.logs / f"{name}.log").open("ab") as log:
            proc = subprocess.Popen(argv, env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        self.running.append((name, proc))
        return proc

    def check(self) -> None:
        for name, proc in self.running:
            if proc.poll() is not None:
                tail = (self.logs / f"{name}.log").read_text(errors="replace").splitlines()[-15:]
                raise RuntimeError(f"{name} exited with code {proc.returncode}; "
                                   f"{self.logs}/{name}.log ends:\n" + "\n".join(tail))

    def wait_http(self, url: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check()
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"{url} did not answer within {timeout:.0f} s; see {self.logs}/")

    def stop(self) -> list[str]:
        """Stop every child; returns their names. A second Ctrl-C does not cut this short (it
        would leave children running)."""
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        # SIGTERM, not SIGINT: children of a shell's background job ignore SIGINT.
        for _, proc in reversed(self.running):
            signal_group(proc, signal.SIGTERM)
        for _, proc in reversed(self.running):
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                signal_group(proc, signal.SIGKILL)
                proc.wait(timeout=5)
            signal_group(proc, signal.SIGKILL)  # children the leader left behind
        stopped = [name for name, _ in reversed(self.running)]
        self.running.clear()
        return stopped


def signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def stop_on_signals() -> None:
    """`kill <pid>` (SIGTERM) and a closed terminal (SIGHUP) stop the demo as cleanly as Ctrl-C
    (SIGINT, which Python raises as KeyboardInterrupt) does."""

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGHUP, interrupt)


def start_redis(procs: Processes, data: Path) -> str:
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed: run `make system-deps` "
                           "(Debian: apt-get install redis-server) or set REDIS_URL")
    port = free_port()
    (data / "redis").mkdir(parents=True, exist_ok=True)
    procs.start("redis", [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir",
                          str((data / "redis").resolve()), "--appendonly", "yes", "--save", ""],
                dict(os.environ))
    url = f"redis://127.0.0.1:{port}/0"
    from redis import Redis

    deadline = time.monotonic() + 20
    while True:
        procs.check()
        try:
            Redis.from_url(url).ping()
            return url
        except Exception:  # noqa: BLE001 - not up yet; retried until the deadline
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start; see {procs.logs}/redis.log")
            time.sleep(0.1)


PREDICTIONS_IMPORT_FLAG = "fflag_fix_back_4620_memory_efficient_predictions_import_08012025_short"


def label_studio_env(data_dir: Path, document_root: Path) -> dict[str, str]:
    """The environment a headless Label Studio needs to serve local files and call us."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("LABEL_STUDIO_", "DJANGO_")) and k != "VIRTUAL_ENV"}
    env.update(
        LABEL_STUDIO_BASE_DATA_DIR=str(data_dir),
        LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED="true",
        LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT=str(document_root),
        LABEL_STUDIO_COLLECT_ANALYTICS="false",
        LABEL_STUDIO_LATEST_VERSION_CHECK="false",
        # The backend runs on 127.0.0.1: without these Label Studio refuses to call it (403).
        LABEL_STUDIO_ML_BLOCK_LOCAL_IP="false",
        LABEL_STUDIO_SSRF_PROTECTION_ENABLED="false",
        PYTHONUNBUFFERED="1",
    )
    # Label Studio's own flag: a prediction import recounts only the tasks it gave a prediction,
    # not every task of the project (3 s per import at 5,000 tasks without it).
    env[PREDICTIONS_IMPORT_FLAG] = "true"
    return env
