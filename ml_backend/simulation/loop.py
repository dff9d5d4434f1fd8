"""The replay: the live loop's retrain, promotion and ranking, round after round, offline.

Why the live code and not a copy: a simulation is only worth reading if what it measures is
what the backend would do. Each round therefore trains a candidate with
`model.training.train_candidate` (the same held-out split and promotion rule as a live retrain,
under the `TrainConfig` the settings build), serves it only if promoted, and ranks the pool
with the serving version's probabilities (stochastic passes for the strategies `sampling`
names) through `sampling.rank`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace

import numpy as np
import torch
from sklearn.model_selection import train_test_split
from tqdm import tqdm

from model.evaluation import evaluate
from model.head import predict_proba
from model.training import TrainConfig, train_candidate
from model.versions import ModelVersion
from sampling import STOCHASTIC_STRATEGIES, STRATEGIES, rank

DEFAULT_STRATEGIES = ("auto", "margin", "entropy", "kcenter", "random")
DEFAULT_ROUNDS = 20  # default budget: the seed batch plus this many batches


@dataclass(frozen=True)
class SimConfig:
    """What to simulate; sizes count images of the training split.

    `train` and `mc_passes` are the live backend's (`Settings.train_config()`, `MC_PASSES`),
    so the simulated heads are trained, sampled and promoted as live ones are.
    """

    strategies: tuple[str, ...] = DEFAULT_STRATEGIES
    seed_size: int = 20
    batch: int = 20
    budget: int | None = None  # None: seed_size + DEFAULT_ROUNDS batches, capped at the split
    repeats: int = 3
    test_fraction: float = 0.2
    seed: int = 0
    train: TrainConfig = TrainConfig()
    mc_passes: int = 10
    # Several questions or a multiple-choice one: LABEL_UNCERTAINTY, LABEL_AGGREGATE and
    # QUESTION_WEIGHTS (as name, weight pairs), how the live priority combines the heads.
    label_uncertainty: str = "margin"
    label_aggregate: str = "mean"
    question_weights: tuple[tuple[str, float], ...] = ()


def split_sizes(n: int, test_fraction: float) -> tuple[int, int]:
    """(train, test) sizes of a split of `n` images, as `train_test_split` computes them."""
    n_test = math.ceil(test_fraction * n)
    return n - n_test, n_test


def check_settings(s: SimConfig) -> None:
    """Refuse settings no data can satisfy, in one line each."""
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


def check_sizes(s: SimConfig, labels: np.ndarray, classes: list[str]) -> int:
    """Refuse settings the data cannot satisfy, in one line each; returns the budget."""
    check_settings(s)
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
    return check_budget(s, n_train)


def check_budget(s: SimConfig, n_train: int) -> int:
    """The budget (labels at the end), or a one-line ValueError when the split cannot hold it."""
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


def retrain(
    serving: ModelVersion | None, x: np.ndarray, y: np.ndarray, ids: np.ndarray,
    classes: list[str], config: TrainConfig, name: str,
) -> tuple[ModelVersion | None, dict]:
    """One live retrain: the version that serves afterwards, and the promotion verdict.

    `ids` (image indices) play the task ids, so the same images are held out for validation
    (and never trained on) as the live loop would hold out those tasks.
    """
    cand = train_candidate(x, [classes[i] for i in y], ids.tolist(), classes, serving=serving,
                           config=config)  # fmt: skip
    verdict = cand.meta["promotion"]
    if not verdict["promoted"]:
        return serving, verdict
    version = ModelVersion(name, cand.head, cand.meta)
    version.tasks = cand.tasks  # what the live store reads back from tasks.json
    return version, verdict


def score(version: ModelVersion, x: np.ndarray, y: np.ndarray, classes: list[str]) -> dict:
    return evaluate(y, predict_proba(version.head, x).argmax(1), classes)


def select(
    strategy: str, k: int, labeled: np.ndarray, probs, pool: np.ndarray, seed: int
) -> tuple[np.ndarray, str]:
    """The first `k` items `rank` serves and the strategy that chose them.

    Without a model, a strategy that needs probabilities falls back to random, as the live
    loop serves a project without a model.
    """
    try:
        r = rank(strategy, k=k, labeled=labeled, probs=probs, embeddings=pool, seed=seed)
    except ValueError:
        if probs is not None:
            raise
        r = rank("random", k=k, labeled=labeled, embeddings=pool, seed=seed)
    return r.indices[:k], r.strategy


def passes_for(strategy: str, s: SimConfig) -> int:
    """Stochastic passes the live loop computes for `strategy` (sampling's registry says)."""
    return s.mc_passes if strategy in STOCHASTIC_STRATEGIES else 1


def run_strategy(
    strategy: str, x: np.ndarray, y: np.ndarray, classes: list[str], split: tuple,
    sizes: list[int], s: SimConfig, seed: int, tick: Callable[[], None] = lambda: None,
) -> tuple[list[dict], np.ndarray]:
    """One learning curve: rows per round and the images labelled, in order (global indices).

    The serving version is what each row measures: a candidate the promotion rule refuses
    leaves the previous version serving, and ranking, as in the live loop.
    """
    train_idx, test_idx = split
    config = replace(s.train, seed=seed)
    pool, y_pool = x[train_idx], y[train_idx]
    labeled = np.zeros(len(train_idx), dtype=bool)
    order: list[np.ndarray] = []
    serving, probs, rows = None, None, []
    for rnd, n in enumerate(sizes):
        picks, by = select(strategy, n - int(labeled.sum()), labeled, probs, pool, seed)
        labeled[picks] = True
        order.append(picks)
        serving, verdict = retrain(serving, pool[labeled], y_pool[labeled], train_idx[labeled],
                                   classes, config, f"v{rnd + 1}")  # fmt: skip
        m = score(serving, x[test_idx], y[test_idx], classes)
        rows.append({"strategy": strategy, "round": rnd, "n_labels": int(labeled.sum()),
                     "accuracy": m["accuracy"], "macro_f1": m["macro_f1"], "selected_by": by,
                     "promoted": verdict["promoted"], "serving": serving.name})  # fmt: skip
        if rnd + 1 < len(sizes):
            probs = predict_proba(serving.head, pool, passes=passes_for(strategy, s), seed=seed)
        tick()
    return rows, train_idx[np.concatenate(order)]


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Heads are tiny: more threads only contend on each small matrix product (slower)."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclass
class Replay:
    """What the repeats measured: rows, full-data metrics, test splits, label orders."""

    rows: list[dict]
    full: list[dict]  # per repeat: metrics of a version trained on the whole training split
    tests: list[np.ndarray]
    labelled: dict[tuple[str, int], np.ndarray]


def run_repeats(
    x: np.ndarray, labels: np.ndarray, classes: list[str], s: SimConfig, sizes: list[int],
    progress: bool,
) -> Replay:
    """Every strategy on every repeat's split (a stratified test split, never labelled)."""
    out = Replay([], [], [], {})
    total = s.repeats * (1 + len(s.strategies) * len(sizes))
    with tqdm(total=total, desc="simulating", unit="round", disable=not progress) as bar:
        for rep in range(s.repeats):
            seed = s.seed + rep
            train_idx, test_idx = train_test_split(
                np.arange(len(labels)), test_size=s.test_fraction, stratify=labels,
                random_state=seed,
            )  # fmt: skip
            split = np.sort(train_idx), np.sort(test_idx)
            out.tests.append(split[1])
            full, _ = retrain(None, x[split[0]], labels[split[0]], split[0], classes,
                              replace(s.train, seed=seed), "full")  # fmt: skip
            out.full.append(score(full, x[split[1]], labels[split[1]], classes))
            bar.update()
            for name in s.strategies:
                curve, order = run_strategy(name, x, labels, classes, split, sizes, s, seed,
                                            bar.update)  # fmt: skip
                out.labelled[(name, rep)] = order
                out.rows += [{**r, "repeat": rep, "full_accuracy": out.full[-1]["accuracy"],
                              "full_macro_f1": out.full[-1]["macro_f1"]} for r in curve]
    return out
