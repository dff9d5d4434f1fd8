"""One training run: split the labelled tasks, fit a head, measure it, and judge it against the
version that serves now."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from model.evaluation import (
    combine,
    evaluate,
    evaluate_multilabel,
    evaluate_question,
    predict_classes,
)
from model.head import (
    EPOCHS,
    WEIGHT_DECAY,
    Ensemble,
    Head,
    QuestionHeads,
    predict_proba,
    train_ensemble,
    train_head,
)
from model.promotion import decide, worse_share, worse_share_questions
from model.questions import Answers, Question, best_thresholds, indicators, matching
from model.questions import decide as answer
from model.versions import ModelVersion

TRAIN, VAL, TEST = "train", "val", "test"
_MARKS = {"val": VAL, "valid": VAL, "validation": VAL, "test": TEST}


@dataclass(frozen=True)
class TrainConfig:
    """Everything that shapes a training run; recorded in each version's meta."""

    seed: int = 0
    hidden: int = 0
    dropout: float = 0.2
    ensemble: int = 0  # 0: one head (MC dropout for stochastic passes); n >= 2: n bootstrap heads
    holdout: float = 0.2  # random held-out fraction when no task is marked `val`
    min_labels: int = 10  # fewer labels than this: nothing is held out
    metric: str = "macro_f1"
    tolerance: float = 0.02
    min_heldout: int = 20  # fewer shared held-out tasks than this: promote without comparing


def _unit_hash(tasks: np.ndarray, seed: int) -> np.ndarray:
    """A fixed pseudo-random number in [0, 1) per task id (splitmix64), independent of order."""
    with np.errstate(over="ignore"):  # splitmix64 relies on wrapping uint64 arithmetic
        z = tasks.astype(np.uint64) + np.uint64(seed) * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def assign_roles(
    tasks: list[int], marks: list[object], *, fraction: float, seed: int, min_labels: int = 10
) -> np.ndarray:
    """`train`, `val` or `test` for each labelled task.

    A task whose split field says `val`/`validation` or `test` keeps that role. When no task is
    marked `val`, a random slice of the unmarked tasks is: the slice is a fixed function of the
    task id, so a task once held out stays held out as labels accumulate and no version ever
    trains on it. Held-out tasks are never trained on.
    """
    roles = np.array([_MARKS.get(str(m).strip().lower(), TRAIN) if m is not None else TRAIN
                      for m in marks], dtype=object)
    if len(tasks) < min_labels or fraction <= 0 or (roles == VAL).any():
        return roles
    free = np.flatnonzero(roles == TRAIN)
    if len(free) < min_labels:
        return roles
    u = _unit_hash(np.asarray(tasks, dtype=np.int64)[free], seed)
    chosen = free[u < fraction]
    if len(chosen) == 0:
        chosen = free[[int(np.argmin(u))]]
    roles[chosen] = VAL
    return roles


@dataclass
class Candidate:
    head: Head | Ensemble
    meta: dict
    tasks: dict[str, list[int]]  # role -> task ids


def fit(
    x: np.ndarray,
    y: np.ndarray,
    classes: list[str],
    *,
    roles: np.ndarray | None = None,
    config: TrainConfig = TrainConfig(),
) -> tuple[Head | Ensemble, dict]:
    """Train a head on the `train` rows and measure it on the `val` (and `test`) rows.

    Every training row is trained on (no early-stopping slice, see `train_head`), and every run
    starts from scratch: warm-starting from the serving head was measured to cost accuracy
    (0.55 vs 0.77 on digits at 220 labels), and a head trains in seconds anyway.
    """
    start = time.perf_counter()
    y = np.asarray(y, dtype=np.int64)
    roles = np.full(len(y), TRAIN, dtype=object) if roles is None else np.asarray(roles)
    train = roles == TRAIN
    if not train.any():
        raise ValueError("every labelled task is held out: nothing left to train on")
    c = config
    xt, yt = x[train], y[train]
    kw = {"hidden": c.hidden, "dropout": c.dropout, "seed": c.seed}
    if c.ensemble >= 2:
        head = train_ensemble(xt, yt, len(classes), c.ensemble, **kw)
    else:
        head, _ = train_head(xt, yt, len(classes), **kw)

    def measure(role: str) -> dict | None:
        rows = roles == role
        if not rows.any():
            return None
        return evaluate(y[rows], predict_proba(head, x[rows]).argmax(1), classes)

    meta = {
        "classes": list(classes),
        "n_labels": len(y),
        "n_train": int(train.sum()),
        "label_counts": {cl: int((y == i).sum()) for i, cl in enumerate(classes)},
        "n_heldout": int((roles == VAL).sum()),
        "n_test": int((roles == TEST).sum()),
        "metrics": measure(VAL),
        "test_metrics": measure(TEST),
        "train": {"epochs": EPOCHS, "weight_decay": WEIGHT_DECAY, **asdict(c)},
        "train_seconds": round(time.perf_counter() - start, 4),
    }
    return head, meta


def train_candidate(
    x: np.ndarray,
    labels: list[str],
    tasks: list[int],
    classes: list[str],
    *,
    marks: list[object] | None = None,
    fingerprint: str | None = None,
    serving: ModelVersion | None = None,
    serving_x: np.ndarray | None = None,
    config: TrainConfig = TrainConfig(),
) -> Candidate:
    """Split, fit, measure and judge a new version against `serving`.

    `x` are the embeddings of `tasks` by the backbone with `fingerprint`. The serving version is
    judged on its own backbone's embeddings: `x` when it was trained on the same backbone,
    else `serving_x` (after fine-tuning); without them it cannot be compared and the new
    version is promoted.
    """
    tasks = [int(t) for t in tasks]
    y = np.array([classes.index(label) for label in labels], dtype=np.int64)
    roles = assign_roles(tasks, marks or [None] * len(tasks), fraction=config.holdout,
                         seed=config.seed, min_labels=config.min_labels)
    head, meta = fit(x, y, classes, roles=roles, config=config)
    by_role = {r: [t for t, role in zip(tasks, roles) if role == r] for r in (TRAIN, VAL, TEST)}
    meta["promotion"] = _verdict(
        serving, fingerprint, x, serving_x, config,
        lambda old_x: judge(head, classes, x, serving, old_x, y, tasks, roles, config))
    return Candidate(head, meta, by_role)


def _verdict(serving: ModelVersion | None, fingerprint: str | None, x: np.ndarray,
             serving_x: np.ndarray | None, config: TrainConfig,
             judge_on: Callable[[np.ndarray], dict]) -> dict:
    """Promote without comparing when nothing serves or the serving version's backbone left no
    embeddings to judge it on; else `judge_on` the serving version's own embeddings."""
    if serving is None:
        return decide(config.metric, None, None, config.tolerance, reason="no version serves yet")
    if fingerprint is None or serving.meta.get("backbone_fingerprint") == fingerprint:
        return judge_on(x)
    if serving_x is None:
        return decide(config.metric, None, None, config.tolerance,
                      reason="the serving version uses another backbone: not comparable")
    return judge_on(serving_x)


def judge(head: Head | Ensemble, classes: list[str], x: np.ndarray, serving: ModelVersion,
          serving_x: np.ndarray, y: np.ndarray, tasks: list[int], roles: np.ndarray,
          config: TrainConfig) -> dict:
    """Promotion decision: the new head vs the serving version on the held-out tasks that
    neither was trained on (a version trained before a task was held out does not count it)."""
    trained_on = set(serving.tasks.get(TRAIN, []))
    rows = np.array([r == VAL and t not in trained_on for t, r in zip(tasks, roles)], dtype=bool)
    n = int(rows.sum())
    if n < config.min_heldout:
        return decide(config.metric, None, None, config.tolerance,
                      reason=f"only {n} held-out tasks to compare on "
                             f"(PROMOTION_MIN_HELDOUT={config.min_heldout})")
    new_pred = predict_classes(head, classes, x[rows], classes)
    old_pred = predict_classes(serving.head, serving.classes, serving_x[rows], classes)
    p_worse = worse_share(y[rows], new_pred, old_pred, classes, config.metric,
                          seed=config.seed)
    return decide(config.metric, evaluate(y[rows], new_pred, classes),
                  evaluate(y[rows], old_pred, classes), config.tolerance, n=n, p_worse=p_worse)


def train_questions(
    x: np.ndarray,
    answers: list[Answers],
    tasks: list[int],
    questions: list[Question],
    *,
    marks: list[object] | None = None,
    fingerprint: str | None = None,
    serving: ModelVersion | None = None,
    serving_x: np.ndarray | None = None,
    config: TrainConfig = TrainConfig(),
) -> Candidate:
    """A candidate version for a label config's `questions` from each task's `answers`.

    One single-choice question (serving nothing else) trains as versions always have: one
    plain head (`train_candidate`), its question's name recorded. Otherwise every question gets
    its own head, trained on the tasks that answer it (an annotation that answers only some
    questions trains only those heads); a question no training task answers yet gets none.
    """
    single = len(questions) == 1 and not questions[0].multiple
    if single and (serving is None or "questions" not in serving.meta
                   or len(serving.questions) == 1 and not serving.questions[0].multiple):
        q = questions[0]
        cand = train_candidate(x, [a[q.name][0] for a in answers], tasks, list(q.classes),
                               marks=marks, fingerprint=fingerprint, serving=serving,
                               serving_x=serving_x, config=config)
        cand.meta["questions"] = [q.as_json()]
        return cand
    start = time.perf_counter()
    tasks = [int(t) for t in tasks]
    roles = assign_roles(tasks, marks or [None] * len(tasks), fraction=config.holdout,
                         seed=config.seed, min_labels=config.min_labels)
    if not (roles == TRAIN).any():
        raise ValueError("every labelled task is held out: nothing left to train on")
    heads, described, metrics, test_metrics, counts = [], [], {}, {}, {}
    for q in questions:
        rows = np.array([q.name in a for a in answers], dtype=bool)
        train = rows & (roles == TRAIN)
        if not train.any():
            continue
        y = _targets(q, [a.get(q.name, ()) for a in answers])
        head = _fit_question(x[train], y[train], q, config)
        val, test = rows & (roles == VAL), rows & (roles == TEST)
        thresholds = None
        if q.multiple:
            thresholds = best_thresholds(y[val], predict_proba(head, x[val])) if val.any() \
                else None
        heads.append(head)
        described.append(q.as_json() | {"thresholds": thresholds})
        metrics[q.name] = _measure(head, q, thresholds, x[val], y[val])
        test_metrics[q.name] = _measure(head, q, thresholds, x[test], y[test])
        counts[q.name] = {c: int((y[rows] == i).sum()) if not q.multiple else int(y[rows, i].sum())
                          for i, c in enumerate(q.classes)}
    head = QuestionHeads(heads)
    meta = {
        "questions": described,
        "n_labels": len(tasks),
        "n_train": int((roles == TRAIN).sum()),
        "label_counts": counts,
        "n_heldout": int((roles == VAL).sum()),
        "n_test": int((roles == TEST).sum()),
        "metrics": combine(metrics),
        "test_metrics": combine(test_metrics) if (roles == TEST).any() else None,
        "train": {"epochs": EPOCHS, "weight_decay": WEIGHT_DECAY, **asdict(config)},
        "train_seconds": round(time.perf_counter() - start, 4),
    }
    by_role = {r: [t for t, role in zip(tasks, roles) if role == r] for r in (TRAIN, VAL, TEST)}
    new = ModelVersion("candidate", head, {"questions": described})
    meta["promotion"] = _verdict(
        serving, fingerprint, x, serving_x, config,
        lambda old_x: judge_questions(new, x, serving, old_x, answers, tasks, roles, questions,
                                      config))
    return Candidate(head, meta, by_role)


def _targets(q: Question, answers: list[tuple[str, ...]]) -> np.ndarray:
    """Class indices [n] (-1 where unanswered) for a single-choice question; 0/1 per label
    [n, L] for a multiple-choice one."""
    if not q.multiple:
        return np.array([q.classes.index(a[0]) if a else -1 for a in answers], dtype=np.int64)
    return np.array([[c in a for c in q.classes] for a in answers], dtype=np.float32).reshape(
        len(answers), len(q.classes))


def _fit_question(x: np.ndarray, y: np.ndarray, q: Question, c: TrainConfig) -> Head | Ensemble:
    kw = {"hidden": c.hidden, "dropout": c.dropout, "seed": c.seed}
    if c.ensemble >= 2:
        return train_ensemble(x, y, len(q.classes), c.ensemble, **kw)
    return train_head(x, y, len(q.classes), **kw)[0]


def _measure(head, q: Question, thresholds, x: np.ndarray, y: np.ndarray) -> dict | None:
    if len(y) == 0:
        return None
    probs = predict_proba(head, x)
    if q.multiple:
        return evaluate_multilabel(y.astype(bool), indicators(q, answer(probs, q, q.classes,
                                                                         thresholds)),
                                   list(q.classes))
    return evaluate(y, probs.argmax(1), list(q.classes))


def judge_questions(new: ModelVersion, x: np.ndarray, serving: ModelVersion,
                    serving_x: np.ndarray, answers: list[Answers], tasks: list[int],
                    roles: np.ndarray, questions: list[Question], config: TrainConfig) -> dict:
    """The promotion decision for a version answering several questions: both versions'
    answers, per question, on the held-out tasks neither was trained on, each question
    measured on the tasks that answer it and the metric averaged over the questions (or taken
    from the one it names)."""
    trained_on = set(serving.tasks.get(TRAIN, []))
    rows = np.array([r == VAL and t not in trained_on for t, r in zip(tasks, roles)], dtype=bool)
    n = int(rows.sum())
    if n < config.min_heldout:
        return decide(config.metric, None, None, config.tolerance,
                      reason=f"only {n} held-out tasks to compare on "
                             f"(PROMOTION_MIN_HELDOUT={config.min_heldout})")
    held = [a for a, r in zip(answers, rows) if r]
    truth, new_said, old_said, answered, new_m, old_m = [], [], [], [], {}, {}
    for q in questions:
        mask = np.array([q.name in a for a in held], dtype=bool)
        t = indicators(q, [a.get(q.name, ()) for a in held])
        said = [_said(v, q, xx[rows]) for v, xx in ((new, x), (serving, serving_x))]
        truth.append(t), new_said.append(said[0]), old_said.append(said[1])
        answered.append(mask)
        if mask.any():
            new_m[q.name], old_m[q.name] = (evaluate_question(q, t[mask], s[mask]) for s in said)
    p_worse = worse_share_questions(truth, new_said, old_said, answered,
                                    [q.name for q in questions], config.metric, seed=config.seed)
    return decide(config.metric, combine(new_m), combine(old_m), config.tolerance, n=n,
                  p_worse=p_worse)


def _said(version: ModelVersion, q: Question, x: np.ndarray) -> np.ndarray:
    """What `version` answers to question `q` on `x`, as 0/1 over `q`'s labels (nothing when it
    has no head for `q`)."""
    mine = matching(version.questions, [q]).get(q.name)
    if mine is None or len(x) == 0:
        return np.zeros((len(x), len(q.classes)), dtype=bool)
    head = version.heads[version.questions.index(mine)]
    return indicators(q, answer(predict_proba(head, x), mine, q.classes,
                                 version.thresholds(mine.name)))
