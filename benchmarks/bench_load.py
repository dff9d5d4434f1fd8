"""/predict under load, on loopback: latency, errors and the server's memory (prints figures).

    .venv/bin/python benchmarks/bench_load.py          # 50 clients, >= 60 s, >= 10,000 requests
    .venv/bin/python benchmarks/bench_load.py --quick  # 10 clients, 10 s: a smoke test

Setup: a trained version made beforehand through the real retrain job (`jobs._retrain`) with the
unit tests' stand-in for Label Studio, so every task's embedding is cached; the server is a real
`python -m ml_backend serve` subprocess on 127.0.0.1 (mobilenet_v3_small, WEIGHTS=none) whose
LABEL_STUDIO_URL is a tiny local HTTP server holding the same images (it counts fetches: a
cached task should cause none). Clients are httpx async clients in this process, each posting
one task per request, as Label Studio does when an annotator opens a task. The run stops by
itself: after --seconds, and not before --min-requests (capped at 3 x --seconds).
Reports: requests, errors, throughput, latency percentiles, server RSS as requests accumulate.
On a 2-core machine the clients and the server share the CPUs; the load average is printed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ml_backend import jobs
from ml_backend.runtime import Runtime
from ml_backend.settings import Settings
from tests.unit.fakes import CONFIG, FakeLabelStudio


def serve_images(images: dict[str, bytes]) -> tuple[ThreadingHTTPServer, list[int]]:
    """Label Studio's image URLs on 127.0.0.1; the list counts the fetches."""
    fetches = [0]

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            fetches[0] += 1
            body = images.get(self.path)
            self.send_response(200 if body else 404)
            self.send_header("Content-Length", str(len(body or b"")))
            self.end_headers()
            self.wfile.write(body or b"")

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, fetches


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prepare(root: Path, per_class: int) -> tuple[Settings, FakeLabelStudio]:
    """A serving version trained through the retrain job; every task's embedding cached."""
    fake = FakeLabelStudio(n_per_class=per_class, labelled_per_class=max(4, per_class // 10))
    settings = Settings(model_dir=root / "models", backbone="mobilenet_v3_small",
                        weights="none", label_studio_url="http://127.0.0.1:9",
                        redis_url="redis://127.0.0.1:9/0", batch_size=32)
    rt = Runtime(settings)
    rt.__dict__["labelstudio"] = fake
    t0 = time.perf_counter()
    result = jobs._retrain(rt, 1)  # trains, then scores (so embeds and caches) every task
    print(f"  trained {result['version']} on {result['n_labels']} labels and cached "
          f"{len(fake.task_list)} embeddings in {time.perf_counter() - t0:.1f} s", flush=True)
    return settings, fake


async def load(url: str, tasks: list[dict], clients: int, seconds: float, min_requests: int,
               server_pid: int) -> dict:
    latencies: list[float] = []
    errors: list[str] = []
    rss: list[tuple[int, float]] = [(0, rss_mb(server_pid))]
    start = time.perf_counter()
    hard_stop = start + 3 * seconds

    def done() -> bool:
        now = time.perf_counter()
        return now > hard_stop or (now - start >= seconds and len(latencies) >= min_requests)

    async def client(seed: int) -> None:
        rng = random.Random(seed)
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            while not done():
                task = rng.choice(tasks)
                body = {"tasks": [{"id": task["id"], "data": task["data"]}],
                        "project": "1.1700000000", "label_config": CONFIG}
                t0 = time.perf_counter()
                try:
                    res = await http.post("/predict", json=body)
                    ok = res.status_code == 200 and len(res.json()["results"]) == 1 and \
                        res.json()["results"][0]["result"]
                    if not ok:
                        errors.append(f"{res.status_code} {res.text[:100]}")
                except httpx.HTTPError as exc:
                    errors.append(repr(exc))
                latencies.append(time.perf_counter() - t0)

    async def sample_memory() -> None:
        while not done():
            await asyncio.sleep(1.0)
            rss.append((len(latencies), rss_mb(server_pid)))

    await asyncio.gather(sample_memory(), *(client(i) for i in range(clients)))
    return {"latencies": latencies, "errors": errors, "rss": rss,
            "seconds": time.perf_counter() - start}


def rss_at(samples: list[tuple[int, float]], n: int) -> tuple[int, float]:
    return min(samples, key=lambda s: abs(s[0] - n))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--min-requests", type=int, default=10_000)
    parser.add_argument("--tasks", type=int, default=600, help="tasks in the project")
    parser.add_argument("--quick", action="store_true", help="10 clients, 10 s, 1,000 requests")
    args = parser.parse_args()
    if args.quick:
        args.clients, args.seconds, args.min_requests, args.tasks = 10, 10, 1000, 60

    print(f"/predict load: {args.clients} clients on 127.0.0.1, >= {args.seconds:.0f} s and "
          f">= {args.min_requests} requests; {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.2f}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        settings, fake = prepare(root, per_class=max(2, args.tasks // 3))
        images, fetches = serve_images(fake.images)
        port = free_port()
        env = dict(os.environ, MODEL_DIR=str(settings.model_dir), BACKBONE=settings.backbone,
                   WEIGHTS="none", LABEL_STUDIO_URL=f"http://127.0.0.1:{images.server_port}",
                   REDIS_URL=settings.redis_url, PYTHONUNBUFFERED="1")
        log = (root / "server.log").open("wb")
        server = subprocess.Popen(
            [sys.executable, "-m", "ml_backend", "--log-level", "WARNING", "serve",
             "--host", "127.0.0.1", "--port", str(port)],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 120
            while True:
                try:
                    if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError((root / "server.log").read_text()[-2000:])
                time.sleep(0.5)
            tasks = list(fake.task_list)
            warm = asyncio.run(load(url, tasks, 4, 0, 200, server.pid))
            if warm["errors"]:
                raise RuntimeError(f"warm-up errors: {warm['errors'][:3]}")
            fetches[0] = 0
            out = asyncio.run(load(url, tasks, args.clients, args.seconds, args.min_requests,
                                   server.pid))
        finally:
            server.terminate()
            server.wait(30)
            images.shutdown()

    lat = sorted(out["latencies"])
    n = len(lat)
    q = statistics.quantiles(lat, n=100, method="inclusive")
    print(f"  requests                      {n:>10,}  in {out['seconds']:.1f} s "
          f"({n / out['seconds']:.0f} req/s)")
    print(f"  errors                        {len(out['errors']):>10}  "
          + (f"e.g. {out['errors'][0]}" if out["errors"] else ""))
    print(f"  latency p50 / p90 / p99 / max {q[49] * 1000:7.1f} / {q[89] * 1000:.1f} / "
          f"{q[98] * 1000:.1f} / {lat[-1] * 1000:.1f} ms")
    print(f"  image fetches during the run  {fetches[0]:>10}  (cached tasks need none)")
    samples = out["rss"]
    first = rss_at(samples, 1000)
    marks = [first, *(rss_at(samples, k) for k in (5000, 10_000)), samples[-1]]
    print("  server RSS after N requests   " + ", ".join(
        f"{k:,}: {mb:.0f} MB" for k, mb in dict(marks).items()))
    print(f"  RSS growth from ~1,000 to the last of {samples[-1][0]:,} requests: "
          f"{samples[-1][1] - first[1]:+.1f} MB")
    print(f"  load average at the end       {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
