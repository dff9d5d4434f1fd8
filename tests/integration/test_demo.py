"""`make demo` interrupted while it starts: everything it started stops, one line says so, and
the exit status is 0 (so make reports no error). Its Label Studio serves files only from the
demo's image folder, not from the whole machine."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from .labelstudio import require_label_studio
from .procs import REPO_ROOT, free_port, wait_until

pytestmark = pytest.mark.integration


def _environ(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:  # gone, or not ours
        return {}
    return dict(item.split("=", 1) for item in raw.decode(errors="replace").split("\0")
                if "=" in item)


def _started_by(data: Path) -> list[int]:
    """Processes whose environment or command line names the demo's data folder."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        env = _environ(int(entry.name))
        if str(data) in cmdline or env.get("LABEL_STUDIO_BASE_DATA_DIR", "").startswith(str(data)):
            found.append(int(entry.name))
    return found


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_an_interrupted_demo_stops_everything_says_so_and_exits_0(tmp_path, sig):
    require_label_studio()
    data = tmp_path / "demo"
    env = dict(os.environ, WEIGHTS="none", PYTHONUNBUFFERED="1")
    env.pop("REDIS_URL", None)
    demo = subprocess.Popen(
        [sys.executable, "-m", "tools.demo", "--data-dir", str(data), "--port", str(free_port()),
         "--ls-port", str(free_port())],
        cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines = []
        for line in demo.stdout:
            lines.append(line.rstrip())
            if line.startswith("Starting Label Studio"):
                break
        assert lines and lines[-1].startswith("Starting Label Studio"), lines

        def label_studio() -> dict[str, str] | None:
            envs = [_environ(pid) for pid in _started_by(data)]
            return next((e for e in envs if "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT" in e), None)

        ls_env = wait_until(label_studio, 30, 0.2, "Label Studio's process")
        assert ls_env["LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT"] == str(data / "images")
        demo.send_signal(sig)
        out, _ = demo.communicate(timeout=90)
    finally:
        if demo.poll() is None:
            demo.kill()
    tail = [line for line in out.splitlines() if line.strip()]
    assert demo.returncode == 0, out
    assert tail[-1] == f"Demo stopped (label-studio, redis); its data stays in {data}.", tail
    assert "Traceback" not in out, out
    assert _started_by(data) == []
