"""The loop at project scale against a real Label Studio 1.23.2, on SQLite or PostgreSQL.

    .venv/bin/python benchmarks/bench_scale.py submits --tasks 5000 --prelabel 4000
    .venv/bin/python benchmarks/bench_scale.py submits --tasks 100000 --prelabel 10000
    .venv/bin/python benchmarks/bench_scale.py continuous --tasks 5000 --minutes 10
    .venv/bin/python benchmarks/bench_scale.py pruning --tasks 5000
    (each with --db postgresql: a database of its own on 127.0.0.1:5432, user postgres, trust)

The project is built the way a large one exists, not labelled by hand: `--tasks` tasks imported
with `--prelabel` annotations in the same import (chunks of 5,000), images the same 12 tiny PNGs
referenced again and again, and every task's embedding written straight into the backend's
embedding store (synthetic vectors: three classes, overlapping), so nothing is embedded. The
backend (server and one RQ worker, resnet18 WEIGHTS=none, its own redis-server; bench_loop.py's
harness) trains its first version on the imported labels after a START_TRAINING webhook; then:

* `submits`: `--submits` times, a task is taken from the label stream and annotated, and the
  clock runs until Label Studio serves a new version with its head (QUEUE_HEAD predictions):
  median and p90. Goals: median <= 3 s at 5,000 tasks, <= 5 s at 100,000.
* `continuous`: `--annotators` users (the admin and users signed up through the invite link)
  each take a task from `/api/projects/{id}/next/` and submit it every `--every` seconds for
  `--minutes`. Printed: their submit latency (p50, p99, max) and failed submits (goal p99 <= 1 s,
  none failed); sampled every second, how many promoted versions newer than the one Label Studio
  serves exist (goal: never more than one) and the predictions of ours in Label Studio (the
  bound `(KEEP_VERSIONS + 1) x QUEUE_HEAD` plus those Label Studio asked for on demand).
* `pruning`: annotators submit as above while old versions of QUEUE_HEAD predictions each are
  deleted the way the backend deletes them (one prediction per request), then while Label
  Studio's own bulk delete of one runs: submit latency p50/p99/max before and during each.

Figures are under the load of whatever else runs: the load averages are printed with them.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.bench_loop import Bench, percentile, start_redis  # noqa: E402
from tests.integration.backend import start_backend  # noqa: E402
from tests.integration.dataset import (  # noqa: E402
    CLASSES, IMAGE_SUBDIR, LABEL_CONFIG, LSProject, local_files_url, make_images)
from tests.integration.labelstudio import (  # noqa: E402
    ADMIN_EMAIL, ADMIN_PASSWORD, ADMIN_TOKEN, FIRST_START_TIMEOUT, LS_BIN, LSApi,
    choice_result, sign_up)
from tests.integration.loop import connect_backend  # noqa: E402
from tests.integration.procs import ManagedProcess, free_port, health_is_up, wait_until  # noqa
# Label Studio 1.23's prediction import recounts every task of the project after each import
# unless this flag of its own is on (label_studio_env sets it); with it, only the tasks given one.
from tools.processes import PREDICTIONS_IMPORT_FLAG, label_studio_env  # noqa: E402

PER_CLASS_IMAGES = 4
IMPORT_CHUNK = 5000
PG_TEMPLATE = "bench_scale_template"


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load {one:.1f} {five:.1f} {fifteen:.1f} ({os.cpu_count()} cores)"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def summary(values: list[float]) -> str:
    if not values:
        return "none"
    return (f"p50 {percentile(values, 50):.2f} s, p99 {percentile(values, 99):.2f} s, "
            f"max {max(values):.2f} s ({len(values)})")


# -- Label Studio on SQLite or PostgreSQL ---------------------------------------------------------
def psql(sql: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-c", sql], check=check,
                          capture_output=True, text=True)


def pg_env(name: str) -> dict[str, str]:
    return {"DJANGO_DB": "default", "POSTGRE_NAME": name, "POSTGRE_USER": "postgres",
            "POSTGRE_PASSWORD": "", "POSTGRE_HOST": "127.0.0.1", "POSTGRE_PORT": "5432"}


def run_label_studio(data_dir: Path, images: Path, log_path: Path, extra: dict[str, str],
                     timeout: float) -> tuple[ManagedProcess, str]:
    env = label_studio_env(data_dir, images) | extra
    data_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    proc = ManagedProcess("label-studio", [
        str(LS_BIN), "start", "--no-browser", "--internal-host", "127.0.0.1", "-p", str(port),
        "--username", ADMIN_EMAIL, "--password", ADMIN_PASSWORD, "--user-token", ADMIN_TOKEN,
        "--enable-legacy-api-token"], log_path, env=env, cwd=data_dir)
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: health_is_up(url), timeout, 0.5, f"{url}/health", proc)
    return proc, url


def start_label_studio(db: str, work: Path, run_dir: Path, images: Path,
                       cleanup: list, fast_import: bool = True) -> str:
    """A migrated Label Studio: a copy of a template data dir (SQLite) or a database made from a
    template database (PostgreSQL); the templates are made on the first run."""
    if db == "sqlite":
        template = work / "ls-template"
        if not (template / "label_studio.sqlite3").is_file():
            shutil.rmtree(template, ignore_errors=True)
            proc, _ = run_label_studio(template, images, work / "ls-template.log", {},
                                       FIRST_START_TIMEOUT)
            proc.stop()
        shutil.copytree(template, run_dir / "ls-data")
        extra: dict[str, str] = {}
    else:
        ready = work / "pg-template-migrated"
        if not ready.is_file():
            psql(f"DROP DATABASE IF EXISTS {PG_TEMPLATE}")
            psql(f"CREATE DATABASE {PG_TEMPLATE}")
            proc, _ = run_label_studio(work / "ls-pg-template", images,
                                       work / "ls-pg-template.log", pg_env(PG_TEMPLATE),
                                       FIRST_START_TIMEOUT)
            proc.stop()
            ready.touch()
        name = f"bench_scale_{os.getpid()}"
        psql(f"CREATE DATABASE {name} TEMPLATE {PG_TEMPLATE}")
        cleanup.append(lambda: psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)", False))
        extra = pg_env(name)
    if not fast_import:
        extra[PREDICTIONS_IMPORT_FLAG] = "false"
    proc, url = run_label_studio(run_dir / "ls-data", images, run_dir / "ls.log", extra, 120)
    cleanup.append(proc.stop)
    return url


# -- the project ----------------------------------------------------------------------------------
def import_project(api: LSApi, images: Path, n_tasks: int, n_labelled: int) -> LSProject:
    """`n_tasks` tasks over a few images, the first `n_labelled` with their true label, imported
    together (`IMPORT_CHUNK` a request)."""
    pid = api.post("/api/projects/", json={"title": "scale", "label_config": LABEL_CONFIG})["id"]
    storage = api.post("/api/storages/localfiles", json={
        "project": pid, "title": "images", "path": str(images / IMAGE_SUBDIR),
        "use_blob_urls": True, "regex_filter": r".*\.png"})
    truth_of_row = [CLASSES[i % len(CLASSES)] for i in range(n_tasks)]
    rel = [f"{IMAGE_SUBDIR}/{c}_{(i // 3) % PER_CLASS_IMAGES:02d}.png"
           for i, c in enumerate(truth_of_row)]
    ids: list[int] = []
    for start in range(0, n_tasks, IMPORT_CHUNK):
        chunk = []
        for i in range(start, min(n_tasks, start + IMPORT_CHUNK)):
            task: dict = {"data": {"image": local_files_url(rel[i])}}
            if i < n_labelled:
                task["annotations"] = [{"result": [choice_result(truth_of_row[i])]}]
            chunk.append(task)
        ids += api.import_tasks(pid, chunk)
    if len(ids) != n_tasks:
        raise AssertionError(f"imported {n_tasks} tasks, Label Studio answered {len(ids)} ids")
    return LSProject(id=pid, api=api, truth=dict(zip(ids, truth_of_row)),
                     image_of=dict(zip(ids, rel)), storage_id=storage["id"])


def write_embeddings(model_dir: Path, project: LSProject, seed: int = 0) -> None:
    """Every task's vector straight into the embedding store the backend reads (resnet18,
    WEIGHTS=none as the backend runs): its class's centre plus noise enough that the classes
    overlap, so a model is unsure of some tasks."""
    from model.backbone import load_backbone
    from model.store import EmbeddingStore

    bb = load_backbone("resnet18", "none", "cpu")
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1, size=(len(CLASSES), bb.dim)).astype(np.float32)
    store = EmbeddingStore(model_dir, project.id, bb.fingerprint, bb.dim)
    ids = project.task_ids
    for start in range(0, len(ids), 10000):
        chunk = ids[start : start + 10000]
        noise = rng.normal(0, 1.6, size=(len(chunk), bb.dim)).astype(np.float32)
        vecs = {f"synthetic-{t}": centres[CLASSES.index(project.truth[t])] + n
                for t, n in zip(chunk, noise)}
        store.put(vecs, {t: (local_files_url(project.image_of[t]), f"synthetic-{t}")
                         for t in chunk})
    store.close()


def first_version(bench: Bench, n_labels: int, timeout: float) -> float:
    """START_TRAINING, then wait until a version trained on the imported labels is live."""
    t0 = time.monotonic()
    bench.backend.http.post("/webhook", json={"action": "START_TRAINING",
                                              "project": bench.pid}).raise_for_status()

    def trained():
        status = bench.retrain_idle()
        versions = status.get("versions") or []
        return bool(versions) and versions[-1]["n_labels"] >= n_labels and any(
            v.get("serving") for v in versions)

    wait_until(trained, timeout, 1.0, "the first version trained on the imported labels")
    return time.monotonic() - t0


# -- people ---------------------------------------------------------------------------------------
class Annotators:
    """Each API a person: take the next task, submit its true label, every `every` seconds."""

    def __init__(self, apis: list[LSApi], project: LSProject, every: float):
        self.apis, self.project, self.every = apis, project, every
        self.stop = threading.Event()
        self.submits: list[tuple[float, float]] = []  # (wall time, seconds)
        self.failures: list[str] = []
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, args=(a,), daemon=True)
                        for a in apis]

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def _run(self, api: LSApi) -> None:
        while not self.stop.is_set():
            t0 = time.monotonic()
            try:
                task = api.next_task(self.project.id)
                if task is not None:
                    s0 = time.perf_counter()
                    api.annotate(task["id"], self.project.truth[task["id"]])
                    took = time.perf_counter() - s0
                    with self.lock:
                        self.submits.append((time.time(), took))
            except Exception as exc:  # noqa: BLE001 - a failure an annotator saw
                with self.lock:
                    self.failures.append(f"{time.strftime('%H:%M:%S')} {exc!s:.200}")
            self.stop.wait(max(0.0, self.every - (time.monotonic() - t0)))

    def latencies(self, since: float = 0.0, until: float = float("inf")) -> list[float]:
        with self.lock:
            return [s for t, s in self.submits if since <= t <= until]

    def finish(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(60)


def people(api: LSApi, n: int) -> list[LSApi]:
    apis = [api]
    for i in range(1, n):
        token = sign_up(api, f"annotator{i}@example.com", f"scale-annotator-pw-{i}23")
        apis.append(LSApi(api.url, token, timeout=300))
    return apis


class Sampler:
    """Every second: promoted versions newer than the one Label Studio serves, and the
    predictions of ours Label Studio holds (by version)."""

    def __init__(self, api: LSApi, pid: int, model_dir: Path):
        from model.versions import VersionStore

        self.api, self.pid, self.store = api, pid, VersionStore(model_dir, pid)
        self.behind: list[int] = []
        self.most = (0, {})
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.wait(1.0):
            try:
                live = self.api.get(f"/api/projects/{self.pid}/")["model_version"] or ""
                stored = self.api.get(f"/api/projects/{self.pid}/model-versions/")
            except Exception:  # noqa: BLE001 - a busy Label Studio: the next sample
                continue
            ours = {v: n for v, n in stored.items() if v.startswith("al-")}
            promoted = [n for n in self.store.names()
                        if (self.store.meta(n).get("promotion") or {}).get("promoted")]
            name = live.removeprefix("al-")
            if name in promoted:
                self.behind.append(len(promoted) - 1 - promoted.index(name))
            if sum(ours.values()) > self.most[0]:
                self.most = (sum(ours.values()), ours)


# -- scenarios ------------------------------------------------------------------------------------
def submits(args, bench: Bench) -> None:
    labelled = set(t for t in bench.project.task_ids[: args.prelabel])
    rows = []
    for i in range(args.submits):
        time.sleep(args.pause)
        row = bench.submit_and_wait(labelled)
        job, queue = row["job"], row["job"].get("queue") or {}
        rows.append(row)
        log(f"submit {i + 1}: POST {row['submit']:.2f}s  live after {row['live']:5.2f}s  "
            f"({row['version']}: job {job['seconds']:.2f}s, order "
            f"{queue.get('order_seconds', float('nan')):.2f}s, pushed {queue.get('pushed')}, "
            f"ranked {queue.get('ranked')}); {load()}")
    live = [r["live"] for r in rows]
    goal = 3.0 if args.tasks <= 5000 else 5.0
    print(f"\nsubmit -> new order live ({args.db}, {args.tasks} tasks, {args.prelabel} labels, "
          f"{len(rows)} submits {args.pause:g} s after the last went live, QUEUE_HEAD "
          f"{args.queue_head}): median {statistics.median(live):.2f} s, "
          f"p90 {percentile(live, 90):.2f} s, max {max(live):.2f} s; goal median <= {goal:.0f} s: "
          f"{'met' if statistics.median(live) <= goal else 'MISSED'}; {load()}")


def profile(bench: Bench, env: dict[str, str], redis_url: str) -> None:
    """One retrain in this process (after one that fills the kept task listing), under
    cProfile: the functions that took longest, by cumulative time."""
    import cProfile
    import pstats

    import redis

    os.environ.update(env)
    from ml_backend.runtime import Runtime
    from ml_backend.settings import Settings
    from ml_backend.steps import StepContext, retrain

    bench.retrain_idle()
    rt = Runtime(Settings())
    ctx = StepContext(redis=redis.Redis.from_url(redis_url))
    retrain(rt, bench.pid, ctx)
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.runcall(retrain, rt, bench.pid, ctx)
    print(f"\na retrain in-process: {time.perf_counter() - t0:.2f} s; {load()}")
    pstats.Stats(prof).sort_stats("cumulative").print_stats(60)


def continuous(args, bench: Bench, model_dir: Path) -> None:
    team = Annotators(people(bench.api, args.annotators), bench.project, args.every)
    sampler = Sampler(bench.api, bench.pid, model_dir)
    first = len(sampler.store.names())
    team.start()
    end = time.monotonic() + args.minutes * 60
    while time.monotonic() < end:
        time.sleep(min(60, max(0.0, end - time.monotonic())))
        log(f"{len(team.submits)} submits, {len(team.failures)} failed; served behind newest "
            f"(max so far) {max(sampler.behind, default=0)}; ours stored (max) "
            f"{sampler.most[0]}; {load()}")
    team.finish()
    sampler.stop.set()
    from ml_backend.settings import Settings

    s = Settings()
    bound = (s.keep_versions + 1) * s.queue_head
    behind = sampler.behind
    print(f"\ncontinuous labelling ({args.db}, {args.tasks} tasks, {args.annotators} annotators "
          f"every {args.every:g} s, {args.minutes:g} min; KEEP_VERSIONS {s.keep_versions}, "
          f"QUEUE_HEAD {s.queue_head}):")
    print(f"  submit latency {summary(team.latencies())}; failed submits "
          f"{len(team.failures)} {team.failures[:5]}")
    print(f"  served version behind the newest promoted: {dict(sorted(_count(behind).items()))}"
          f" (samples by versions behind); more than one: "
          f"{'never' if max(behind, default=0) <= 1 else 'YES'}")
    print(f"  predictions of ours in Label Studio, most at once: {sampler.most[0]} "
          f"{sampler.most[1]}; bound (KEEP_VERSIONS + 1) x QUEUE_HEAD = {bound} + on demand")
    print(f"  versions trained during the run: {len(sampler.store.names()) - first}; {load()}")


def _count(values: list[int]) -> dict[int, int]:
    out: dict[int, int] = {}
    for v in values:
        out[v] = out.get(v, 0) + 1
    return out


def pruning(args, bench: Bench, env: dict[str, str]) -> None:
    """Submit latency with nothing deleted, while the backend's way deletes old versions, and
    while Label Studio's bulk delete of one runs."""
    os.environ.update(env)
    from ml_backend.labelstudio import LabelStudioClient
    from ml_backend.settings import Settings

    head = Settings().queue_head
    targets = bench.project.task_ids[args.prelabel :]
    old = [f"al-old{i}" for i in range(args.old_versions + 1)]
    t0 = time.monotonic()
    for i, version in enumerate(old):
        tasks = [targets[(i * head + j) % len(targets)] for j in range(head)]
        preds = [{"task": t, "result": [choice_result(CLASSES[t % 3])], "score": 0.5 + i / 100,
                  "model_version": version} for t in tasks]
        bench.api.post(f"/api/projects/{bench.pid}/import/predictions", json=preds)
    log(f"{len(old)} old versions of {head} predictions imported in "
        f"{time.monotonic() - t0:.1f}s")
    team = Annotators(people(bench.api, args.annotators), bench.project, args.every)
    team.start()
    phases: dict[str, tuple[float, float]] = {}
    t = time.time()
    time.sleep(args.baseline)
    phases["nothing deleted"] = (t, time.time())
    client = LabelStudioClient(Settings())
    t = time.time()
    for version in old[:-1]:
        d0 = time.monotonic()
        client.delete_model_version(bench.pid, version)
        log(f"deleted {version} one prediction at a time in {time.monotonic() - d0:.1f}s")
    phases["deleting, one per request (the backend's way)"] = (t, time.time())
    t = time.time()
    d0 = time.monotonic()
    try:
        bench.api.delete(f"/api/projects/{bench.pid}/model-versions/",
                         json={"model_version": old[-1]}, expect=(200, 204))
        log(f"Label Studio's bulk delete of {old[-1]} took {time.monotonic() - d0:.1f}s")
    except Exception as exc:  # noqa: BLE001 - reported: what a bulk delete does here
        log(f"Label Studio's bulk delete of {old[-1]} FAILED after {time.monotonic() - d0:.1f}s: "
            f"{exc!s:.300}")
    time.sleep(3)
    phases["Label Studio's bulk delete"] = (t, time.time())
    team.finish()
    client.close()
    print(f"\nsubmit latency while old versions are deleted ({args.db}, {args.tasks} tasks, "
          f"{args.annotators} annotators every {args.every:g} s, versions of {head}):")
    for name, (since, until) in phases.items():
        print(f"  {name:48s} {summary(team.latencies(since, until))}")
    print(f"  failed submits {len(team.failures)} {team.failures[:5]}; {load()}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("scenario", choices=("submits", "continuous", "pruning"))
    ap.add_argument("--db", choices=("sqlite", "postgresql"), default="sqlite")
    ap.add_argument("--tasks", type=int, default=5000)
    ap.add_argument("--prelabel", type=int, default=4000)
    ap.add_argument("--submits", type=int, default=7)
    ap.add_argument("--pause", type=float, default=0.0,
                    help="seconds between a new order going live and the next submit (submits)")
    ap.add_argument("--annotators", type=int, default=3)
    ap.add_argument("--every", type=float, default=3.0, help="seconds between an annotator's "
                    "submits")
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--old-versions", type=int, default=3)
    ap.add_argument("--baseline", type=float, default=30.0,
                    help="seconds of submits before anything is deleted (pruning)")
    ap.add_argument("--profile", action="store_true",
                    help="after the submits, profile one retrain in this process (cProfile)")
    ap.add_argument("--slow-import", action="store_true",
                    help=f"Label Studio without {PREDICTIONS_IMPORT_FLAG}")
    ap.add_argument("--queue-head", type=int, default=50)
    ap.add_argument("--keep-versions", type=int, default=3)
    ap.add_argument("--workdir", type=Path, default=ROOT / "data" / "bench-scale")
    args = ap.parse_args()
    os.environ |= {"QUEUE_HEAD": str(args.queue_head), "KEEP_VERSIONS": str(args.keep_versions)}
    work = args.workdir.resolve()
    run_dir = work / f"run-{os.getpid()}"
    run_dir.mkdir(parents=True, exist_ok=True)
    images = work / "images"
    if not (images / IMAGE_SUBDIR).is_dir():
        make_images(images, per_class=PER_CLASS_IMAGES)
    cleanup: list = []
    done = False
    try:
        log(f"{args.scenario} on {args.db}: {args.tasks} tasks, {args.prelabel} labelled; {load()}")
        redis_proc, redis_url = start_redis(run_dir)
        cleanup.append(redis_proc.stop)
        ls_url = start_label_studio(args.db, work, run_dir, images, cleanup,
                                    fast_import=not args.slow_import)
        api = LSApi(ls_url, ADMIN_TOKEN, timeout=600)
        t0 = time.monotonic()
        project = import_project(api, images, args.tasks, args.prelabel)
        log(f"project {project.id}: {args.tasks} tasks with {args.prelabel} annotations imported "
            f"in {time.monotonic() - t0:.1f}s; {load()}")
        backend = start_backend(ls_url, ADMIN_TOKEN, redis_url, run_dir / "backend")
        cleanup.append(backend.stop)
        t0 = time.monotonic()
        write_embeddings(backend.model_dir, project)
        log(f"embeddings written in {time.monotonic() - t0:.1f}s")
        connect_backend(project, backend)
        bench = Bench(api, project, backend)
        took = first_version(bench, args.prelabel, 3600)
        log(f"first version (every task listed, {args.prelabel} labels read) live after "
            f"{took:.1f}s; {load()}")
        from tests.integration.backend import backend_env

        env = backend_env(ls_url, ADMIN_TOKEN, redis_url, backend.model_dir)
        if args.scenario == "submits":
            submits(args, bench)
            if args.profile:
                profile(bench, env, redis_url)
        elif args.scenario == "continuous":
            continuous(args, bench, backend.model_dir)
        else:
            pruning(args, bench, env)
        done = True
    finally:
        for fn in reversed(cleanup):
            try:
                fn()
            except Exception as exc:  # noqa: BLE001
                log(f"cleanup: {exc!r}")
        if done:
            shutil.rmtree(run_dir, ignore_errors=True)
        else:
            print(f"logs kept in {run_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
