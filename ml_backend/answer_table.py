"""CSV files that answer several questions about each image (`import-images`, `simulate`).

The header names the image column (image/path/url/file/filename) and one column per question
(`image,species,behaviour`). A cell holds one label, several joined by `|` for a
multiple-choice question (`cat|dog`), or nothing: the image does not answer that question.
Why one format for both commands: a team's export imported into Label Studio is the same file a
simulation replays.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from model.questions import Answers, Question

IMAGE_COLUMNS = ("image", "path", "url", "file", "filename")
SEPARATOR = "|"


def split_cell(cell: str) -> tuple[str, ...]:
    """The labels of one cell, in order, each once (`cat|dog` -> ('cat', 'dog'))."""
    return tuple(dict.fromkeys(p.strip() for p in cell.split(SEPARATOR) if p.strip()))


def read_rows(path: Path) -> list[tuple[int, list[str]]]:
    """(line number, cells) of every non-blank row of a CSV file."""
    with Path(path).open(newline="", encoding="utf-8-sig") as fh:
        rows = [(n, row) for n, row in enumerate(csv.reader(fh), 1) if any(c.strip() for c in row)]
    if not rows:
        raise ValueError(f"{path} has no rows")
    return rows


def image_column(path: Path, header: list[str]) -> int:
    """Index of the image column the header names, or a ValueError saying which names count."""
    lower = [c.strip().lower() for c in header]
    col = next((lower.index(c) for c in IMAGE_COLUMNS if c in lower), None)
    if col is None:
        raise ValueError(f"{path}: the header {header} names no image column "
                         f"(one of {', '.join(IMAGE_COLUMNS)})")
    return col


@dataclass
class AnswerTable:
    """A CSV of local images and their answers, as a simulation replays it."""

    files: list[Path]  # absolute, in the file's order
    answers: list[Answers]  # per file: question -> labels (unanswered questions absent)
    questions: list[Question]  # one per question column, classes sorted


def read_table(path: Path, multiple: tuple[str, ...] | list[str] = ()) -> AnswerTable:
    """Read a CSV of image files (relative to its folder) with one column per question.

    A question is multiple-choice when `multiple` names it or any of its cells holds several
    labels; its classes are the labels its column uses. ValueError says what is wrong, with the
    line."""
    path = Path(path)
    rows = read_rows(path)
    header = [c.strip() for c in rows[0][1]]
    col = image_column(path, header)
    names = {i: h for i, h in enumerate(header) if i != col and h}
    if not names:
        raise ValueError(f"{path}: the header {header} names no question column next to the "
                         "image column (e.g. image,species,behaviour)")
    if len(set(names.values())) != len(names):
        raise ValueError(f"{path}: question columns must have distinct names, got {header}")
    unknown = [m for m in multiple if m not in names.values()]
    if unknown:
        raise ValueError(f"{path}: no question column {unknown[0]!r} (columns: "
                         f"{', '.join(names.values())})")
    files, answers, seen = [], [], set()
    for line, row in rows[1:]:
        cell = row[col].strip() if col < len(row) else ""
        if not cell:
            raise ValueError(f"{path}:{line}: no image in the row")
        file = (path.parent / cell).resolve()
        if not file.is_file():
            raise ValueError(f"{path}:{line}: {cell} does not exist")
        if file in seen:
            raise ValueError(f"{path}:{line}: {cell} is listed twice")
        seen.add(file)
        files.append(file)
        answers.append({name: labels for i, name in names.items()
                        if (labels := split_cell(row[i] if i < len(row) else ""))})
    if not files:
        raise ValueError(f"{path} lists no images under its header")
    questions = []
    for name in names.values():
        said = [a[name] for a in answers if name in a]
        many = name in multiple or any(len(s) > 1 for s in said)
        classes = tuple(sorted({c for s in said for c in s}))
        if len(classes) < (1 if many else 2):
            raise ValueError(f"{path}: question {name!r} has {len(classes)} label(s) in its "
                             f"column; a single-choice question needs at least two")
        questions.append(Question(name, classes, many))
    return AnswerTable(files, answers, questions)
