"""Speed and memory figures for sampling/ (prints a table; no timing asserts).

    .venv/bin/python benchmarks/bench_sampling.py            # full run (a few minutes)
    .venv/bin/python benchmarks/bench_sampling.py --quick    # smaller sizes, for a smoke test

What it measures, side by side in one process:
  * kcenter, 1,000 picks from 100,000 x 512 float32: time per pick against one bare
    ``E @ v`` (the memory-bandwidth floor, since every pick must read E once), and against
    a straightforward implementation that calls sklearn's ``pairwise_distances`` of all
    points vs all selected centres at every pick, from the same start; the picks must be
    identical (asserted).
  * kcenter on 1,000,000 x 512 float32 through ``rank()``, in a subprocess: peak RSS
    relative to the embedding matrix.
  * ``rank()`` by margin / entropy / least_confidence on a 100,000 pool.
  * the other strategies on a 100,000 x 512 pool, for reference.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sampling import rank  # noqa: E402
from sampling.coreset import farthest_first  # noqa: E402
from benchmarks.timing import timed  # noqa: E402

ROWS: list[tuple[str, str, str, str]] = []


def row(what: str, figure: str, target: str = "", verdict: str = "") -> None:
    ROWS.append((what, figure, target, verdict))
    print(f"  {what:<58} {figure:>22}  {target:<14} {verdict}", flush=True)


def mean_time(fn, calls: int) -> float:
    fn()
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - t0) / calls


def naive_kcenter(x: np.ndarray, k: int, start: int) -> tuple[list[int], list[float]]:
    """Farthest-first as often written: fresh distances to every selected centre per pick."""
    picks, times = [start], []
    for _ in range(k - 1):
        t0 = time.perf_counter()
        picks.append(naive_pick(x, picks))
        times.append(time.perf_counter() - t0)
    return picks, times


def naive_pick(x: np.ndarray, centres: list[int]) -> int:
    from sklearn.metrics import pairwise_distances

    return int(np.argmax(pairwise_distances(x, x[centres]).min(axis=1)))


def bench_kcenter(n: int, d: int, picks: int, naive_picks: int) -> None:
    print(f"\nkcenter on {n:,} x {d} float32, {picks:,} picks", flush=True)
    x = np.random.default_rng(0).standard_normal((n, d), dtype=np.float32)
    v = x[123].copy()
    none = np.zeros(n, dtype=bool)
    start = 7

    # Mean per call against mean per pick, the matvecs run just before and just after
    # the picks, so background load affects both sides alike.
    before = mean_time(lambda: x @ v, picks // 2)
    t0 = time.perf_counter()
    ours, _ = farthest_first(x, picks, none, start)
    ours_total = time.perf_counter() - t0
    per_pick = ours_total / picks
    matvec = (before + mean_time(lambda: x @ v, picks // 2)) / 2
    row("one bare E @ v (numpy sgemv), mean", f"{matvec * 1e3:.2f} ms")
    ratio = f"{per_pick / matvec:.2f}x"
    row("kcenter, per pick, mean", f"{per_pick * 1e3:.2f} ms", "<= 1.5x E @ v", ratio)
    t_rank = timed(lambda: rank("kcenter", k=picks, embeddings=x, seed=0))
    row(f"rank('kcenter', k={picks:,}) end to end", f"{t_rank:.2f} s")

    # Naive baseline: sklearn pairwise_distances (BLAS-backed; faster here than scipy's
    # cdist) of all points vs all centres, at every pick, from the same start.
    naive_pick(x, [start])  # warm-up
    naive, naive_times = naive_kcenter(x, naive_picks, start)
    same = naive == ours[:naive_picks].tolist()
    row(f"naive, first {naive_picks} picks: identical picks?", str(same))
    assert same, "naive and fast farthest-first disagree on the picks"
    t0 = time.perf_counter()
    farthest_first(x, naive_picks, none, start)
    ours_first = time.perf_counter() - t0
    naive_first = float(np.sum(naive_times))
    row(f"naive, first {naive_picks} picks", f"{naive_first:.2f} s")
    row(f"kcenter, first {naive_picks} picks", f"{ours_first:.3f} s")
    speedup = naive_first / ours_first
    row(
        f"speed-up, first {naive_picks} picks (measured)",
        f"{speedup:.0f}x",
        ">= 10x",
        "ok" if speedup >= 10 else "MISSED",
    )
    # A naive pick costs more as centres accumulate. Time single naive picks with more
    # centres and interpolate linearly to estimate the whole run.
    more = [s for s in (picks // 4, picks // 2, picks - 1) if s >= naive_picks]
    ks = list(range(1, naive_picks)) + more
    ts = list(naive_times)
    for s in ks[naive_picks - 1 :]:
        t0 = time.perf_counter()
        naive_pick(x, ours[:s].tolist())
        ts.append(time.perf_counter() - t0)
        row(f"naive, one pick with {s} centres", f"{ts[-1]:.2f} s")
    naive_full = float(np.sum(np.interp(np.arange(1, picks), ks, ts)))
    speedup = naive_full / ours_total
    row(
        f"speed-up, {picks:,} picks (naive total estimated {naive_full:.0f} s)",
        f"{speedup:.0f}x",
        ">= 10x",
        "ok" if speedup >= 10 else "MISSED",
    )


def _memory_child(n: int, d: int, picks: int, n_labeled: int) -> None:
    x = np.random.default_rng(0).standard_normal((n, d), dtype=np.float32)
    labeled = np.zeros(n, dtype=bool)
    labeled[np.random.default_rng(1).choice(n, n_labeled, replace=False)] = True
    base = _rss_now()
    t0 = time.perf_counter()
    r = rank("kcenter", k=picks, labeled=labeled, embeddings=x, seed=0)
    elapsed = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(f"{x.nbytes} {base} {peak} {elapsed} {len(r.indices)}")


def _rss_now() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def bench_memory(n: int, d: int, picks: int, n_labeled: int) -> None:
    print(
        f"\nkcenter memory on {n:,} x {d} float32 via rank(): {picks} picks, "
        f"{n_labeled:,} labelled (subprocess)",
        flush=True,
    )
    out = subprocess.run(
        [sys.executable, __file__, "--memory-child", str(n), str(d), str(picks), str(n_labeled)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    nbytes, base, peak, elapsed = int(out[0]), int(out[1]), int(out[2]), float(out[3])
    gib = 1 << 30
    row("embedding matrix", f"{nbytes / gib:.2f} GiB")
    row("RSS before rank() (matrix + interpreter)", f"{base / gib:.2f} GiB")
    row(
        "peak RSS of the whole process",
        f"{peak / gib:.2f} GiB",
        "<= 2x matrix",
        f"{peak / nbytes:.2f}x",
    )
    row("extra memory used by rank()", f"{(peak - base) / 2**20:.0f} MiB")
    row("rank() wall time", f"{elapsed:.1f} s")


def bench_uncertainty(n: int) -> None:
    print(f"\nuncertainty ordering of a {n:,} pool through rank() (median of 5)", flush=True)
    rng = np.random.default_rng(0)
    for c in (10, 1000):
        p = rng.dirichlet(np.ones(c), size=n).astype(np.float32)
        for name in ("margin", "entropy", "least_confidence"):
            t = timed(lambda: rank(name, k=20, probs=p), repeat=5)
            verdict = "ok" if t <= 0.2 else "MISSED"
            row(f"{name}, c={c}", f"{t * 1e3:.0f} ms", "<= 200 ms", verdict)


def bench_others(n: int, d: int, c: int, k: int) -> None:
    print(f"\nother strategies on {n:,} x {d}, c={c}, k={k}, no labels (one run)", flush=True)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, d), dtype=np.float32)
    p = rng.dirichlet(np.ones(c) * 0.3, size=n).astype(np.float32)
    for name in ("random", "kmeans", "typiclust", "badge", "cluster_margin"):
        t0 = time.perf_counter()
        rank(name, k=k, probs=p, embeddings=x, seed=0)
        row(f"rank('{name}')", f"{time.perf_counter() - t0:.2f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke test")
    ap.add_argument(
        "--only", default="kcenter,memory,uncertainty,others", help="comma-separated sections"
    )
    ap.add_argument("--memory-child", nargs=4, type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.memory_child:
        _memory_child(*args.memory_child)
        return

    print(f"numpy {np.__version__}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}")
    sizes = {  # (full, --quick)
        "kcenter": ((100_000, 512, 1_000, 50), (20_000, 128, 200, 30)),
        "memory": ((1_000_000, 512, 20, 200), (100_000, 128, 10, 100)),
        "uncertainty": ((100_000,), (20_000,)),
        "others": ((100_000, 512, 10, 100), (5_000, 64, 10, 20)),
    }
    benches = {
        "kcenter": bench_kcenter,
        "memory": bench_memory,
        "uncertainty": bench_uncertainty,
        "others": bench_others,
    }
    for name in args.only.split(","):
        benches[name](*sizes[name][args.quick])
    print(f"\nload average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
