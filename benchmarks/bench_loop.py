"""The live loop against a real Label Studio 1.23.2: how soon a submit reorders the queue.

    .venv/bin/python benchmarks/bench_loop.py              # 5,000 tasks, 7 submits, 300 webhooks
    .venv/bin/python benchmarks/bench_loop.py --tasks 1000 --submits 3 --webhooks 100
    .venv/bin/python benchmarks/bench_loop.py --profile    # also time each step of a retrain

It reuses the integration harness (tests/integration): a private redis-server, Label Studio
started from a migrated template data dir, the backend's real server and RQ worker
(resnet18, WEIGHTS=none, as in the tests). A project of `--tasks` small PNGs served through
local-files storage is connected to the backend and seeded (`python -m ml_backend seed`),
which embeds every image once, and `--prelabel` tasks are labelled (past the cold start).
Then, one at a time, a task is taken from the label stream (`GET /api/projects/{id}/next/`)
and annotated, and the clock runs until Label Studio serves the new order: the project's
`model_version` is a new version and that version has one prediction per unlabelled task.
`--profile` then runs two retrains in this process and times each step of the second (the
first, like a worker's first, lists every task; later ones re-read only annotated tasks), and
measures how fast old predictions are deleted. The backend keeps `--keep-versions` versions, by
default enough that no deletion runs during the measured submits. Goals:

* submit -> new order live in Label Studio: median at most 10 s (5,000 tasks, 2 cores);
* `/webhook` answers within 50 ms at the 99th percentile while a retrain runs.

The migrated Label Studio template, the images and the embedding cache are kept under
`--workdir` (default `data/bench-loop`), so only the first run migrates and embeds.

Projects of 5,000 and 100,000 tasks with thousands of labels, PostgreSQL, continuous labelling by
three annotators and submits while old versions are deleted: `bench_scale.py`, which reuses this
harness with projects imported with their labels and cached embeddings.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.integration.backend import Backend, backend_env, start_backend
from tests.integration.dataset import (
    CLASSES,
    IMAGE_SUBDIR,
    create_project,
    make_images,
)
from tests.integration.labelstudio import (
    ADMIN_TOKEN,
    FIRST_START_TIMEOUT,
    RESTART_TIMEOUT,
    LSApi,
    start_label_studio,
)
from tests.integration.loop import connect_backend, queue_busy, run_seed
from tests.integration.procs import ManagedProcess, free_port, wait_until

GOAL_MEDIAN_SECONDS = 10.0
GOAL_WEBHOOK_P99_MS = 50.0
LIVE_TIMEOUT = 300.0


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in [0, 100]) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, int(-(-q * len(ordered) // 100)))
    return ordered[min(rank, len(ordered)) - 1]


def same(job_version: str | None, label_studio_name: str) -> bool:
    """Whether a job's version (`v3`) is the one Label Studio serves (`al-v3`)."""
    return job_version is not None and label_studio_name.endswith(job_version) and (
        label_studio_name == job_version or label_studio_name[-len(job_version) - 1] == "-")


def start_redis(run_dir: Path) -> tuple[ManagedProcess, str]:
    exe = shutil.which("redis-server")
    if exe is None:
        sys.exit("redis-server is not on PATH: run `make system-deps`")
    port = free_port()
    proc = ManagedProcess(
        "redis-server",
        [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(run_dir)],
        run_dir / "redis.log",
    )  # fmt: skip
    url = f"redis://127.0.0.1:{port}/0"
    import redis

    wait_until(lambda: redis.Redis.from_url(url).ping(), 20, 0.1, "redis-server", proc)
    return proc, url


def ensure_images(images_root: Path, n: int) -> dict[str, str]:
    """{relative path: label} for `n` tasks, written once (the integration tests' generator)."""
    per_class = -(-n // len(CLASSES))
    folder = images_root / IMAGE_SUBDIR
    wanted = [f"{IMAGE_SUBDIR}/{c}_{i:02d}.png" for c in CLASSES for i in range(per_class)]
    if not all((images_root / rel).is_file() for rel in wanted):
        t0 = time.monotonic()
        folder.mkdir(parents=True, exist_ok=True)
        make_images(images_root, per_class=per_class)
        print(f"wrote {len(wanted)} images in {time.monotonic() - t0:.0f}s")
    truth = {rel: rel.split("/")[-1].split("_")[0] for rel in wanted}
    return dict(sorted(truth.items())[:n])


def ensure_template(workdir: Path, images_root: Path) -> Path:
    template = workdir / "ls-template"
    if not (template / "label_studio.sqlite3").is_file():
        shutil.rmtree(template, ignore_errors=True)
        t0 = time.monotonic()
        proc, _ = start_label_studio(template, images_root, workdir / "ls-template.log",
                                     FIRST_START_TIMEOUT)  # fmt: skip
        proc.stop()
        print(f"Label Studio template migrated in {time.monotonic() - t0:.0f}s")
    return template


class Bench:
    def __init__(self, api: LSApi, project, backend: Backend):
        self.api, self.project, self.backend = api, project, backend
        self.pid = project.id

    def live(self, previous: str, unlabelled: int) -> str | None:
        """The new version once Label Studio serves it for every unlabelled task."""
        version = self.api.get(f"/api/projects/{self.pid}/")["model_version"]
        if version in (previous, None, "") or version.endswith("untrained"):
            return None
        stored = self.api.get(f"/api/projects/{self.pid}/model-versions/")
        # The head of the order (QUEUE_HEAD) is what a retrain stores.
        head = min(unlabelled, int(os.environ.get("QUEUE_HEAD", "50")))
        return version if stored.get(version) == head else None

    def idle(self) -> dict:
        def check():
            status = self.backend.status(self.pid)
            failed = [j for j in status["jobs"] if j.get("status") == "failed"]
            if failed:
                raise AssertionError(f"job failed: {failed}\n{self.backend.logs(60)}")
            return None if queue_busy(status) else status

        return wait_until(check, LIVE_TIMEOUT, 0.2, "the backend to be idle")

    def retrain_idle(self) -> dict:
        """No retrain waiting or running (`prune` jobs deleting old versions may be: they are
        what annotators' next submits meet in a large project)."""

        def check():
            status = self.backend.status(self.pid)
            queue = status["queue"]
            running = queue["running"] and not queue.get("deleting_old_versions")
            return None if queue["retrain_pending"] or running else status

        return wait_until(check, LIVE_TIMEOUT, 0.2, "no retrain to be waiting or running")

    def recorded(self, version: str) -> dict:
        """The status once the job that made `version` live is in the history."""

        def check():
            status = self.backend.status(self.pid)
            failed = [j for j in status["jobs"] if j.get("status") == "failed"]
            if failed:
                raise AssertionError(f"job failed: {failed}\n{self.backend.logs(60)}")
            return status if any(same(j.get("version"), version) for j in status["jobs"]) else None

        return wait_until(check, LIVE_TIMEOUT, 0.2, f"the job of {version} in the history")

    def submit_and_wait(self, labelled: set[int]) -> dict:
        before = self.api.get(f"/api/projects/{self.pid}/")["model_version"]
        task = self.api.next_task(self.pid)
        assert task is not None, "nothing left to label"
        tid = task["id"]
        wall = time.time()
        t0 = time.perf_counter()
        self.api.annotate(tid, self.project.truth[tid])
        submit = time.perf_counter() - t0
        labelled.add(tid)
        unlabelled = len(self.project.truth) - len(labelled)
        version = wait_until(lambda: self.live(before, unlabelled), LIVE_TIMEOUT, 0.2,
                             "the new order in Label Studio")  # fmt: skip
        live = time.perf_counter() - t0
        status = self.recorded(version)  # not idle: old versions may still be being deleted
        since = [j for j in status["jobs"] if j.get("started_at", 0) >= wall - 1]
        job = next((j for j in since if same(j.get("version"), version)), None)
        if job is None:  # e.g. it went live, then failed and is waiting for a retry
            raise AssertionError(f"no finished job made {version} live: {since}\n"
                                 f"{self.backend.logs(40)}")
        others = [(j["kind"], j.get("reason"), j["status"], j["seconds"]) for j in since
                  if j is not job]  # fmt: skip
        return {"task": tid, "submit": submit, "live": live, "version": version, "job": job,
                "others": others}

    def webhooks_during_retrain(self, n: int) -> dict:
        """`n` sequential webhooks while a retrain runs; latencies of those inside it."""
        status = self.retrain_idle()
        done_before = len(status["jobs"])
        http = self.backend.http
        r = http.post("/webhook", json={"action": "START_TRAINING", "project": self.pid})
        r.raise_for_status()
        wait_until(lambda: self.backend.status(self.pid)["queue"]["running"], 60, 0.02,
                   "the retrain to start")  # fmt: skip
        body = {"action": "ANNOTATION_CREATED", "project": {"id": self.pid},
                "annotation": {"id": 1, "task": 1, "project": self.pid}}  # fmt: skip
        samples = []
        with httpx.Client(base_url=self.backend.url, timeout=10) as client:
            for _ in range(n):
                t0 = time.time()
                p0 = time.perf_counter()
                r = client.post("/webhook", json=body)
                samples.append((t0, (time.perf_counter() - p0) * 1000, r.status_code))
        def forced_done():
            status = self.backend.status(self.pid)
            jobs = status["jobs"][: len(status["jobs"]) - done_before]
            return next((j for j in jobs if j.get("reason") == "START_TRAINING"), None)

        forced = wait_until(forced_done, LIVE_TIMEOUT, 0.2, "the START_TRAINING retrain")
        start, end = forced["started_at"], forced["started_at"] + forced["seconds"]
        inside = [ms for t, ms, _ in samples if start <= t <= end]
        codes = sorted({c for _, _, c in samples})
        return {"sent": n, "inside": inside, "all": [ms for _, ms, _ in samples],
                "codes": codes, "retrain_seconds": forced["seconds"]}


def profile_retrain(env: dict[str, str], pid: int) -> dict[str, float]:
    """A retrain in this process with each step timed (the worker runs the same code), after
one that fills the kept task listing."""
    os.environ.update(env)
    from ml_backend import jobs, priorities
    from ml_backend.labelstudio import LabelStudioClient
    from ml_backend.runtime import Runtime
    from ml_backend.settings import Settings

    times: dict[str, float] = {}
    start = time.perf_counter()

    def timed(name, fn, consume=False):
        def wrapper(*args, **kwargs):
            t0 = time.perf_counter()
            out = fn(*args, **kwargs)
            if consume:
                out = list(out)
            times[name] = times.get(name, 0.0) + time.perf_counter() - t0
            if name.endswith("serve_by_priority"):  # the new order is live from here on
                times["live (from the start)"] = time.perf_counter() - start
            return out

        return wrapper

    client = ["label_config", "labelling_tasks", "_list_tasks", "tasks", "import_predictions",
              "model_versions", "serve_by_priority", "ml_backends", "retitle_backend",
              "delete_model_version", "set_webhook_headers"]  # fmt: skip
    listings = {"labelling_tasks", "_list_tasks", "tasks"}  # generators: timed to the end
    patches = [(LabelStudioClient, name, name in listings) for name in client
               if hasattr(LabelStudioClient, name)] + [
        (Runtime, "embed", False), (jobs, "train_candidate", False),
        (priorities, "plan_order", False), (priorities, "predict_proba", False),
        (priorities, "rank", False), (priorities, "push", False), (priorities, "switch", False),
    ]  # fmt: skip
    saved = [(owner, name, getattr(owner, name)) for owner, name, _ in patches]
    for owner, name, consume in patches:
        setattr(owner, name, timed(f"{getattr(owner, '__name__', owner)}.{name}",
                                   getattr(owner, name), consume))  # fmt: skip
    # As in a worker's job: its Redis, so the task listing is kept from one retrain to the next.
    import redis

    current_job = jobs.get_current_job
    job = SimpleNamespace(connection=redis.Redis.from_url(env["REDIS_URL"]))
    jobs.get_current_job = lambda: job
    try:
        rt = Runtime(Settings())
        _ = rt.backbone  # loaded before the clock, as in the worker
        first = time.perf_counter()
        jobs._retrain(rt, pid, force=True)  # a worker's first retrain lists every task
        listed = times["LabelStudioClient.labelling_tasks"]
        times.clear()
        start = time.perf_counter()
        out = jobs._retrain(rt, pid, force=True)
        times["total"] = time.perf_counter() - start
        times["version"] = out.get("version")
        times["first retrain of a worker: listing every task"] = listed
        times["first retrain of a worker: total"] = start - first
    finally:
        jobs.get_current_job = current_job
        for owner, name, fn in saved:
            setattr(owner, name, fn)
    return times


def deletion_rate(env: dict[str, str], pid: int, seconds: float = 30.0) -> str:
    """How fast old predictions are deleted the way the backend does it (one per request), over
    `seconds`."""
    from ml_backend.labelstudio import LabelStudioClient
    from ml_backend.settings import Settings

    client = LabelStudioClient(Settings())
    stored = client.model_versions(pid)
    ours = [v for v in stored if v.removeprefix("al-")[1:].isdigit()]
    oldest = min(ours, key=lambda v: int(v.removeprefix("al-")[1:]))
    before = stored[oldest]
    t0 = time.monotonic()
    left = client.delete_model_version(pid, oldest, more=lambda: time.monotonic() - t0 < seconds)
    elapsed = time.monotonic() - t0
    client.close()
    done = before - left
    return (f"deleting {oldest}: {done} predictions in {elapsed:.1f}s, "
            f"{done / elapsed:.1f}/s, {1000 * elapsed / max(done, 1):.0f} ms each; a "
            f"{before}-prediction version takes {before * elapsed / max(done, 1) / 60:.1f} min")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=5000)
    parser.add_argument("--submits", type=int, default=7)
    parser.add_argument("--prelabel", type=int, default=30,
                        help="labels given before measuring (15+ for 3 classes: past the cold "
                        "start, `auto` orders by margin as in most of a project's life)")
    parser.add_argument("--webhooks", type=int, default=300)
    parser.add_argument("--profile", action="store_true", help="time each step of a retrain")
    parser.add_argument("--keep-versions", type=int, default=50,
                        help="KEEP_VERSIONS of the backend: by default no old version is deleted "
                        "during the measured submits (--profile measures how fast Label Studio "
                        "deletes them)")
    parser.add_argument("--workdir", type=Path, default=ROOT / "data" / "bench-loop")
    args = parser.parse_args()

    workdir = args.workdir.resolve()
    images_root = workdir / "images"
    run_dir = workdir / f"run-{os.getpid()}"
    run_dir.mkdir(parents=True, exist_ok=True)
    procs: list = []
    backend = None
    done = False
    try:
        load = os.getloadavg()
        print(f"{os.cpu_count()} cores, load {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")
        truth_by_path = ensure_images(images_root, args.tasks)
        template = ensure_template(workdir, images_root)
        redis_proc, redis_url = start_redis(run_dir)
        procs.append(redis_proc)
        data_dir = run_dir / "ls-data"
        subprocess.run(["cp", "-r", str(template), str(data_dir)], check=True)
        ls_proc, ls_url = start_label_studio(data_dir, images_root, run_dir / "ls.log",
                                             RESTART_TIMEOUT)  # fmt: skip
        procs.append(ls_proc)
        api = LSApi(ls_url, ADMIN_TOKEN, timeout=300)
        t0 = time.monotonic()
        project = create_project(api, images_root, truth_by_path, title="bench")
        print(f"project {project.id}: {len(project.truth)} tasks imported and listed "
              f"in {time.monotonic() - t0:.1f}s")  # fmt: skip

        # The embedding cache survives runs: a fresh Label Studio numbers tasks the same way.
        cache = workdir / "embeddings"
        model_dir = run_dir / "backend" / "models"
        cached = cache.is_dir()
        if cached:
            shutil.copytree(cache, model_dir / "embeddings")
        os.environ["KEEP_VERSIONS"] = str(args.keep_versions)
        backend = start_backend(ls_url, ADMIN_TOKEN, redis_url, run_dir / "backend")
        connect_backend(project, backend)
        t0 = time.monotonic()
        chosen = run_seed(project, backend, ls_url, ADMIN_TOKEN, size=20, method="kcenter",
                          timeout=3600)  # fmt: skip
        print(f"seeded ({len(chosen)} first) in {time.monotonic() - t0:.0f}s, "
              f"({'with' if cached else 'without'} an embedding cache from an earlier run)")
        shutil.rmtree(cache, ignore_errors=True)
        shutil.copytree(model_dir / "embeddings", cache)

        bench = Bench(api, project, backend)
        bench.idle()
        labelled: set[int] = set()
        if args.prelabel:
            t0 = time.monotonic()
            per_class = -(-args.prelabel // len(CLASSES))
            first = [t for c in CLASSES for t in project.tasks_of(c)[:per_class]]
            for t in first[: args.prelabel]:
                api.annotate(t, project.truth[t])
                labelled.add(t)
            def trained_on_all():
                status = bench.retrain_idle()
                versions = status.get("versions") or []
                return versions and versions[-1]["n_labels"] == len(labelled)

            wait_until(trained_on_all, 3600, 1.0, "a version trained on the first labels")
            print(f"{len(labelled)} labels given first; trained on them and idle after "
                  f"{time.monotonic() - t0:.0f}s")
        rows = []
        for i in range(args.submits):
            row = bench.submit_and_wait(labelled)
            job, queue = row["job"], row["job"].get("queue") or {}
            rows.append(row)
            print(f"submit {i + 1}: task {row['task']:5d}  POST {row['submit']:.2f}s  "
                  f"live after {row['live']:5.2f}s  ({row['version']}: job {job['seconds']:.2f}s, "
                  f"order {queue.get('order_seconds', float('nan')):.2f}s, "
                  f"pushed {queue.get('pushed')}, {queue.get('strategy')})"
                  + (f"; other jobs {row['others']}" if row["others"] else ""))
        live = [r["live"] for r in rows]
        job_s = [r["job"]["seconds"] for r in rows]
        print(f"\nsubmit -> new order live ({args.tasks} tasks, {len(rows)} submits): "
              f"median {statistics.median(live):.2f}s, p90 {percentile(live, 90):.2f}s, "
              f"max {max(live):.2f}s; retrain job median {statistics.median(job_s):.2f}s; "
              f"goal median <= {GOAL_MEDIAN_SECONDS:.0f}s: "
              f"{'met' if statistics.median(live) <= GOAL_MEDIAN_SECONDS else 'MISSED'}")

        if args.webhooks:
            w = bench.webhooks_during_retrain(args.webhooks)
            inside = w["inside"] or w["all"]
            p99 = percentile(inside, 99)
            verdict = "met" if p99 <= GOAL_WEBHOOK_P99_MS else "MISSED"
            print(f"/webhook during a {w['retrain_seconds']:.1f}s retrain: {len(w['inside'])} of "
                  f"{w['sent']} inside it; p50 {percentile(inside, 50):.1f} ms, p99 {p99:.1f} ms, "
                  f"max {max(inside):.1f} ms; answers {w['codes']}; goal p99 <= "
                  f"{GOAL_WEBHOOK_P99_MS:.0f} ms: {verdict}")

        if args.profile:
            bench.retrain_idle()
            env = backend_env(ls_url, ADMIN_TOKEN, redis_url, model_dir)
            times = profile_retrain(env, project.id)
            print("\na retrain in-process (after a first one), by step (s):")
            print(json.dumps({k: round(v, 3) if isinstance(v, float) else v
                              for k, v in times.items()}, indent=1))  # fmt: skip
            print(deletion_rate(env, project.id))
        done = True
    finally:
        if backend is not None:
            backend.stop()
        for proc in reversed(procs):
            proc.stop()
        if done:
            shutil.rmtree(run_dir, ignore_errors=True)
        else:
            print(f"logs kept in {run_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
