"""Offline simulation on scikit-learn's bundled digits: does active learning pay here?

    .venv/bin/python benchmarks/bench_simulation.py              # 5 repeats (minutes; embeds once)
    .venv/bin/python benchmarks/bench_simulation.py --quick      # 2 repeats, short budget
    .venv/bin/python benchmarks/bench_simulation.py --save-docs  # also refresh docs/simulation-*

The 1797 8x8 digits are written once as 64x64 RGB PNGs, one folder per digit, and run through
`ml_backend.simulation.simulate`, the function `python -m ml_backend simulate` calls, with a
random-init resnet18 (WEIGHTS=none: nothing is downloaded). Goals it reports against:

* `auto` reaches 99% of the full-data accuracy with at most 35% of the labels `random` needs
  (median over repeats);
* `auto`'s first seed batch beats a random seed batch of the same size.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ml_backend.simulation import SimConfig, format_summary, simulate, split_sizes

GOAL_RATIO = 0.35


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


def verdicts(summary: dict) -> list[str]:
    s = summary["strategies"]
    lines = []
    ratio = s.get("auto", {}).get("ratio_to_random", {}).get("99%")
    need = {k: s[k]["labels_to_reach"]["99%"]["median"] for k in ("auto", "random") if k in s}
    met = ratio is not None and ratio <= GOAL_RATIO
    lines.append(
        f"auto reaches 99% of full-data accuracy with {need.get('auto')} labels vs random "
        f"{need.get('random')}: ratio {'-' if ratio is None else f'{ratio:.2f}'} "
        f"(goal <= {GOAL_RATIO}) -> {'MET' if met else 'NOT MET'}"
    )
    if "auto" in s and "random" in s:
        auto = np.array(s["auto"]["seed_batch_accuracy"]["per_repeat"])
        rand = np.array(s["random"]["seed_batch_accuracy"]["per_repeat"])
        wins = int((auto > rand).sum())
        lines.append(
            f"seed batch ({summary['settings']['seed_size']} labels): auto {np.median(auto):.3f} "
            f"vs random {np.median(rand):.3f} (median), auto ahead in {wins}/{len(auto)} repeats"
            f" -> {'MET' if np.median(auto) > np.median(rand) else 'NOT MET'}"
        )
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", type=Path, default=ROOT / "data" / "bench-simulation")
    ap.add_argument("--out", type=Path, default=None, help="default: WORK/out")
    ap.add_argument("--backbone", default="resnet18")
    ap.add_argument("--size", type=int, default=64, help="side of the exported PNGs")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--seed-size", type=int, default=20)
    ap.add_argument("--batch", type=int, default=20)
    ap.add_argument("--budget", type=int, default=1000,
                    help="labels at the end; 0: the whole training split (1437, twice as slow)")
    ap.add_argument("--strategies", default="auto,margin,entropy,kcenter,random")
    ap.add_argument("--quick", action="store_true", help="2 repeats, budget 200")
    ap.add_argument("--save-docs", action="store_true", help="copy curve and summary to docs/")
    args = ap.parse_args()

    data = export_digits(args.work / f"digits-{args.size}", args.size)
    n_train, _ = split_sizes(len(list(data.glob("*/*.png"))), 0.2)
    config = SimConfig(
        strategies=tuple(args.strategies.split(",")), seed_size=args.seed_size, batch=args.batch,
        budget=200 if args.quick else (args.budget or n_train),
        repeats=2 if args.quick else args.repeats, test_fraction=0.2, seed=0,
    )  # fmt: skip
    out = args.out or args.work / "out"
    start = time.perf_counter()
    result = simulate(data, out, config, backbone=args.backbone, weights="none", device="cpu",
                      cache=args.work / "cache")  # fmt: skip
    seconds = time.perf_counter() - start
    print(f"\ndigits: {len(result.files)} images, {args.size}x{args.size}, {args.backbone} "
          f"random init; {config.repeats} repeats, seed {config.seed_size}, batch {config.batch},"
          f" budget {result.summary['settings']['budget']}; {seconds:.0f} s")  # fmt: skip
    print(format_summary(result.summary))
    print("\n".join(verdicts(result.summary)))
    print(f"files in {out}")
    if args.save_docs:
        docs = ROOT / "docs"
        docs.mkdir(exist_ok=True)
        shutil.copy(out / "curve.png", docs / "simulation-curve.png")
        summary = {**result.summary, "data": "sklearn digits as 64x64 PNGs",
                   "command": "python benchmarks/bench_simulation.py --save-docs",
                   "seconds": round(seconds)}  # fmt: skip
        (docs / "simulation-summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        print(f"saved {docs / 'simulation-curve.png'} and {docs / 'simulation-summary.json'}")


if __name__ == "__main__":
    main()
