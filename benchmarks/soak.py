"""A soak under faults: simulated annotators label a real Label Studio project while workers,
Redis, Label Studio and the model disk fail at random; at the end nothing may be lost.

    .venv/bin/python benchmarks/soak.py --minutes 60                  # SQLite Label Studio
    .venv/bin/python benchmarks/soak.py --minutes 60 --db postgresql  # 127.0.0.1:5432, trust

Not part of `make test` or `.ci/run`. It reuses the integration harness (tests/integration):
Label Studio 1.23.2 from `.venv-ls`, the backend's real server and 2 RQ workers (resnet18,
WEIGHTS=none), a private redis-server with AOF. The backend reaches Label Studio only through a
proxy the fault driver controls; annotators and Label Studio's webhooks go direct.

Two annotators (the admin and a signed-up user) take tasks from "Label All Tasks"
(`GET /api/projects/{id}/next/`), submit the true label (one in 20 is skipped) and think 1-4 s.
A fault driver, at random gaps, injects one fault at a time, every kind in turn before repeats:

* kill-worker: SIGKILL a worker while it runs a job (waits up to 60 s for one), start another;
* redis-aof: SIGKILL redis-server (AOF, fsync every second) for 3-8 s and start it again;
* redis-empty (once): stop it, delete its files, start it empty: every job and key is gone;
* ls-cut: the proxy refuses and drops every connection to Label Studio for 30 s;
* ls-500: the proxy answers every request with HTTP 500 for 20 s;
* disk-full: MODEL_DIR (a 512 MB tmpfs when run as root; otherwise this fault is skipped and
  reported so) is filled to the last byte for 30 s;
* webhooks: duplicated, late (replayed old) and malformed webhooks sent to `/webhook`.

At the end the faults stop, the annotators stop, one `reconcile` pass runs and the queue drains;
then it checks, and prints as JSON (also `<workdir>/soak-report.json`):
the serving version was trained on exactly Label Studio's annotations (`labels_digest`), Label
Studio's project serves that version's order (its `model_version`, a prediction of it on every
unlabelled task), no project lock is held, no job is queued, running or pending, no half-written
version folder exists, the predictions of another model imported at the start are unchanged;
and counts: faults survived by kind, retrains run, the longest time the served version lagged the
labels, every submit an annotator saw fail, and any webhook answered with a 5xx other than the
503 "queue unavailable" while Redis was down.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.integration.dataset import CLASSES, create_project, make_images  # noqa: E402
from tests.integration.labelstudio import (  # noqa: E402
    ADMIN_EMAIL, ADMIN_PASSWORD, ADMIN_TOKEN, FIRST_START_TIMEOUT, LS_BIN, LSApi, sign_up)
from tests.integration.loop import connect_backend, queue_busy  # noqa: E402
from tests.integration.procs import ManagedProcess, free_port, health_is_up, wait_until  # noqa
from tests.integration.stack import Stack, start_stack  # noqa: E402
from tools.processes import label_studio_env  # noqa: E402

FAULTS = ("kill-worker", "redis-aof", "redis-empty", "ls-cut", "ls-500", "disk-full", "webhooks")
FOREIGN = "someone-elses-model"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# -- the processes -------------------------------------------------------------------------------
def psql(sql: str) -> None:
    subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-c", sql], check=True,
                   capture_output=True)


def start_label_studio(data_dir: Path, images_root: Path, db: str, workdir: Path,
                       cleanup: list):
    """Label Studio on a free port, on SQLite or on a fresh PostgreSQL database of its own."""
    env = label_studio_env(data_dir, images_root)
    if db == "postgresql":
        name = f"soak_{os.getpid()}"
        psql(f"CREATE DATABASE {name}")
        cleanup.append(lambda: psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        env |= {"DJANGO_DB": "default", "POSTGRE_NAME": name, "POSTGRE_USER": "postgres",
                "POSTGRE_PASSWORD": "", "POSTGRE_HOST": "127.0.0.1", "POSTGRE_PORT": "5432"}
    data_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    proc = ManagedProcess("label-studio", [
        str(LS_BIN), "start", "--no-browser", "--internal-host", "127.0.0.1", "-p", str(port),
        "--username", ADMIN_EMAIL, "--password", ADMIN_PASSWORD, "--user-token", ADMIN_TOKEN,
        "--enable-legacy-api-token"], workdir / "label-studio.log", env=env, cwd=data_dir)
    cleanup.append(proc.stop)
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: health_is_up(url), FIRST_START_TIMEOUT, 1.0, f"{url}/health", proc)
    return url


class RedisServer:
    """redis-server with AOF on a fixed port, to kill, restart, or restart empty."""

    def __init__(self, workdir: Path):
        self.dir = workdir / "redis"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: ManagedProcess | None = None
        self.start()

    def start(self) -> None:
        self.proc = ManagedProcess("redis-server", [
            shutil.which("redis-server"), "--port", str(self.port), "--bind", "127.0.0.1",
            "--dir", str(self.dir), "--appendonly", "yes", "--appendfsync", "everysec",
            "--save", ""], self.dir / "redis.log")
        wait_until(lambda: redis.Redis.from_url(self.url).ping(), 30, 0.1, "redis", self.proc)

    def kill(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.stop()

    def wipe(self) -> None:
        self.proc.stop()
        for p in self.dir.iterdir():
            if p.name != "redis.log":
                shutil.rmtree(p) if p.is_dir() else p.unlink()


class FaultyProxy:
    """An asyncio TCP proxy to Label Studio: `up`, `cut` (connections reset) or `error`
    (every request answered 500 without reaching Label Studio)."""

    def __init__(self, target_url: str):
        target = httpx.URL(target_url)
        self.target = (target.host, target.port)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.mode = "up"
        self.open: set[asyncio.StreamWriter] = set()
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._handle, "127.0.0.1", self.port), self.loop).result()

    def set(self, mode: str) -> None:
        self.mode = mode

        def drop():
            for w in list(self.open):
                w.transport.abort()
        self.loop.call_soon_threadsafe(drop)

    async def _handle(self, reader, writer) -> None:
        if self.mode == "cut":
            writer.transport.abort()
            return
        if self.mode == "error":
            try:
                await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
                body = b'{"detail": "soak: injected server error"}'
                writer.write(b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: "
                             b"application/json\r\nConnection: close\r\nContent-Length: "
                             + str(len(body)).encode() + b"\r\n\r\n" + body)
                await writer.drain()
            except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError):
                pass
            writer.close()
            return
        try:
            up_r, up_w = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self.open |= {writer, up_w}

        async def pipe(src, dst):
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except OSError:
                pass
            finally:
                dst.close()
                self.open.discard(dst)
        await asyncio.gather(pipe(reader, up_w), pipe(up_r, writer))


# -- the people ----------------------------------------------------------------------------------
class Annotators:
    """Threads labelling through "Label All Tasks"; every label's time and every failure."""

    def __init__(self, apis: list[LSApi], project):
        self.apis, self.project = apis, project
        self.stop = threading.Event()
        self.label_times: list[float] = []
        self.skips = 0
        self.failures: list[dict] = []
        self.payloads: list[dict] = []  # webhook-shaped bodies, for replays
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, args=(a, n), daemon=True)
                        for n, a in enumerate(apis)]
        for t in self.threads:
            t.start()

    def _run(self, api: LSApi, n: int) -> None:
        rng = random.Random(n)
        while not self.stop.is_set():
            try:
                task = api.next_task(self.project.id)
            except Exception as exc:  # noqa: BLE001 - recorded: an annotator saw it fail
                self._failed(n, None, "next", exc)
                time.sleep(2)
                continue
            if task is None:
                time.sleep(2)
                continue
            time.sleep(rng.uniform(1, 4))
            skip = rng.random() < 0.05
            try:
                start = time.monotonic()
                ann = api.annotate(task["id"], None if skip else self.project.truth[task["id"]],
                                   was_cancelled=skip)
                took = time.monotonic() - start
            except Exception as exc:  # noqa: BLE001
                self._failed(n, task["id"], "submit", exc)
                continue
            with self.lock:
                if skip:
                    self.skips += 1
                else:
                    self.label_times.append(time.time())
                self.payloads.append({"action": "ANNOTATION_CREATED",
                                      "project": {"id": self.project.id},
                                      "annotation": ann, "task": {"id": task["id"]}})
                if took > 3:
                    self.failures.append({"at": time.time(), "annotator": n, "task": task["id"],
                                          "what": "slow submit", "error": f"{took:.1f} s"})

    def _failed(self, n, task, what, exc) -> None:
        with self.lock:
            self.failures.append({"at": time.time(), "annotator": n, "task": task,
                                  "what": what, "error": str(exc)[:300]})

    def finish(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(30)


# -- faults --------------------------------------------------------------------------------------
class FaultDriver:
    def __init__(self, stack: Stack, redis_server: RedisServer, proxy: FaultyProxy,
                 annotators: Annotators, disk: bool, gap: tuple[float, float], seed: int):
        self.stack, self.redis, self.proxy, self.people = stack, redis_server, proxy, annotators
        self.disk, self.gap = disk, gap
        self.rng = random.Random(seed)
        self.survived: Counter = Counter()
        self.skipped: Counter = Counter()
        self.webhook_answers: Counter = Counter()
        self.bad_webhook_answers: list[str] = []
        self.redis_down = threading.Event()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _order(self):
        while True:
            kinds = list(FAULTS)
            if self.survived["redis-empty"] or self.skipped["redis-empty"]:
                kinds.remove("redis-empty")  # once
            self.rng.shuffle(kinds)
            yield from kinds

    def _run(self) -> None:
        for kind in self._order():
            if self.stop.wait(self.rng.uniform(*self.gap)):
                return
            log(f"fault: {kind}")
            try:
                done = getattr(self, kind.replace("-", "_"))()
            except Exception as exc:  # noqa: BLE001 - the driver's own trouble, reported
                log(f"fault {kind} could not be injected: {exc!r}")
                done = False
            (self.survived if done else self.skipped)[kind] += 1

    def _pause(self, seconds: float) -> None:
        self.stop.wait(seconds)

    def kill_worker(self) -> bool:
        from rq import Worker

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not self.stop.is_set():
            try:
                busy = [w.pid for w in Worker.all(connection=redis.Redis.from_url(
                    self.redis.url)) if w.get_current_job_id()]
            except redis.RedisError:
                busy = []
            victims = [p for p in self.stack.workers if p.alive() and p.pid in busy]
            if victims:
                victim = victims[0]
                os.killpg(victim.pid, signal.SIGKILL)
                victim.proc.wait(10)
                self.stack.workers.remove(victim)
                self.stack.start_worker()
                return True
            time.sleep(0.2)
        return False

    def _redis_down(self, stop, seconds: float) -> None:
        self.redis_down.set()
        stop()
        self._pause(seconds)
        self.redis.start()
        time.sleep(2)
        self.redis_down.clear()

    def redis_aof(self) -> bool:
        self._redis_down(self.redis.kill, self.rng.uniform(3, 8))
        return True

    def redis_empty(self) -> bool:
        self._redis_down(self.redis.wipe, self.rng.uniform(3, 8))
        return True

    def ls_cut(self) -> bool:
        self.proxy.set("cut")
        self._pause(30)
        self.proxy.set("up")
        return True

    def ls_500(self) -> bool:
        self.proxy.set("error")
        self._pause(20)
        self.proxy.set("up")
        return True

    def disk_full(self) -> bool:
        if not self.disk:
            return False
        ballast = self.stack.model_dir / "ballast"
        try:
            with ballast.open("wb") as fh:
                chunk = b"\0" * (1 << 20)
                while True:
                    fh.write(chunk)
        except OSError:
            pass  # ENOSPC: full
        try:
            self._pause(30)
        finally:
            ballast.unlink(missing_ok=True)
        return True

    def webhooks(self) -> bool:
        with self.people.lock:
            real = list(self.people.payloads)
        bodies = []
        if real:
            bodies += [real[-1]] * 3  # duplicated
            bodies += [self.rng.choice(real[: max(1, len(real) // 2)])]  # late
        bodies += [b"{not json", b"[]", b'{"action": ""}', b'{"action": 5, "project": []}',
                   b'{"action": "ANNOTATION_CREATED", "project": "x' + b"9" * 5000 + b'"}',
                   b"\xff\xfe\x00garbage", b'{"action": "ANNOTATION_CREATED", "project": -1}']
        for body in bodies:
            content = body if isinstance(body, bytes) else json.dumps(body).encode()
            try:
                res = self.stack.http.post("/webhook", content=content,
                                           headers={"content-type": "application/json"})
                code = res.status_code
            except httpx.HTTPError as exc:
                code = type(exc).__name__
            self.webhook_answers[code] += 1
            if isinstance(code, str) or (code >= 500 and not (
                    code == 503 and self.redis_down.is_set())):
                self.bad_webhook_answers.append(f"{code} for {content[:80]!r}")
        return True

    def finish(self) -> None:
        self.stop.set()
        self.thread.join(120)
        self.proxy.set("up")


# -- measuring and checking ----------------------------------------------------------------------
class LagMeter:
    """How long the served version lags the labels: polled every 2 s."""

    def __init__(self, stack: Stack, project: int, people: Annotators):
        self.stack, self.project, self.people = stack, project, people
        self.longest = 0.0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.wait(2):
            try:
                versions = self.stack.status(self.project).get("versions") or []
            except Exception:  # noqa: BLE001 - Redis down: /status may fail; try again
                continue
            served = [v.get("n_labels") or 0 for v in versions if v.get("serving")]
            n = served[-1] if served else 0
            with self.people.lock:
                times = sorted(self.people.label_times)
            if n < len(times):
                self.longest = max(self.longest, time.time() - times[n])


def job_ids(q) -> set[str]:
    """Queued, scheduled (retries) and running jobs; RQ leaves a finished job's entry in its
    started registry until the entry's time runs out, so a job counts as running by its status."""
    from rq.job import Job

    started = q.started_job_registry.get_job_ids()
    jobs = Job.fetch_many(started, connection=q.connection)
    return (set(q.job_ids) | set(q.scheduled_job_registry.get_job_ids())
            | {j.id for j in jobs if j is not None and j.get_status(refresh=False) == "started"})


def drain(stack: Stack, project: int, queue_names: list[str], url: str, timeout: float) -> bool:
    """Wait until nothing is queued, running, scheduled or pending for 10 s in a row."""
    from rq import Queue

    conn = redis.Redis.from_url(url)
    quiet_since = None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            busy = queue_busy(stack.status(project)) or any(
                job_ids(Queue(n, connection=conn)) for n in queue_names)
        except Exception:  # noqa: BLE001
            busy = True
        if busy:
            quiet_since = None
        elif quiet_since is None:
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since > 10:
            return True
        time.sleep(1)
    return False


def newest_version(stack: Stack, project: int) -> str | None:
    """The newest version's name."""
    from model.versions import VersionStore

    return (VersionStore(stack.model_dir, project).names() or [None])[-1]


def foreign_predictions(api: LSApi, project: int) -> dict[int, dict]:
    return {p["id"]: {k: p[k] for k in ("task", "result", "score", "model_version")}
            for p in api.project_predictions(project) if p["model_version"] == FOREIGN}


def order_live(rt, project: int, unlabelled: set[int], ls_version: str | None) -> dict:
    """Whether Label Studio serves the serving version's order: the project's model version is
    its Label Studio name, and the first unlabelled task of its stored order has its prediction
    (only the head is pushed: QUEUE_HEAD tasks and top-ups, so the rest may lack one)."""
    from ml_backend import orders
    from ml_backend.ownership import serving_name

    store = rt.versions(project)
    name = serving_name(rt.settings, store)
    stored = orders.load(rt.settings, project, name) if store.serving() else None
    first = next((t for t in stored.tasks.tolist() if t in unlabelled), None) if stored else None
    lacking = rt.labelstudio.tasks_lacking(project, name) & unlabelled
    return {
        "Label Studio serves its order": ls_version == name and (
            not unlabelled or (first is not None and first not in lacking)),
        "Label Studio's model version": ls_version,
        "unlabelled tasks with its prediction": len(unlabelled - lacking),
    }


def check(stack: Stack, ls_url: str, project, redis_url: str, before: dict) -> dict:
    from rq import Queue

    from ml_backend.queue_state import ProjectQueue
    from ml_backend.runtime import Runtime
    from ml_backend.settings import Settings
    from ml_backend.steps import read_pool

    settings = Settings(label_studio_url=ls_url, label_studio_api_key=ADMIN_TOKEN,
                        redis_url=redis_url, model_dir=stack.model_dir, backbone="resnet18",
                        weights="none")
    rt = Runtime(settings)
    config, pool = read_pool(rt, project.id)
    store = rt.versions(project.id)
    serving = store.serving()
    meta = store.meta(serving) if serving else {}
    ls_version = project.api.get(f"/api/projects/{project.id}")["model_version"]
    live = order_live(rt, project.id, set(pool.unlabeled), ls_version)
    conn = redis.Redis.from_url(redis_url)
    queues = [Queue(stack.env["QUEUE_NAME"], connection=conn)]
    pq = ProjectQueue(conn, project.id)
    first = set().union(*(job_ids(q) for q in queues))
    time.sleep(30)  # a job seen now and 30 s later is stuck (periodic reconciles take seconds)
    stuck = first & set().union(*(job_ids(q) for q in queues))
    half = [p.name for p in store.root.glob(".tmp-*")] + [
        p.name for p in store.versions_dir.iterdir() if not (p / "meta.json").is_file()]
    return {
        "labels in Label Studio": len(pool.labels),
        "serving version": serving,
        "newest version": (store.names() or [None])[-1],
        "serving trained on Label Studio's labels (digest)":
            meta.get("labels_digest") == pool.digest(config),
        "serving trained on n labels": meta.get("n_labels"),
        **live,
        "project lock held": pq.is_locked(),
        "jobs stuck (queued, scheduled or running for 30 s)": sorted(stuck),
        "jobs pending": [k for k in ("retrain", "prioritize", "prune", "finetune", "reconcile")
                         if pq.is_pending(k)],
        "half-written versions": half,
        "foreign predictions unchanged":
            foreign_predictions(project.api, project.id) == before,
    }


# -- the run -------------------------------------------------------------------------------------
def mount_tmpfs(folder: Path, size_mb: int) -> bool:
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return False
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs",
                           str(folder)], capture_output=True)
    return done.returncode == 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=60)
    ap.add_argument("--db", choices=("sqlite", "postgresql"), default="sqlite")
    ap.add_argument("--tasks-per-class", type=int, default=0,
                    help="images per class (default: enough for the run)")
    ap.add_argument("--fault-gap", type=float, nargs=2, default=(10, 40), metavar=("MIN", "MAX"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workdir", type=Path, default=ROOT / "data" / f"soak-{os.getpid()}")
    args = ap.parse_args(argv)
    per_class = args.tasks_per_class or max(100, int(args.minutes * 20))
    work = args.workdir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    model_dir = work / "backend" / "models"
    disk = mount_tmpfs(model_dir, 512)
    cleanup: list = []
    try:
        return run(args, work, per_class, disk, cleanup)
    finally:
        for fn in reversed(cleanup):
            try:
                fn()
            except Exception as exc:  # noqa: BLE001
                log(f"cleanup: {exc!r}")
        if disk:
            subprocess.run(["umount", "-l", str(model_dir)], check=False)


def run(args, work: Path, per_class: int, disk: bool, cleanup: list) -> int:
    images = work / "images"
    truth = make_images(images, per_class=per_class, seed=args.seed)
    log(f"{len(truth)} images; starting Label Studio ({args.db}); disk-full fault: {disk}")
    ls_url = start_label_studio(work / "ls-data", images, args.db, work, cleanup)
    admin = LSApi(ls_url)
    project = create_project(admin, images, truth, title="soak")
    other = LSApi(ls_url, sign_up(admin, "annotator@example.com", "soak-annotator-pw-123"))
    preds = [{"task": t, "result": [{"from_name": "label", "to_name": "image", "type": "choices",
                                     "value": {"choices": [CLASSES[t % 3]]}}],
              "score": 0.5, "model_version": FOREIGN} for t in project.task_ids[:20]]
    admin.post(f"/api/projects/{project.id}/import/predictions", json=preds)
    foreign_before = foreign_predictions(admin, project.id)

    rds = RedisServer(work)
    cleanup.append(lambda: rds.proc and rds.proc.stop())
    proxy = FaultyProxy(ls_url)
    stack = start_stack(proxy.url, ADMIN_TOKEN, rds.url, work / "backend",
                        RECONCILE_INTERVAL="30", JOB_RETRIES="3", JOB_RETRY_DELAY="5",
                        RETRAIN_LOCK_TTL="120")
    cleanup.append(stack.stop)
    stack.start_worker()
    connect_backend(project, stack)
    log(f"project {project.id}: {len(project.task_ids)} tasks; backend {stack.url}; "
        f"LS {ls_url} (backend via {proxy.url})")

    people = Annotators([admin, other], project)
    lag = LagMeter(stack, project.id, people)
    driver = FaultDriver(stack, rds, proxy, people, disk, tuple(args.fault_gap), args.seed)
    start = time.time()
    exits: list[str] = []
    while time.time() - start < args.minutes * 60:
        time.sleep(10)
        for w in list(stack.workers):  # as docker compose's `restart: unless-stopped` would
            if not w.alive() and w.proc.returncode != -signal.SIGKILL:
                exits.append(f"{w.name} exited {w.proc.returncode}: {w.tail(1)[-200:]}")
                stack.workers.remove(w)
                stack.start_worker()
        log(f"labels {len(people.label_times)}, faults {dict(driver.survived)}, "
            f"longest lag {lag.longest:.0f} s")
    driver.finish()
    people.finish()
    for w in list(stack.workers):
        if not w.alive():
            stack.workers.remove(w)
    while len([w for w in stack.workers if w.alive()]) < 2:
        stack.start_worker()
    queues = [stack.env["QUEUE_NAME"]]
    log("faults stopped; draining the queue")
    drained = drain(stack, project.id, queues, rds.url, 600)
    out = subprocess.run([sys.executable, "-m", "ml_backend", "reconcile", "--project",
                          str(project.id)], env=stack.env, cwd=ROOT, capture_output=True,
                         text=True, timeout=300)
    log(f"reconcile: {out.stdout.strip()} {out.stderr.strip()[-300:]}")
    drained = drain(stack, project.id, queues, rds.url, 600) and drained
    lag.stop.set()
    status = stack.status(project.id)
    report = {
        "minutes": args.minutes, "db": args.db, "tasks": len(project.task_ids),
        "labels submitted": len(people.label_times), "skips": people.skips,
        "faults survived": dict(driver.survived),
        "workers that exited on their own (restarted)": exits, "faults not injected": dict(driver.skipped),
        # Every retrain that trained wrote a version (v1, v2, ...); the job history keeps 50.
        "versions trained": int((newest_version(stack, project.id) or "v0")[1:]),
        "failed or retried jobs in the last 50": sum(
            1 for j in status.get("jobs", []) if j.get("status") in ("failed", "retrying")),
        "longest lag of the served version behind the labels (s)": round(lag.longest, 1),
        "submits an annotator saw fail or wait over 3 s": people.failures,
        "webhook answers": {str(k): v for k, v in driver.webhook_answers.items()},
        "webhook 5xx not explained by Redis being down": driver.bad_webhook_answers,
        "queue drained": drained, "reconcile": out.stdout.strip()[-300:],
        **check(stack, ls_url, project, rds.url, foreign_before),
        "logs": str(work),
    }
    (work / "soak-report.json").write_text(json.dumps(report, indent=2, default=str))
    print(json.dumps(report, indent=2, default=str))
    ok = (report["serving trained on Label Studio's labels (digest)"]
          and report["Label Studio serves its order"] and not report["project lock held"]
          and not report["jobs stuck (queued, scheduled or running for 30 s)"]
          and not report["jobs pending"]
          and not report["half-written versions"] and report["foreign predictions unchanged"])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
