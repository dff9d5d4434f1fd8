"""Subprocess helpers for the integration suite: free ports, managed processes, HTTP waits."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago (pick it right before starting)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def log_tail(path: Path, lines: int = 60) -> str:
    try:
        text = Path(path).read_text(errors="replace")
    except FileNotFoundError:
        return f"<no log at {path}>"
    return "\n".join(text.splitlines()[-lines:])


class ManagedProcess:
    """A child process in its own process group, with stdout+stderr sent to a log file."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ):
        self.name = name
        self.argv = list(argv)
        self.log_path = Path(log_path)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            self.argv,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=dict(env) if env is not None else None,
            cwd=str(cwd) if cwd else None,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self, lines: int = 60) -> str:
        self._log.flush()
        return log_tail(self.log_path, lines)

    def describe_failure(self, what: str, lines: int = 60) -> str:
        state = "running" if self.alive() else f"exited with code {self.proc.returncode}"
        return (
            f"{self.name}: {what} ({state}; pid {self.pid}; log {self.log_path})\n"
            f"----- last {lines} lines of the log -----\n{self.tail(lines)}"
        )

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM to the process group, wait, then SIGKILL whatever is left."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        # The leader may be gone while children of the group live on.
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        self._log.close()


def wait_until(
    check: Callable[[], object],
    timeout: float,
    interval: float = 0.5,
    what: str = "condition",
    proc: ManagedProcess | None = None,
):
    """Call `check` until it returns a truthy value; fail early if `proc` dies."""
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while True:
        try:
            value = check()
            if value:
                return value
        except AssertionError:  # a definite failure, not "not ready yet"
            raise
        except Exception as exc:  # noqa: BLE001 - not ready yet; retried until the deadline
            last_exc = exc
        if proc is not None and not proc.alive():
            raise RuntimeError(proc.describe_failure(f"died while waiting for {what}"))
        if time.monotonic() > deadline:
            detail = f" (last error: {last_exc!r})" if last_exc else ""
            msg = f"timed out after {timeout:.0f}s waiting for {what}{detail}"
            if proc is not None:
                msg = proc.describe_failure(msg)
            raise TimeoutError(msg)
        time.sleep(interval)


def health_is_up(url: str, timeout: float = 2.0) -> dict | None:
    """The JSON of `GET <url>/health` if it says status UP, else None."""
    r = httpx.get(f"{url}/health", timeout=timeout)
    if r.status_code != 200:
        return None
    body = r.json()
    return body if body.get("status") == "UP" else None
