"""The backend's processes with settings chosen per test, for fault and access tests: a server,
workers that can be killed and replaced, a redis-server that can be stopped and restarted."""

from __future__ import annotations

import itertools
import shutil
import signal
import socket
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import redis

from .backend import BACKEND_START_TIMEOUT, BackendApi, backend_env
from .procs import REPO_ROOT, ManagedProcess, free_port, log_tail, wait_until

_names = itertools.count(1)


@dataclass
class Stack(BackendApi):
    """Like `Backend` for loop.wait_for_idle_version: `status`, `logs`, `setup_version`."""

    url: str
    env: dict[str, str]
    workdir: Path
    model_dir: Path
    server: ManagedProcess
    http: httpx.Client
    workers: list[ManagedProcess] = field(default_factory=list)

    def start_worker(self, module: str = "ml_backend", **env: str) -> ManagedProcess:
        """A worker (`python -m <module> worker`), with `env` on top of the stack's."""
        name = f"worker-{next(_names)}"
        worker = ManagedProcess(name, [sys.executable, "-m", module, "worker"],
                                self.workdir / f"{name}.log", env=self.env | env, cwd=REPO_ROOT)
        self.workers.append(worker)
        return worker

    def kill(self, worker: ManagedProcess) -> None:
        """SIGKILL: no handler runs, no lock is released, nothing is cleaned up."""
        worker.proc.send_signal(signal.SIGKILL)
        worker.proc.wait(10)

    def cli(self, *args: str) -> str:
        """`python -m ml_backend ARGS` with the stack's settings; its stdout."""
        import subprocess

        done = subprocess.run([sys.executable, "-m", "ml_backend", *args], env=self.env,
                              check=False, cwd=REPO_ROOT, capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0, done.stderr
        return done.stdout

    def logs(self, lines: int = 60) -> str:
        return "\n".join(f"===== {p.name} ({p.log_path}) =====\n{log_tail(p.log_path, lines)}"
                         for p in [self.server, *self.workers])

    def log_text(self) -> str:
        return "\n".join(p.log_path.read_text(errors="replace")
                         for p in [self.server, *self.workers])

    def stop(self) -> None:
        self.http.close()
        for p in [*self.workers, self.server]:
            p.stop()


def start_stack(ls_url: str, token: str, redis_url: str, workdir: Path, *,
                auth: tuple[str, str] | None = None, worker: bool = True, **env: str) -> Stack:
    """Server (+ one worker) on a free port; `env` adds settings. BACKEND_URL is the server's
    URL; QUEUE_NAME is the stack's own, so RQ's per-queue scheduler lock of an earlier test's
    killed worker cannot hold up this one's retries."""
    model_dir = workdir / "models"
    model_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    full_env = backend_env(ls_url, token, redis_url, model_dir) | {
        "BACKEND_URL": url, "QUEUE_NAME": f"al-backend-{port}"} | env
    server = ManagedProcess(
        "server", [sys.executable, "-m", "ml_backend", "serve", "--host", "127.0.0.1",
                   "--port", str(port)], workdir / "server.log", env=full_env, cwd=REPO_ROOT)
    stack = Stack(url, full_env, workdir, model_dir, server,
                  httpx.Client(base_url=url, timeout=30, auth=auth))
    try:
        wait_until(lambda: stack.http.get("/health").json()["status"] == "UP",
                   BACKEND_START_TIMEOUT, 0.5, f"{url}/health", server)
        if worker:
            stack.start_worker()
    except BaseException:
        stack.stop()
        raise
    return stack


class RedisServer:
    """A private redis-server on a fixed port that a test may stop and start again (empty)."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: ManagedProcess | None = None
        self.start()

    def start(self) -> None:
        exe = shutil.which("redis-server")
        assert exe, "redis-server is not on PATH: run `make system-deps`"
        self.proc = ManagedProcess(
            "redis-server", [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(self.workdir)],
            self.workdir / "redis.log")
        wait_until(lambda: redis.Redis.from_url(self.url).ping(), 20, 0.1, "redis PING",
                   self.proc)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()
            self.proc = None


class TcpProxy:
    """A TCP forwarder on 127.0.0.1 to `target` that a test can cut (connections refused and
    open ones dropped) and restore: Label Studio going away and coming back, as a worker sees it.
    """

    def __init__(self, target_url: str):
        parsed = httpx.URL(target_url)
        self.target = (parsed.host, parsed.port)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._listener: socket.socket | None = None
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self.up()

    def up(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def down(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        with self._lock:
            for sock in self._open:
                _close(sock)
            self._open.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # closed by down()
            try:
                upstream = socket.create_connection(self.target, timeout=10)
            except OSError:
                _close(client)
                continue
            upstream.settimeout(None)
            with self._lock:
                self._open |= {client, upstream}
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                _close(sock)
                with self._lock:
                    self._open.discard(sock)


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()
