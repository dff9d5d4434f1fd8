"""`make demo`: from a clone to labelling with active learning, in one command.

Starts Redis (unless REDIS_URL is set), Label Studio (from .venv-ls), the backend's server and a
worker; creates a project over a sample image set (or IMAGES=DIR), connects the backend, seeds
the first tasks, and prints where to click. Ctrl-C (or SIGTERM) stops everything and exits 0.
Everything lives under one data directory (data/demo), and a second run reuses it: same admin,
same project.

    python -m tools.demo [--port 9090] [--ls-port 8080] [--data-dir data/demo]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from ml_backend import importer
from ml_backend.__main__ import setup_logging
from tools.processes import (
    REPO,
    Processes,
    label_studio_env,
    port_or_free,
    start_redis,
    stop_on_signals,
)

LS_BIN = REPO / ".venv-ls" / "bin" / "label-studio"
ADMIN_EMAIL = "admin@example.com"
SEED_SIZE = 20
DIGITS_PER_CLASS = 50


# -- the data directory ----------------------------------------------------------------------
def document_root(data: Path) -> Path:
    """Label Studio's LOCAL_FILES_DOCUMENT_ROOT: the demo's image folder. Anyone who can log in
    can add a local-files storage for any folder under it and read its files, so it holds images
    only (not Label Studio's database nor state.json). IMAGES elsewhere are uploaded instead."""
    return data / "images"


def load_state(data: Path) -> dict:
    """Admin credentials, secrets and projects of earlier runs (data/demo/state.json)."""
    path = data / "state.json"
    if path.exists():
        return json.loads(path.read_text())
    if (data / "label-studio").exists():
        raise RuntimeError(f"{data}/label-studio exists but {path} does not: its admin password "
                           f"is unknown; delete {data} to start over")
    return {"email": ADMIN_EMAIL, "password": secrets.token_urlsafe(12),
            "token": secrets.token_hex(20), "webhook_secret": secrets.token_urlsafe(24),
            "projects": {}}


def save_state(data: Path, state: dict) -> None:
    path = data / "state.json"
    path.write_text(json.dumps(state, indent=2))
    path.chmod(0o600)


def render_digits(folder: Path, per_class: int = DIGITS_PER_CLASS, size: int = 64) -> Path:
    """scikit-learn's handwritten digits as `folder/<digit>/<n>.png` (once)."""
    if len(list(folder.glob("*/*.png"))) == 10 * per_class:
        return folder
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    counts = dict.fromkeys(range(10), 0)
    for n, (pixels, label) in enumerate(zip(digits.images, digits.target)):
        if counts[int(label)] == per_class:
            continue
        counts[int(label)] += 1
        (folder / str(label)).mkdir(parents=True, exist_ok=True)
        grey = Image.fromarray((255 - pixels * (255 / 16)).astype(np.uint8))  # dark ink on white
        grey = grey.resize((size, size), Image.BILINEAR).convert("RGB")
        grey.save(folder / str(label) / f"{n:04d}.png")
    return folder


def classes_of(images: Path) -> list[str]:
    """LABELS=a,b,... or, by default, the subfolders of `images` that hold images."""
    if os.environ.get("LABELS"):
        return [c.strip() for c in os.environ["LABELS"].split(",") if c.strip()]
    found = sorted({i.label for i in importer.read_folder(images) if i.label})
    if len(found) < 2:
        raise RuntimeError(f"{images} has no class subfolders: name the classes with "
                           f"LABELS=cat,dog,...")
    return found


def label_config(classes: list[str]) -> str:
    from xml.sax.saxutils import quoteattr

    choices = "".join(f"<Choice value={quoteattr(c)}/>" for c in classes)
    return ('<View><Image name="image" value="$image"/>'
            f'<Choices name="label" toName="image" choice="single" showInline="true">{choices}'
            "</Choices></View>")


def demo_weights() -> str:
    """WEIGHTS as set; else the backbone's pretrained weights when cached or downloadable. When
    they are not, the demo warns and switches BACKBONE (for itself and the processes it starts)
    to efficientnet_lite0, whose ImageNet weights come installed, so it learns from real
    features on any machine."""
    from ml_backend.settings import Settings

    settings = Settings()
    if "weights" in settings.model_fields_set:
        return settings.weights
    from model.backbone import DEFAULT_BACKBONE, WeightsUnavailable, load_backbone

    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(30)  # a download that hangs must not hang the demo
    try:
        load_backbone(settings.backbone, "DEFAULT", "cpu")
    except WeightsUnavailable as exc:
        print(f"warning: {exc}\nwarning: the demo runs with BACKBONE={DEFAULT_BACKBONE} and its "
              "installed ImageNet weights instead. Set WEIGHTS to use other weights.")
        os.environ["BACKBONE"] = DEFAULT_BACKBONE
    finally:
        socket.setdefaulttimeout(previous)
    return "DEFAULT"


def start_label_studio(procs: Processes, data: Path, state: dict, port: int) -> str:
    if not os.access(LS_BIN, os.X_OK):
        raise RuntimeError(f"Label Studio is not installed at {LS_BIN}: run `make labelstudio`")
    env = label_studio_env(data / "label-studio", document_root(data))
    first = not (data / "label-studio").exists()
    procs.start("label-studio", [
        str(LS_BIN), "start", "--no-browser", "--internal-host", "127.0.0.1", "-p", str(port),
        "--username", state["email"], "--password", state["password"],
        "--user-token", state["token"], "--enable-legacy-api-token",
    ], env)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    print(f"Starting Label Studio at {url}" + (" (the first start sets up its database: "
                                              "about a minute)" if first else ""))
    procs.wait_http(f"{url}/health", timeout=400 if first else 120)
    return url


def start_backend(procs: Processes, env: dict[str, str], host: str, port: int) -> str:
    procs.start("server", [sys.executable, "-m", "ml_backend", "serve", "--host", host,
                           "--port", str(port)], env)
    procs.start("worker", [sys.executable, "-m", "ml_backend", "worker"], env)
    url = f"http://{host}:{port}"
    procs.wait_http(f"{url}/health", timeout=180)
    return url


# -- the project -----------------------------------------------------------------------------
def ensure_project(ls, state: dict, images: Path, root: Path) -> tuple[int, bool]:
    """The demo's project over `images`: remembered in the state, else created with the images
    imported. Returns (id, created)."""
    key = str(images)
    known = state["projects"].get(key)
    if known and any(p.id == known["id"] for p in ls.sdk.projects.list()):
        return known["id"], False
    project = ls.sdk.projects.create(title=f"{images.name} (active learning demo)",
                                     label_config=label_config(classes_of(images)))
    items = importer.read_sources([images])
    report = importer.import_images(ls, project.id, items, document_root=root)
    print("\n".join(report.lines(project.id)))
    state["projects"][key] = {"id": project.id, "seeded": False}
    return project.id, True


def connect_backend(ls, settings, project: int, backend_url: str, previous: str | None) -> None:
    """Connect the backend (titled with the version its /setup reports, so Label Studio serves
    tasks by its priorities) and make the webhook Label Studio creates send WEBHOOK_SECRET.
    A connection to the `previous` run's URL (another port) is removed."""
    from ml_backend.security import webhook_headers

    schema = ls.label_config(project)
    setup = httpx.post(f"{backend_url}/setup", json={"project": f"{project}.0", "schema": schema},
                       auth=_basic_auth(settings), timeout=30)
    setup.raise_for_status()
    version = setup.json()["model_version"]
    backends = ls.ml_backends(project)
    for stale in backends:
        if previous != backend_url and stale["url"].rstrip("/") == previous:
            ls.sdk.ml.delete(id=stale["id"])
    if not any(b["url"].rstrip("/") == backend_url for b in backends):
        auth = {}
        if settings.basic_auth_user:
            auth = {"auth_method": "BASIC_AUTH", "basic_auth_user": settings.basic_auth_user,
                    "basic_auth_pass": settings.basic_auth_pass.get_secret_value()}
        ls.sdk.ml.create(project=project, url=backend_url, title=version, **auth)
    ls.set_webhook_headers(project, {f"{backend_url}/webhook"}, webhook_headers(settings))


def _basic_auth(settings) -> tuple[str, str] | None:
    if not settings.basic_auth_user:
        return None
    return settings.basic_auth_user, settings.basic_auth_pass.get_secret_value()


def seed(env: dict[str, str], project: int, size: int) -> bool:
    """Run the seeding command: the first `size` tasks served are diverse and representative."""
    print(f"Choosing the first {size} images to label (embeds every image once)...")
    done = subprocess.run([sys.executable, "-m", "ml_backend", "--log-level", "WARNING", "seed",
                           "--project", str(project), "--size", str(size)], env=env, cwd=REPO,
                          check=False)
    if done.returncode:
        print("warning: seeding failed (see above); tasks are served in import order until "
              "the first retrain")
    return done.returncode == 0


def run(host: str = "127.0.0.1", port: int = 9090, ls_port: int = 8080,
        data: Path = Path("data/demo")) -> None:
    """Start everything and wait; an interrupt stops it all and returns (one line says so)."""
    stop_on_signals()
    data = (REPO / data).resolve()  # REPO / an absolute path is that path
    logs = data / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    state = load_state(data)
    save_state(data, state)
    images = Path(os.environ["IMAGES"]).resolve() if os.environ.get("IMAGES") else None
    if images is not None and not images.is_dir():
        raise RuntimeError(f"IMAGES={images} is not a folder")
    images = images or render_digits(document_root(data) / "digits")
    weights = demo_weights()
    procs = Processes(logs)
    try:
        redis_url = os.environ.get("REDIS_URL") or start_redis(procs, data)
        ls_url = start_label_studio(procs, data, state, port_or_free(ls_port))
        port = port_or_free(port)
        backend_url = f"http://{host}:{port}"
        env = dict(os.environ)
        env.setdefault("WEBHOOK_SECRET", state["webhook_secret"])
        env.update(
            LABEL_STUDIO_URL=ls_url, LABEL_STUDIO_API_KEY=state["token"], REDIS_URL=redis_url,
            MODEL_DIR=str(data / "models"), WEIGHTS=weights, BACKEND_URL=backend_url,
            LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT=str(document_root(data)),
            PYTHONUNBUFFERED="1",
        )
        print("Starting the backend's server and worker...")
        start_backend(procs, env, host, port)

        from ml_backend.labelstudio import LabelStudioClient
        from ml_backend.settings import Settings

        settings = Settings(**{k.lower(): v for k, v in env.items()
                               if k.lower() in Settings.model_fields})
        ls = LabelStudioClient(settings)
        project, _ = ensure_project(ls, state, images, document_root(data))
        save_state(data, state)
        connect_backend(ls, settings, project, backend_url, state.get("backend_url"))
        state["backend_url"] = backend_url
        save_state(data, state)
        if not state["projects"][str(images)]["seeded"]:
            state["projects"][str(images)]["seeded"] = seed(env, project, SEED_SIZE)
            save_state(data, state)
        ls.close()
        _print_ready(ls_url, backend_url, state, project, data, images)
        while True:
            procs.check()
            time.sleep(1)
    except KeyboardInterrupt:
        stopped = procs.stop()
        print(f"\nDemo stopped ({', '.join(stopped) or 'nothing was running yet'}); "
              f"its data stays in {data}.", flush=True)
    finally:
        procs.stop()  # after an error too: nothing is left running


def _print_ready(ls_url: str, backend_url: str, state: dict, project: int, data: Path,
                 images: Path) -> None:
    print(f"""
Ready.
  Label Studio  {ls_url}   log in as {state['email']} / {state['password']}
  Project       {ls_url}/projects/{project}/data  (images from {images})
  Backend       {backend_url}/  (status page: versions, learning curve, jobs)

Open the project, click "Label All Tasks", choose the class and Submit. After every submit the
backend retrains in the background (seconds) and reorders the queue: the next image is the one
the model is least sure about, with its guess already selected.

More images: LABEL_STUDIO_URL={ls_url} LABEL_STUDIO_API_KEY={state['token']} \\
  LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT={document_root(data)} \\
  .venv/bin/python -m ml_backend import-images --project {project} DIR [--labels]
State and credentials: {data}/state.json   Logs: {data}/logs/
Press Ctrl-C to stop.""", flush=True)


def main(argv: list[str] | None = None) -> int:
    """Errors end in one line on stderr and exit 2; an interrupt is the normal way out: exit 0."""
    parser = argparse.ArgumentParser(prog="python -m tools.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9090, help="the backend's port")
    parser.add_argument("--ls-port", type=int, default=8080, help="Label Studio's port")
    parser.add_argument("--data-dir", type=Path, default=Path("data/demo"),
                        help="everything the demo keeps; a second run reuses it")
    parser.add_argument("--log-level", default=os.environ.get("LOG_LEVEL", "INFO"))
    args = parser.parse_args(argv)
    setup_logging(args.log_level.upper())  # the backend's: no line per HTTP request
    try:
        run(host=args.host, port=args.port, ls_port=args.ls_port, data=args.data_dir)
    except KeyboardInterrupt:  # a second interrupt, or one before run() took over
        print("\nDemo stopped.", flush=True)
    except Exception as exc:  # one line for the user; the log has the rest at DEBUG
        logging.getLogger(__name__).debug("demo failed", exc_info=True)
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
