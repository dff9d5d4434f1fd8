"""How close to full-data accuracy can a few labels get on the simulation's features at all?

    .venv/bin/python benchmarks/bench_headroom.py [--features efficientnet_lite0] [--repeats 5]

`bench_simulation.py` asks whether an acquisition order reaches 99% of full-data accuracy with
far fewer labels than random sampling. Whatever the order, the model then has to learn nearly
everything from those labels. This prints, on the same digits and feature spaces (both
variants, the same test split rule), the test accuracy of random subsets of n labels under a
logistic-regression probe, label spreading over a k-NN graph of all images (Zhou et al. 2004,
scikit-learn's `LabelSpreading`) and self-training (the probe refit on spreading's labels): how
far a model sits from the 99% line when the labels are merely ordinary, and whether using the
unlabelled images closes that gap.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_simulation import VARIANTS, export_digits, long_tail  # noqa: E402
from ml_backend.simulation.folder import scan_folder  # noqa: E402
from sim_features import features  # noqa: E402

SIZES = {"balanced": (100, 200, 300, 400, 500, 700), "long-tail": (60, 100, 150, 200, 300)}


def probe(x: np.ndarray, y: np.ndarray, test: np.ndarray, rows: np.ndarray,
          labels: np.ndarray) -> float:
    """Test accuracy of a logistic regression fit on `labels` of `rows`."""
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(max_iter=2000, C=10).fit(x[rows], labels)
    return float(model.score(x[test], y[test]))


def scores(x: np.ndarray, y: np.ndarray, train: np.ndarray, test: np.ndarray,
           pick: np.ndarray) -> tuple[float, float, float]:
    """Test accuracy of the probe, label spreading and self-training from labels `pick`."""
    from sklearn.semi_supervised import LabelSpreading

    given = np.full(len(y), -1)
    given[pick] = y[pick]
    spread = LabelSpreading(kernel="knn", n_neighbors=15, alpha=0.2, max_iter=100).fit(x, given)
    rest = np.setdiff1d(train, pick)
    guessed = spread.transduction_
    self_trained = probe(x, y, test, np.r_[pick, rest], np.r_[y[pick], guessed[rest]])
    return (probe(x, y, test, pick, y[pick]), float((guessed[test] == y[test]).mean()),
            self_trained)


def main() -> None:
    from sklearn.model_selection import train_test_split

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", type=Path, default=ROOT / "data" / "bench-simulation")
    ap.add_argument("--features", default="efficientnet_lite0")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    data = export_digits(args.work / "digits-64", 64)
    files, labels, _ = scan_folder(data)
    x, _ = features(args.features, data, files, args.work / "cache")
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    for variant in VARIANTS:
        rows = long_tail(np.asarray(labels)) if variant == "long-tail" else np.arange(len(labels))
        xv, y = x[rows], np.asarray(labels)[rows]
        print(f"\n{args.features}, {variant}: {len(y)} images; mean test accuracy over "
              f"{args.repeats} repeats (probe / label spreading / self-training)")
        splits = [train_test_split(np.arange(len(y)), test_size=0.2, stratify=y,
                                   random_state=rep) for rep in range(args.repeats)]
        full = np.mean([probe(xv, y, test, train, y[train]) for train, test in splits])
        print(f"  all {len(splits[0][0])} training labels (probe): {full:.3f}; 99% of it: "
              f"{0.99 * full:.3f}")
        for n in SIZES[variant]:
            got = [scores(xv, y, train, test,
                          np.random.default_rng(rep).choice(train, n, replace=False))
                   for rep, (train, test) in enumerate(splits)]
            mean = np.mean(got, axis=0)
            print(f"  {n:4d} random labels: {mean[0]:.3f} / {mean[1]:.3f} / {mean[2]:.3f}",
                  flush=True)


if __name__ == "__main__":
    main()
