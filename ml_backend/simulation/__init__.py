"""Offline simulation: replay the active-learning loop on images that already have labels.

Why: users decide whether active learning pays, and with which strategy, before they spend
annotators' time. The simulation runs the live loop's own parts and imports nothing else of
the backend (no server, queue or Label Studio): `model.backbone` and the embedding cache for
features, `model.training.train_candidate` for each retrain (held-out split,
promotion rule, under the settings' `TrainConfig`), `model.head.predict_proba` for the serving
version's (stochastic) probabilities, `sampling.rank` for selection.

Per repeat, a stratified test split is set aside once and never offered for labelling. Per
strategy, the loop labels a seed batch chosen without a model, then repeatedly retrains,
evaluates the version that serves on the test split, and labels the first `batch` images
`rank` serves (`loop.py`). Cold start: `rank` is called with `probs=None` for the seed batch;
strategies that need a model make it raise ValueError, and their seed batch is then drawn by
`random`, as the live loop would serve a project without a model. The `selected_by` column of
results.csv says which strategy chose each batch. `report.py` summarises the curves.

A CSV dataset (`ml_backend.answer_table`: an image column and one column per question, `cat|dog`
for several labels) replays a label config that asks several questions, or multiple-choice
ones, as the live loop runs it (`questions.py`): results.csv then also holds each question's
metrics (`macro_f1:<question>`), and the curves are the means over the questions.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ml_backend.answer_table import AnswerTable, read_table
from ml_backend.simulation import questions as multi
from ml_backend.simulation.folder import embed_folder, read_file, scan_folder
from ml_backend.simulation.loop import (
    SimConfig,
    check_budget,
    check_settings,
    check_sizes,
    run_repeats,
    schedule,
    split_sizes,
    torch_threads,
)
from ml_backend.simulation.report import (
    CSV_COLUMNS,
    format_summary,
    plot,
    question_summary,
    summarise,
    write_csv,
)
from model.questions import Answers, Question

__all__ = ["Result", "SimConfig", "format_summary", "simulate", "simulate_embeddings",
           "simulate_questions"]

log = logging.getLogger(__name__)


@dataclass
class Result:
    """Everything the simulation measured, also written to OUT."""

    rows: list[dict]
    summary: dict
    labels: np.ndarray | list[Answers]  # class index per image (a CSV: its answers)
    classes: list[str] | list[Question]  # (a CSV: its questions)
    test: list[np.ndarray]  # per repeat: indices of the test split
    labelled: dict[tuple[str, int], np.ndarray] = field(default_factory=dict)  # in label order
    files: list[Path] = field(default_factory=list)  # the images used, index = row of x
    skipped: dict[str, str] = field(default_factory=dict)  # unreadable image -> error


def simulate_embeddings(
    x: np.ndarray, labels: np.ndarray, classes: list[str], out: Path,
    config: SimConfig = SimConfig(), *, title: str = "", about: dict | None = None,
    progress: bool = True,
) -> Result:
    """Run every strategy `repeats` times on embeddings `x` with class indices `labels`;
    write results.csv, summary.json (with `about` merged in) and curve.png to `out`.

    Raises ValueError with a one-line message for sizes the data cannot satisfy.
    """
    s, out = config, Path(out)
    if len(np.unique(labels)) < 2:
        raise ValueError("fewer than two classes have readable images")
    budget = check_sizes(s, labels, classes)
    sizes = schedule(s.seed_size, s.batch, budget)
    with torch_threads(1):
        replay = run_repeats(x, labels, classes, s, sizes, progress)
    full = {m: {"per_repeat": [f[m] for f in replay.full],
                "median": float(np.median([f[m] for f in replay.full]))}
            for m in ("accuracy", "macro_f1")}  # fmt: skip
    summary = {
        **(about or {}),
        "classes": classes,
        "class_counts": np.bincount(labels, minlength=len(classes)).tolist(),
        "n_train": int(len(labels) - len(replay.tests[0])),
        "n_test": len(replay.tests[0]),
        "settings": {"seed_size": s.seed_size, "batch": s.batch, "budget": budget,
                     "repeats": s.repeats, "test_fraction": s.test_fraction, "seed": s.seed,
                     "mc_passes": s.mc_passes, "train": asdict(s.train)},
        "full_data": full,
        "strategies": summarise(replay.rows, replay.full, s.strategies),
    }  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "results.csv", replay.rows)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    plot(out / "curve.png", replay.rows, replay.full, title)
    return Result(replay.rows, summary, labels, classes, replay.tests, replay.labelled)


def simulate_questions(
    x: np.ndarray, answers: list[Answers], questions: list[Question], out: Path,
    config: SimConfig = SimConfig(), *, title: str = "", about: dict | None = None,
    progress: bool = True,
) -> Result:
    """`simulate_embeddings` for images that answer several questions, or multiple-choice
    ones: `answers` per image, question -> labels (an unanswered question absent)."""
    s, out = config, Path(out)
    check_settings(s)
    n_train, n_test = split_sizes(len(answers), s.test_fraction)
    if n_test < 1 or n_train < 2:
        raise ValueError(f"{len(answers)} images are too few to split {s.test_fraction:.0%} "
                         "off for testing")
    budget = check_budget(s, n_train)
    sizes = schedule(s.seed_size, s.batch, budget)
    with torch_threads(1):
        replay = multi.run_repeats(x, answers, questions, s, sizes, progress)
    columns = multi.question_columns(questions)
    full = {m: {"per_repeat": [f[m] for f in replay.full],
                "median": float(np.median([f[m] for f in replay.full]))}
            for m in ("accuracy", "macro_f1")}  # fmt: skip
    summary = {
        **(about or {}),
        "questions": [q.as_json() for q in questions],
        "label_counts": {q.name: {c: sum(c in a.get(q.name, ()) for a in answers)
                                  for c in q.classes} for q in questions},
        "n_train": int(len(answers) - len(replay.tests[0])),
        "n_test": len(replay.tests[0]),
        "settings": {"seed_size": s.seed_size, "batch": s.batch, "budget": budget,
                     "repeats": s.repeats, "test_fraction": s.test_fraction, "seed": s.seed,
                     "mc_passes": s.mc_passes, "label_uncertainty": s.label_uncertainty,
                     "label_aggregate": s.label_aggregate,
                     "question_weights": dict(s.question_weights), "train": asdict(s.train)},
        "full_data": full,
        "strategies": summarise(replay.rows, replay.full, s.strategies),
        "per_question": question_summary(replay.rows, replay.full, s.strategies, columns),
    }  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "results.csv", replay.rows, [*CSV_COLUMNS, *columns])
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    plot(out / "curve.png", replay.rows, replay.full,
         f"{title}\nmean over {len(questions)} question(s)" if title else
         f"mean over {len(questions)} question(s)")
    return Result(replay.rows, summary, answers, questions, replay.tests, replay.labelled)


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
    multiple: tuple[str, ...] = (),
) -> Result:
    """Embed the labelled folder `data` (one subfolder per class), then `simulate_embeddings`;
    or the images a CSV `data` lists with their answers (`multiple` names its multiple-choice
    questions beyond those with a `|` in a cell), then `simulate_questions`.

    Raises ValueError with a one-line message for data or sizes the simulation cannot use.
    """
    from model.backbone import load_backbone

    data, out = Path(data), Path(out)
    if data.suffix.lower() == ".csv" and data.is_file():
        table = read_table(data, multiple)
        check_settings(config)  # before the slow part: embedding
        return _simulate_table(data, table, out, config, load_backbone(backbone, weights, device),
                               weights, cache, fetch, progress)
    if multiple:
        raise ValueError("--multiple names question columns of a CSV dataset; "
                         f"{data} is not a .csv file")
    files, labels, classes = scan_folder(data)
    check_sizes(config, labels, classes)  # before the slow part: embedding
    bb = load_backbone(backbone, weights, device)
    x, kept, skipped = embed_folder(data, files, bb, cache or out / "cache", fetch, progress)
    if skipped:
        first = ", ".join(list(skipped)[:3])
        log.warning("skipped %d unreadable image(s): %s%s", len(skipped), first,
                    ", ..." if len(skipped) > 3 else "")  # fmt: skip
    files, labels = [files[i] for i in kept], labels[kept]
    init = "random init" if weights.lower() == "none" else weights
    about = {"data": str(data), "n_images": len(files), "n_skipped": len(skipped),
             "backbone": bb.name, "weights": weights, "backbone_fingerprint": bb.fingerprint}
    title = f"{data.name}: {len(classes)} classes, {len(files)} images, {bb.name} ({init})"
    try:
        result = simulate_embeddings(x, labels, classes, out, config, title=title, about=about,
                                     progress=progress)  # fmt: skip
    except ValueError as e:
        raise ValueError(f"{data}: {e}") from None
    result.files, result.skipped = files, skipped
    return result


def _simulate_table(data: Path, table: AnswerTable, out: Path, config: SimConfig, bb,
                    weights: str, cache: Path | None, fetch: Callable[[str], bytes],
                    progress: bool) -> Result:
    x, kept, skipped = embed_folder(data, table.files, bb, cache or out / "cache", fetch, progress)
    if skipped:
        first = ", ".join(list(skipped)[:3])
        log.warning("skipped %d unreadable image(s): %s%s", len(skipped), first,
                    ", ..." if len(skipped) > 3 else "")  # fmt: skip
    files, answers = [table.files[i] for i in kept], [table.answers[i] for i in kept]
    init = "random init" if weights.lower() == "none" else weights
    about = {"data": str(data), "n_images": len(files), "n_skipped": len(skipped),
             "backbone": bb.name, "weights": weights, "backbone_fingerprint": bb.fingerprint}
    kinds = ", ".join(f"{q.name} ({'multiple' if q.multiple else 'single'})"
                      for q in table.questions)
    title = f"{data.name}: {kinds}; {len(files)} images, {bb.name} ({init})"
    try:
        result = simulate_questions(x, answers, table.questions, out, config, title=title,
                                    about=about, progress=progress)
    except ValueError as e:
        raise ValueError(f"{data}: {e}") from None
    result.files, result.skipped = files, skipped
    return result
