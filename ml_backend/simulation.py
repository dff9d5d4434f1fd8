"""Offline simulation: replay the active-learning loop on images that already have labels.

Why: users decide whether active learning pays, and with which strategy, before they spend
annotators' time. The simulation runs the live loop's own parts: `model.backbone` and the
embedding cache (`model.embeddings`), `model.training.fit` and `model.head.predict_proba` for the
head, `sampling.rank` for selection, `model.evaluation.evaluate` for the metrics.

Per repeat, a stratified test split is set aside once and never offered for labelling. Per
strategy, the loop labels a seed batch chosen without a model, then repeatedly trains on the
labelled images, evaluates on the test split, and labels the first `batch` images `rank` serves.

Cold start: `rank` is called with `probs=None` for the seed batch. `auto` then resolves to its
cold-start method (typiclust, or kcenter past typiclust's cluster cap); `random`, `kcenter`,
`typiclust` and `kmeans` rank from embeddings alone. Strategies that need a model (`margin`,
`entropy`, `least_confidence`, `bald`, `badge`, `cluster_margin`) make `rank` raise ValueError
without probabilities; their seed batch is then drawn by `random`, as the live loop would serve
a project without a model. The `selected_by` column of results.csv says which one chose each batch.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from sklearn.model_selection import train_test_split
from tqdm import tqdm

from ml_backend.priorities import STOCHASTIC_STRATEGIES
from model.evaluation import evaluate
from model.head import predict_proba
from model.training import TrainConfig, assign_roles, fit
from sampling import STRATEGIES, rank

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
DEFAULT_STRATEGIES = ("auto", "margin", "entropy", "kcenter", "random")
THRESHOLDS = (0.90, 0.95, 0.99)
MC_PASSES = 10  # MC-dropout passes for stochastic strategies, as the MC_PASSES setting's default
DEFAULT_ROUNDS = 20  # default budget: the seed batch plus this many batches
CSV_COLUMNS = (
    "strategy", "repeat", "round", "n_labels", "accuracy", "macro_f1", "full_accuracy",
    "selected_by",
)  # fmt: skip


@dataclass(frozen=True)
class SimConfig:
    """What to simulate; sizes count images of the training split."""

    strategies: tuple[str, ...] = DEFAULT_STRATEGIES
    seed_size: int = 20
    batch: int = 20
    budget: int | None = None  # None: seed_size + DEFAULT_ROUNDS batches, capped at the split
    repeats: int = 3
    test_fraction: float = 0.2
    seed: int = 0


@dataclass
class Result:
    """Everything the simulation measured, also written to OUT."""

    rows: list[dict]
    summary: dict
    files: list[Path]  # the images used, index = position in every index array below
    labels: np.ndarray  # class index per image
    classes: list[str]
    test: list[np.ndarray]  # per repeat: indices of the test split
    labelled: dict[tuple[str, int], np.ndarray] = field(default_factory=dict)  # in label order
    skipped: dict[str, str] = field(default_factory=dict)  # unreadable image -> error


# --- the folder ------------------------------------------------------------------------


def scan_folder(root: Path) -> tuple[list[Path], np.ndarray, list[str]]:
    """Images under one subfolder per class, sorted so indices are stable between runs."""
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"{root} is not a folder")
    classes, files, labels = [], [], []
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        found = sorted(
            p for p in sub.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
        )
        if found:
            labels += [len(classes)] * len(found)
            classes.append(sub.name)
            files += found
    if not files:
        raise ValueError(
            f"{root} holds no images: expected one subfolder per class, e.g. {root}/cat/1.jpg"
        )
    if len(classes) < 2:
        raise ValueError(f"{root} has a single class ({classes[0]}); at least two are needed")
    return files, np.asarray(labels, dtype=np.int64), classes


def split_sizes(n: int, test_fraction: float) -> tuple[int, int]:
    """(train, test) sizes of a split of `n` images, as `train_test_split` computes them."""
    n_test = math.ceil(test_fraction * n)
    return n - n_test, n_test


def check_sizes(s: SimConfig, labels: np.ndarray, classes: list[str]) -> int:
    """Refuse settings the data cannot satisfy, in one line each; returns the budget."""
    if not s.strategies:
        raise ValueError("no strategies given")
    unknown = [name for name in s.strategies if name not in STRATEGIES]
    if unknown:
        raise ValueError(f"unknown strategy {unknown[0]!r}; valid: {', '.join(STRATEGIES)}")
    if not 0 < s.test_fraction < 1:
        raise ValueError(f"test fraction must be between 0 and 1, got {s.test_fraction}")
    for name, value in (("seed size", s.seed_size), ("batch", s.batch), ("repeats", s.repeats)):
        if value < 1:
            raise ValueError(f"{name} must be at least 1, got {value}")
    counts = np.bincount(labels, minlength=len(classes))
    if counts.min() < 2:
        raise ValueError(
            f"class {classes[int(counts.argmin())]!r} has {counts.min()} image(s); a stratified "
            f"test split needs at least 2 per class"
        )
    n_train, n_test = split_sizes(len(labels), s.test_fraction)
    if min(n_train, n_test) < len(classes):
        raise ValueError(
            f"{len(labels)} images split {n_train}/{n_test} (train/test) cannot hold all "
            f"{len(classes)} classes on both sides; change the test fraction or add images"
        )
    budget = s.budget
    if budget is None:
        budget = min(n_train, s.seed_size + DEFAULT_ROUNDS * s.batch)
    if s.seed_size > n_train:
        raise ValueError(f"seed size {s.seed_size} exceeds the training split ({n_train} images)")
    if budget > n_train:
        raise ValueError(f"budget {budget} exceeds the training split ({n_train} images)")
    if budget < s.seed_size:
        raise ValueError(f"budget {budget} is smaller than the seed size {s.seed_size}")
    return budget


def schedule(seed_size: int, batch: int, budget: int) -> list[int]:
    """Labels after each round: the seed batch, then `batch` more each round, ending at budget."""
    sizes = list(range(seed_size, budget + 1, batch))
    return sizes if sizes[-1] == budget else [*sizes, budget]


# --- embeddings ------------------------------------------------------------------------


def read_file(path: str) -> bytes:
    return Path(path).read_bytes()


def folder_key(root: Path) -> int:
    """A stable per-folder id for the cache file, so folders sharing one cache don't evict."""
    return int(hashlib.sha256(str(Path(root).resolve()).encode()).hexdigest()[:8], 16)


def embed_folder(
    root: Path,
    files: list[Path],
    backbone,
    cache: Path,
    fetch: Callable[[str], bytes] = read_file,
    progress: bool = True,
) -> tuple[np.ndarray, np.ndarray, dict[str, str]]:
    """Embeddings of the readable files (through the live loop's cache), their indices, errors.

    A file already embedded under the same path is neither read nor decoded again.
    """
    from model.embeddings import EmbeddingStore, embed_tasks

    store = EmbeddingStore(cache, folder_key(root), backbone.fingerprint, backbone.dim)
    try:
        tasks = {i: str(p) for i, p in enumerate(files)}
        vectors, errors = embed_tasks(backbone, store, tasks, fetch, progress=progress)
    finally:
        store.close()
    kept = np.array(sorted(vectors), dtype=np.int64)
    x = np.stack([vectors[i] for i in kept]) if len(kept) else np.zeros((0, backbone.dim))
    return x.astype(np.float32), kept, {tasks[i]: err for i, err in sorted(errors.items())}


# --- the loop --------------------------------------------------------------------------


def train(x: np.ndarray, y: np.ndarray, ids: np.ndarray, classes: list[str], seed: int):
    """A head trained as a live retrain trains one, from scratch (no warm start, no promotion).

    `ids` (image indices) play the task ids: the same images are held out for validation, and
    not trained on, as the live loop would hold out those tasks.
    """
    config = TrainConfig(seed=seed)
    roles = assign_roles(ids.tolist(), [None] * len(ids), fraction=config.holdout, seed=seed,
                         min_labels=config.min_labels)  # fmt: skip
    head, _ = fit(x, y, classes, roles=roles, config=config)
    return head


def score(head, x: np.ndarray, y: np.ndarray, classes: list[str]) -> dict:
    return evaluate(y, predict_proba(head, x).argmax(1), classes)


def select(
    strategy: str, k: int, labeled: np.ndarray, probs, pool: np.ndarray, seed: int
) -> tuple[np.ndarray, str]:
    """The first `k` items `rank` serves and the strategy that chose them.

    Without a model, a strategy that needs probabilities falls back to random (module doc).
    """
    try:
        r = rank(strategy, k=k, labeled=labeled, probs=probs, embeddings=pool, seed=seed)
    except ValueError:
        if probs is not None:
            raise
        r = rank("random", k=k, labeled=labeled, embeddings=pool, seed=seed)
    return r.indices[:k], r.strategy


def run_strategy(
    strategy: str,
    x: np.ndarray,
    y: np.ndarray,
    classes: list[str],
    train_idx: np.ndarray,
    test_idx: np.ndarray,
    sizes: list[int],
    seed: int,
    tick: Callable[[], None] = lambda: None,
) -> tuple[list[dict], np.ndarray]:
    """One learning curve: rows per round and the images labelled, in order (global indices)."""
    pool, y_pool = x[train_idx], y[train_idx]
    labeled = np.zeros(len(train_idx), dtype=bool)
    order: list[np.ndarray] = []
    probs, rows = None, []
    for rnd, n in enumerate(sizes):
        picks, by = select(strategy, n - int(labeled.sum()), labeled, probs, pool, seed)
        labeled[picks] = True
        order.append(picks)
        head = train(pool[labeled], y_pool[labeled], train_idx[labeled], classes, seed)
        m = score(head, x[test_idx], y[test_idx], classes)
        rows.append({"strategy": strategy, "round": rnd, "n_labels": int(labeled.sum()),
                     "accuracy": m["accuracy"], "macro_f1": m["macro_f1"], "selected_by": by})
        if rnd + 1 < len(sizes):
            passes = MC_PASSES if strategy in STOCHASTIC_STRATEGIES else 1
            probs = predict_proba(head, pool, passes=passes, seed=seed)
        tick()
    return rows, train_idx[np.concatenate(order)]


# --- summary, files ----------------------------------------------------------------------


def labels_to_reach(rows: list[dict], target: float) -> int | None:
    """Fewest labels at which the curve reaches `target` accuracy; None if it never does."""
    for row in sorted(rows, key=lambda r: r["n_labels"]):
        if row["accuracy"] >= target - 1e-12:
            return row["n_labels"]
    return None


def median_or_none(values: Sequence[float | None]) -> float | None:
    """Median counting a miss (None) as infinity; None when half or more missed."""
    med = float(np.median([math.inf if v is None else v for v in values]))
    return None if math.isinf(med) or math.isnan(med) else med


def summarise(rows: list[dict], full: list[float], strategies: Sequence[str]) -> dict:
    """Per strategy: labels to reach 90/95/99% of full-data accuracy, and the ratio to random."""
    out: dict[str, dict] = {}
    for name in strategies:
        per = [[r for r in rows if r["strategy"] == name and r["repeat"] == rep]
               for rep in range(len(full))]  # fmt: skip
        reach = {}
        for t in THRESHOLDS:
            needed = [labels_to_reach(curve, t * f) for curve, f in zip(per, full)]
            reach[f"{t:.0%}"] = {"per_repeat": needed, "median": median_or_none(needed)}
        first = [min(c, key=lambda r: r["n_labels"])["accuracy"] for c in per]
        last = [max(c, key=lambda r: r["n_labels"])["accuracy"] for c in per]
        out[name] = {
            "labels_to_reach": reach,
            "seed_batch_accuracy": {"per_repeat": first, "median": float(np.median(first))},
            "final_accuracy": {"per_repeat": last, "median": float(np.median(last))},
        }
    for name, entry in out.items():
        entry["ratio_to_random"] = {
            key: (None if "random" not in out or reach["median"] is None
                  or out["random"]["labels_to_reach"][key]["median"] is None
                  else reach["median"] / out["random"]["labels_to_reach"][key]["median"])
            for key, reach in entry["labels_to_reach"].items()
        }  # fmt: skip
    return out


def write_csv(path: Path, rows: list[dict]) -> None:
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def plot(path: Path, rows: list[dict], full: list[float], title: str) -> None:
    """Mean accuracy per strategy with its min-max band over repeats; dashed: full data.

    `random` is drawn in grey: it is the baseline every other curve is read against.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import PercentFormatter

    repeats = len(full)
    fig, ax = plt.subplots(figsize=(8, 5), dpi=120)
    for name in dict.fromkeys(r["strategy"] for r in rows):
        curve = [r for r in rows if r["strategy"] == name]
        xs = sorted({r["n_labels"] for r in curve})
        acc = [[r["accuracy"] for r in curve if r["n_labels"] == n] for n in xs]
        style = {"color": "0.45", "ls": "-."} if name == "random" else {}
        (line,) = ax.plot(xs, [np.mean(a) for a in acc], lw=1.8, label=name,
                          marker="." if len(xs) <= 40 else None, **style)  # fmt: skip
        ax.fill_between(xs, [min(a) for a in acc], [max(a) for a in acc],
                        color=line.get_color(), alpha=0.15, lw=0)  # fmt: skip
    ax.axhline(float(np.mean(full)), color="black", ls="--", lw=1.2,
               label=f"whole training split ({np.mean(full):.1%})")  # fmt: skip
    band = f"mean of {repeats} repeats, band: min-max" if repeats > 1 else "1 repeat"
    ax.set(title=f"{title}\n{band}", xlabel="labelled images", ylabel="test accuracy")
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Heads are tiny: more threads only contend on each small matrix product (slower)."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def run_repeats(
    x: np.ndarray, labels: np.ndarray, classes: list[str], s: SimConfig, sizes: list[int],
    progress: bool,
) -> tuple[list[dict], list[float], list[np.ndarray], dict[tuple[str, int], np.ndarray]]:
    """Every strategy on every repeat's split: rows, full-data accuracy, test splits, orders."""
    rows: list[dict] = []
    full: list[float] = []
    tests: list[np.ndarray] = []
    labelled: dict[tuple[str, int], np.ndarray] = {}
    total = s.repeats * (1 + len(s.strategies) * len(sizes))
    with tqdm(total=total, desc="simulating", unit="round", disable=not progress) as bar:
        for rep in range(s.repeats):
            seed = s.seed + rep
            train_idx, test_idx = train_test_split(
                np.arange(len(labels)), test_size=s.test_fraction, stratify=labels,
                random_state=seed,
            )  # fmt: skip
            train_idx, test_idx = np.sort(train_idx), np.sort(test_idx)
            tests.append(test_idx)
            head = train(x[train_idx], labels[train_idx], train_idx, classes, seed)
            full.append(score(head, x[test_idx], labels[test_idx], classes)["accuracy"])
            bar.update()
            for name in s.strategies:
                curve, order = run_strategy(name, x, labels, classes, train_idx, test_idx,
                                            sizes, seed, bar.update)  # fmt: skip
                labelled[(name, rep)] = order
                rows += [{**r, "repeat": rep, "full_accuracy": full[-1]} for r in curve]
    return rows, full, tests, labelled


# --- entry point -------------------------------------------------------------------------


def simulate(
    data: Path,
    out: Path,
    config: SimConfig = SimConfig(),
    *,
    backbone: str = "resnet18",
    weights: str = "DEFAULT",
    device: str = "auto",
    cache: Path | None = None,
    fetch: Callable[[str], bytes] = read_file,
    progress: bool = True,
) -> Result:
    """Run every strategy `repeats` times on `data`; write results.csv, summary.json, curve.png.

    Raises ValueError with a one-line message for data or sizes the simulation cannot use.
    """
    from model.backbone import load_backbone

    s = config
    data, out = Path(data), Path(out)
    files, labels, classes = scan_folder(data)
    check_sizes(s, labels, classes)  # before the slow part: embedding
    bb = load_backbone(backbone, weights, device)
    x, kept, skipped = embed_folder(data, files, bb, cache or out / "cache", fetch, progress)
    if skipped:
        first = ", ".join(list(skipped)[:3])
        log.warning("skipped %d unreadable image(s): %s%s", len(skipped), first,
                    ", ..." if len(skipped) > 3 else "")  # fmt: skip
    files, labels = [files[i] for i in kept], labels[kept]
    present = np.unique(labels)
    if len(present) < 2:
        raise ValueError(f"{data}: fewer than two classes have readable images")
    budget = check_sizes(s, labels, classes)
    sizes = schedule(s.seed_size, s.batch, budget)

    with torch_threads(1):
        rows, full, tests, labelled = run_repeats(x, labels, classes, s, sizes, progress)

    summary = {
        "data": str(data),
        "n_images": len(files),
        "n_skipped": len(skipped),
        "classes": classes,
        "n_train": int(len(labels) - len(tests[0])),
        "n_test": len(tests[0]),
        "backbone": bb.name,
        "weights": weights,
        "backbone_fingerprint": bb.fingerprint,
        "settings": {"seed_size": s.seed_size, "batch": s.batch, "budget": budget,
                     "repeats": s.repeats, "test_fraction": s.test_fraction, "seed": s.seed},
        "full_data_accuracy": {"per_repeat": full, "median": float(np.median(full))},
        "strategies": summarise(rows, full, s.strategies),
    }  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "results.csv", rows)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    init = "random init" if weights.lower() == "none" else weights
    title = f"{data.name}: {len(classes)} classes, {len(files)} images, {bb.name} ({init})"
    plot(out / "curve.png", rows, full, title)
    return Result(rows, summary, files, labels, classes, tests, labelled, skipped)


def format_summary(summary: dict) -> str:
    """A small table: labels needed per threshold (median) and the ratio to random."""
    keys = [f"{t:.0%}" for t in THRESHOLDS]
    head = f"{'strategy':<16}{'seed acc':>9}" + "".join(f"{'@' + k:>9}{'/rand':>7}" for k in keys)
    lines = [f"full-data accuracy (median): {summary['full_data_accuracy']['median']:.3f}", head]
    for name, e in summary["strategies"].items():
        cells = ""
        for k in keys:
            n, ratio = e["labels_to_reach"][k]["median"], e["ratio_to_random"][k]
            need = "-" if n is None else f"{n:g}"
            cells += f"{need:>9}{'-' if ratio is None else f'{ratio:.2f}':>7}"
        lines.append(f"{name:<16}{e['seed_batch_accuracy']['median']:>9.3f}{cells}")
    return "\n".join(lines)
