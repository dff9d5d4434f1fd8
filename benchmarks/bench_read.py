"""What a retrain's read of the labels costs Label Studio: every annotation, or what changed.

    .venv/bin/python benchmarks/bench_read.py                    # 5,000 tasks, 3,000 labelled
    .venv/bin/python benchmarks/bench_read.py --tasks 1000 --labelled 500 --changes 10

A real Label Studio 1.23.2 (SQLite, from a migrated template kept under --workdir) holds a
project of `--tasks` tasks, `--labelled` of them imported with an annotation. A worker's client
(`labelling_tasks` with a token, as a retrain job calls it) reads the project once, then
`--changes` annotations are submitted and it reads again, `--rounds` times; a
client with ANNOTATIONS_FULL_READ_EVERY=0 reads every annotation each time, as every retrain did
before. Printed per read: requests to Label Studio by endpoint, the seconds of the read (both
keep the listing of every task between reads, so only the annotations differ) and the seconds
of the project's counts (read by every retrain anyway).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ml_backend.labelstudio import LabelStudioClient
from ml_backend.settings import Settings
from ml_backend.steps import annotation_counts
from tests.integration.dataset import LABEL_CONFIG
from tests.integration.labelstudio import (
    ADMIN_TOKEN,
    FIRST_START_TIMEOUT,
    RESTART_TIMEOUT,
    LSApi,
    choice_result,
    start_label_studio,
)

CLASSES = ("red", "green", "blue")


class Counted:
    """A worker's client whose requests are counted by endpoint; `full_every`: its
    ANNOTATIONS_FULL_READ_EVERY (0: every annotation on every read, as before)."""

    def __init__(self, url: str, pid: int, full_every: float):
        self.requests: Counter = Counter()
        http = httpx.Client(timeout=600, event_hooks={"request": [self.count]})
        self.client = LabelStudioClient(Settings(
            label_studio_url=url, label_studio_api_key=ADMIN_TOKEN,
            annotations_full_read_every=full_every), http=http)
        self.pid = pid

    def count(self, request: httpx.Request) -> None:
        path = request.url.path
        kind = "export by ids" if "ids[]" in request.url.params else "export" \
            if path.endswith("/export") else "task listing (filtered)" \
            if "query" in request.url.params else path
        self.requests[kind] += 1

    def read(self) -> tuple[float, float, Counter]:
        """(seconds reading the counts, seconds reading the tasks, requests) of one read."""
        self.requests.clear()
        t0 = time.perf_counter()
        info = self.client.project(self.pid)
        t1 = time.perf_counter()
        self.client.labelling_tasks(self.pid, token=info.task_number,
                                    counts=annotation_counts(info))
        return t1 - t0, time.perf_counter() - t1, Counter(self.requests)


def start(workdir: Path) -> tuple[object, str]:
    images = workdir / "images"
    images.mkdir(parents=True, exist_ok=True)
    template = workdir / "ls-template"
    if not (template / "label_studio.sqlite3").is_file():
        shutil.rmtree(template, ignore_errors=True)
        proc, _ = start_label_studio(template, images, workdir / "ls-template.log",
                                     FIRST_START_TIMEOUT)
        proc.stop()
    data = workdir / "ls-run"
    shutil.rmtree(data, ignore_errors=True)
    shutil.copytree(template, data)
    return start_label_studio(data, images, workdir / "ls.log", RESTART_TIMEOUT)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", type=int, default=5000)
    ap.add_argument("--labelled", type=int, default=3000)
    ap.add_argument("--changes", type=int, default=5, help="annotations submitted between reads")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--workdir", type=Path, default=ROOT / "data" / "bench-read")
    args = ap.parse_args()
    proc, url = start(args.workdir)
    api = LSApi(url)
    try:
        pid = api.post("/api/projects/", json={"title": "read", "label_config": LABEL_CONFIG})["id"]
        tasks = [{"data": {"image": f"/data/local-files/?d=colors/{i}.png"}} for i in
                 range(args.tasks)]
        for i, task in enumerate(tasks[: args.labelled]):
            task["annotations"] = [{"result": [choice_result(CLASSES[i % 3])]}]
        for start_at in range(0, len(tasks), 1000):
            api.post(f"/api/projects/{pid}/import", json=tasks[start_at : start_at + 1000])
        ids = sorted(int(t["id"]) for t in api.list_tasks(pid))
        unlabelled = iter(ids[args.labelled :])
        print(f"project {pid}: {args.tasks} tasks, {args.labelled} labelled; "
              f"{args.changes} submits between reads, {args.rounds} rounds")
        readers = {"changed only (now)": Counted(url, pid, full_every=3600),
                   "all annotations (before)": Counted(url, pid, full_every=0)}
        for reader in readers.values():
            reader.read()  # the first read of each lists every task and reads everything
        figures: dict[str, list] = {name: [] for name in readers}
        for _ in range(args.rounds):
            for _ in range(args.changes):
                api.annotate(next(unlabelled), CLASSES[0])
            for name, reader in readers.items():
                figures[name].append(reader.read())
        for name, rows in figures.items():
            counts_s = statistics.median(r[0] for r in rows)
            read_s = statistics.median(r[1] for r in rows)
            requests = sum((r[2] for r in rows), Counter())
            per_read = ", ".join(f"{k}: {v / len(rows):g}" for k, v in sorted(requests.items()))
            print(f"{name:26s} read {read_s:6.2f} s (median)  counts {counts_s:.2f} s  "
                  f"requests per read: {per_read}")
    finally:
        api.close()
        proc.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
