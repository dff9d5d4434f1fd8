"""The replay for several questions per image, or multiple-choice ones (a CSV dataset).

As the live loop does for such a label config: each round trains every question's head with
`model.training.train_questions` (the same held-out split, per-label thresholds and promotion
rule), and ranks the pool by the confidence `sampling.questions.combined_confidence` combines
from the serving version's heads, under the same settings (LABEL_UNCERTAINTY,
LABEL_AGGREGATE, QUESTION_WEIGHTS) and with the same fallback for BADGE and DropQuery
(`sampling.questions.rank_inputs`, which `ml_backend.priorities` calls too). One single-choice question ranks by its probabilities, as always.

An image answers the questions its row has a cell for; an annotation that answers only some
trains only those heads, live and here. Each round's row holds the mean over the questions
(what the default promotion metric reads) and every question's own metrics.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np
from sklearn.model_selection import train_test_split
from tqdm import tqdm

from ml_backend.simulation.loop import Replay, SimConfig, passes_for, split_sizes
from model.evaluation import combine, evaluate_question
from model.questions import Answers, Question, indicators
from model.training import train_questions
from model.versions import ModelVersion
from sampling import rank
from sampling.questions import rank_inputs


def question_columns(questions: list[Question]) -> list[str]:
    """The per-question columns of results.csv: `<metric>:<question>`."""
    out = []
    for q in questions:
        out += [f"accuracy:{q.name}", f"macro_f1:{q.name}"]
        if q.multiple:
            out.append(f"micro_f1:{q.name}")
    return out


def retrain(serving: ModelVersion | None, x: np.ndarray, answers: list[Answers],
            ids: np.ndarray, questions: list[Question], config, name: str
            ) -> tuple[ModelVersion | None, dict]:
    """One live retrain of every question's head; the version serving after it, and the
    promotion verdict (`ids`, image indices, play the task ids)."""
    cand = train_questions(x, answers, ids.tolist(), questions, serving=serving, config=config)
    verdict = cand.meta["promotion"]
    if not verdict["promoted"]:
        return serving, verdict
    version = ModelVersion(name, cand.head, cand.meta)
    version.tasks = cand.tasks
    return version, verdict


def score(version: ModelVersion, x: np.ndarray, answers: list[Answers],
          questions: list[Question]) -> dict:
    """`combine`d metrics of what `version` answers on `x`, each question measured on the
    images that answer it (a question it has no head for yet answers nothing)."""
    said = version.answers(version.probabilities(x, questions), questions, len(x))
    per: dict[str, dict] = {}
    for q in questions:
        rows = [i for i, a in enumerate(answers) if q.name in a]
        per[q.name] = evaluate_question(q, indicators(q, [answers[i][q.name] for i in rows]),
                                        indicators(q, [said[i].get(q.name, ()) for i in rows]))
    return combine(per)


def flat(metrics: dict, questions: list[Question]) -> dict:
    """A results.csv row's metric cells: the means over the questions and each question's."""
    out = {"accuracy": metrics["accuracy"] or 0.0, "macro_f1": metrics["macro_f1"] or 0.0}
    for q in questions:
        m = metrics["questions"].get(q.name) or {}
        out[f"accuracy:{q.name}"] = m.get("accuracy")
        out[f"macro_f1:{q.name}"] = m.get("macro_f1")
        if q.multiple:
            out[f"micro_f1:{q.name}"] = m.get("micro_f1")
    return out


def select(strategy: str, k: int, labeled: np.ndarray, by_question: dict[str, np.ndarray],
           questions: list[Question], pool: np.ndarray, s: SimConfig, seed: int
           ) -> tuple[np.ndarray, str]:
    """The first `k` items the live ranking serves, and the strategy that chose them (random
    for a strategy that needs a model while there is none, as live)."""
    name, probs, confidence = rank_inputs(
        strategy, by_question, {q.name: q.multiple for q in questions},
        label_uncertainty=s.label_uncertainty, label_aggregate=s.label_aggregate,
        weights=dict(s.question_weights))
    try:
        r = rank(name, k=k, labeled=labeled, probs=probs, embeddings=pool, seed=seed,
                 confidence=confidence)
    except ValueError:
        if probs is not None or confidence is not None:
            raise
        r = rank("random", k=k, labeled=labeled, embeddings=pool, seed=seed)
    return r.indices[:k], r.strategy


def run_strategy(strategy: str, x: np.ndarray, answers: list[Answers],
                 questions: list[Question], split: tuple, sizes: list[int], s: SimConfig,
                 seed: int, tick: Callable[[], None] = lambda: None
                 ) -> tuple[list[dict], np.ndarray]:
    """One learning curve: rows per round and the images labelled, in order."""
    train_idx, test_idx = split
    config = replace(s.train, seed=seed)
    pool = x[train_idx]
    labeled = np.zeros(len(train_idx), dtype=bool)
    test_answers = [answers[i] for i in test_idx]
    order: list[np.ndarray] = []
    serving, by_question, rows = None, {}, []
    for rnd, n in enumerate(sizes):
        picks, by = select(strategy, n - int(labeled.sum()), labeled, by_question, questions,
                           pool, s, seed)
        labeled[picks] = True
        order.append(picks)
        ids = train_idx[labeled]
        serving, verdict = retrain(serving, pool[labeled], [answers[i] for i in ids], ids,
                                   questions, config, f"v{rnd + 1}")
        m = score(serving, x[test_idx], test_answers, questions)
        rows.append({"strategy": strategy, "round": rnd, "n_labels": int(labeled.sum()),
                     **flat(m, questions), "selected_by": by,
                     "promoted": verdict["promoted"], "serving": serving.name})
        if rnd + 1 < len(sizes):
            by_question = serving.probabilities(pool, questions,
                                                passes=passes_for(strategy, s), seed=seed)
        tick()
    return rows, train_idx[np.concatenate(order)]


def strata(answers: list[Answers], questions: list[Question],
           test_fraction: float) -> np.ndarray | None:
    """What to stratify the test split by: the first single-choice question every image
    answers, with at least two images per class and room for every class on both sides of the
    split; None (a plain random split) otherwise."""
    smaller = min(split_sizes(len(answers), test_fraction))
    for q in questions:
        if q.multiple or not all(q.name in a for a in answers) or len(q.classes) > smaller:
            continue
        y = np.array([q.classes.index(a[q.name][0]) for a in answers])
        if np.bincount(y, minlength=len(q.classes)).min() >= 2:
            return y
    return None


def run_repeats(x: np.ndarray, answers: list[Answers], questions: list[Question],
                s: SimConfig, sizes: list[int], progress: bool) -> Replay:
    """Every strategy on every repeat's split (a test split never labelled)."""
    out = Replay([], [], [], {})
    by = strata(answers, questions, s.test_fraction)
    total = s.repeats * (1 + len(s.strategies) * len(sizes))
    with tqdm(total=total, desc="simulating", unit="round", disable=not progress) as bar:
        for rep in range(s.repeats):
            seed = s.seed + rep
            train_idx, test_idx = train_test_split(
                np.arange(len(answers)), test_size=s.test_fraction, stratify=by,
                random_state=seed)
            split = np.sort(train_idx), np.sort(test_idx)
            out.tests.append(split[1])
            full, _ = retrain(None, x[split[0]], [answers[i] for i in split[0]], split[0],
                              questions, replace(s.train, seed=seed), "full")
            out.full.append(flat(score(full, x[split[1]], [answers[i] for i in split[1]],
                                       questions), questions))
            bar.update()
            for name in s.strategies:
                curve, order = run_strategy(name, x, answers, questions, split, sizes, s, seed,
                                            bar.update)
                out.labelled[(name, rep)] = order
                out.rows += [{**r, "repeat": rep, "full_accuracy": out.full[-1]["accuracy"],
                              "full_macro_f1": out.full[-1]["macro_f1"]} for r in curve]
    return out
