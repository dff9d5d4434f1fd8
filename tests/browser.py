"""A page as a person sees it: the app served on a loopback port, opened in headless Chromium."""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import uvicorn


@contextmanager
def served(app) -> Iterator[str]:
    """`app` under uvicorn on a free 127.0.0.1 port; yields its base URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.started:
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def chromium(profile: Path, window: str, *args: str) -> subprocess.CompletedProcess:
    """Run headless Chromium (Debian's, from `make system-deps`) with a private profile."""
    if shutil.which("chromium") is None:
        pytest.fail("chromium is not installed: run `make system-deps`", pytrace=False)
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}", f"--window-size={window}", "--hide-scrollbars"]
    return subprocess.run(["chromium", *flags, *args], capture_output=True, text=True,
                          timeout=120, check=True)
