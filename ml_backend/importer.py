"""`python -m ml_backend import-images`: bring a team's images, and the labels it already has,
into a Label Studio project.

SOURCE is a folder (flat, or one subfolder per class), image files, or a CSV of image paths or
URLs with an optional label column, or with one column per question of the label config
(`image,species,behaviour`; `cat|dog` for several labels of a multiple-choice question; an empty
cell leaves that question unanswered). Files under Label Studio's LOCAL_FILES_DOCUMENT_ROOT are
served by Label Studio in place (a local-files storage authorises them; nothing is copied), other
files are uploaded, URLs are imported as they are. Images already in the project are skipped, so
running it again imports only what is new.
"""

from __future__ import annotations

import csv
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol
from urllib.parse import quote

from ml_backend.answer_table import IMAGE_COLUMNS, split_cell
from ml_backend.label_config import LabelConfig, parse_label_config
from model.images import IMAGE_SUFFIXES, BadImage, decode_image
from model.questions import Answers

LABEL_COLUMNS = ("label", "class", "category", "choice")
UPLOAD_BATCH = 50


@dataclass(frozen=True)
class Item:
    """One image to import: an absolute file path or an http(s) URL, and its label if known.

    `cells` holds a CSV row's labels by column header (labels split at `|`, empty cells left
    out): the answers to the questions those columns name, once the label config is known."""

    source: str
    label: str | None = None
    cells: Answers | None = field(default=None, compare=False)

    @property
    def is_url(self) -> bool:
        return is_url(self.source)


def is_url(text: str) -> bool:
    return text.lower().startswith(("http://", "https://"))


def _is_image(text: str) -> bool:
    return is_url(text) or Path(text).suffix.lower() in IMAGE_SUFFIXES


# -- reading SOURCE ---------------------------------------------------------------------------
def read_sources(sources: Sequence[str | Path]) -> list[Item]:
    """Every image named by `sources`, in order, each once; a ValueError says what is wrong."""
    items: list[Item] = []
    for source in map(str, sources):
        path = Path(source)
        if is_url(source):
            items.append(Item(source))
        elif path.is_dir():
            items += read_folder(path)
        elif path.suffix.lower() == ".csv" and path.is_file():
            items += read_csv(path)
        elif path.is_file() and _is_image(source):
            items.append(Item(str(path.resolve())))
        elif not path.exists():
            raise ValueError(f"{source} does not exist")
        else:
            raise ValueError(f"{source} is neither a folder, an image file nor a .csv file")
    return _unique(items)


def read_folder(root: Path) -> list[Item]:
    """Images directly in `root` have no label; those under `root/<class>/` (at any depth) are
    labelled <class>. Hidden files and folders are left out."""
    items = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if (path.suffix.lower() in IMAGE_SUFFIXES and path.is_file()
                and not any(part.startswith(".") for part in rel.parts)):
            items.append(Item(str(path.resolve()), rel.parts[0] if len(rel.parts) > 1 else None))
    if not items:
        raise ValueError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {root}")
    return items


def read_csv(path: Path) -> list[Item]:
    """Rows of an image path (relative to the CSV's folder) or URL and an optional label.

    The header names the columns (image/path/url/file/filename, label/class/category/choice);
    without a header the first column is the image and the second, if any, the label.
    """
    with path.open(newline="", encoding="utf-8-sig") as fh:
        rows = [(n, row) for n, row in enumerate(csv.reader(fh), 1) if any(c.strip() for c in row)]
    if not rows:
        raise ValueError(f"{path} has no rows")
    first = rows[0][1]
    named: dict[int, str] = {}  # column -> header, for the questions they may answer
    if _is_image(first[0].strip()):
        image_col, label_col = 0, (1 if len(first) > 1 else None)
    else:
        header = [c.strip().lower() for c in first]
        image_col = next((header.index(c) for c in IMAGE_COLUMNS if c in header), None)
        if image_col is None:
            raise ValueError(f"{path}: the header {first} names no image column "
                             f"(one of {', '.join(IMAGE_COLUMNS)})")
        label_col = next((header.index(c) for c in LABEL_COLUMNS if c in header), None)
        named = {i: c.strip() for i, c in enumerate(first) if i != image_col and c.strip()}
        rows = rows[1:]
    items = []
    for line, row in rows:
        cell = row[image_col].strip() if image_col < len(row) else ""
        label = row[label_col].strip() if label_col is not None and label_col < len(row) else ""
        if not cell:
            raise ValueError(f"{path}:{line}: no image in the row")
        if not is_url(cell):
            file = (path.parent / cell).resolve()
            if not file.is_file():
                raise ValueError(f"{path}:{line}: {cell} does not exist")
            cell = str(file)
        cells = {name: labels for i, name in named.items()
                 if (labels := split_cell(row[i] if i < len(row) else ""))}
        items.append(Item(cell, label or None, cells if named else None))
    if not items:
        raise ValueError(f"no images in {path}")
    return items


def _unique(items: Iterable[Item]) -> list[Item]:
    seen: dict[str, Item] = {}
    for item in items:
        known = seen.setdefault(item.source, item)
        if known.label != item.label and item.label is not None:
            if known.label is not None:
                raise ValueError(f"{item.source} is listed with two labels: "
                                 f"{known.label!r} and {item.label!r}")
            seen[item.source] = known = item
        if item.cells and known.cells != item.cells:
            if known.cells:
                raise ValueError(f"{item.source} is listed twice with other answers: "
                                 f"{known.cells} and {item.cells}")
            seen[item.source] = item
    return list(seen.values())


# -- importing ----------------------------------------------------------------------------------
class ImportTarget(Protocol):
    """What the importer asks of Label Studio (`LabelStudioClient`; a fake in unit tests)."""

    def label_config(self, project: int) -> str: ...
    def tasks(self, project: int) -> Iterable[dict]: ...
    def local_storage_paths(self, project: int) -> list[str]: ...
    def add_local_storage(self, project: int, path: str) -> None: ...
    def upload_files(self, project: int, paths: list[Path]) -> list[str]: ...
    def import_tasks(self, project: int, tasks: list[dict]) -> list[int]: ...
    def fetch_image(self, url: str) -> bytes: ...


@dataclass
class ImportReport:
    tasks: int = 0
    served_in_place: int = 0
    uploaded: int = 0
    urls: int = 0
    annotations: int = 0
    already_there: int = 0
    unknown_labels: Counter = field(default_factory=Counter)
    # CSV columns per question: question -> label not among its choices -> rows.
    unknown_answers: dict[str, Counter] = field(default_factory=dict)
    ignored_columns: list[str] = field(default_factory=list)  # name no question of the config
    storages: list[str] = field(default_factory=list)
    task_ids: list[int] = field(default_factory=list)
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # (file, why)

    def lines(self, project: int) -> list[str]:
        out = [(f"Imported {self.tasks} tasks into project {project}: {self.served_in_place} "
                f"served from local files, {self.uploaded} uploaded, {self.urls} by URL; "
                f"{self.annotations} with their label as an annotation.")]
        if self.already_there:
            out.append(f"{self.already_there} images were in the project already: skipped.")
        if self.unreadable:
            file, why = self.unreadable[0]
            more = f" and {len(self.unreadable) - 1} more" if len(self.unreadable) > 1 else ""
            out.append(f"{len(self.unreadable)} files are not images this backend can read, "
                       f"not imported: {file} ({why}){more}.")
        for path in self.storages:
            out.append(f"Added a local-files storage for {path}.")
        if self.unknown_labels:
            listed = ", ".join(f"{k!r} ({n})" for k, n in sorted(self.unknown_labels.items()))
            out.append(f"Labels not in the project's label config, imported without a label: "
                       f"{listed}.")
        for question, counts in sorted(self.unknown_answers.items()):
            listed = ", ".join(f"{k!r} ({n})" for k, n in sorted(counts.items()))
            out.append(f"Question {question!r}: labels not among its choices, imported without "
                       f"an answer to it: {listed}.")
        if self.ignored_columns:
            out.append(f"CSV columns that name no question of the label config, ignored: "
                       f"{', '.join(self.ignored_columns)}.")
        return out


def local_files_url(rel: str) -> str:
    return "/data/local-files/?d=" + quote(rel)


def _under(root: Path | None, file: str) -> Path | None:
    """`file` relative to `root` when it lies in a subfolder of it (Label Studio refuses a
    storage on the document root itself), else None."""
    if root is None:
        return None
    try:
        rel = Path(file).relative_to(root.resolve())
    except ValueError:
        return None
    return rel if len(rel.parts) > 1 else None


def _storage_dirs(root: Path, rels: list[Path], existing: list[str]) -> list[str]:
    """Folders (as Label Studio sees them: under `root` as configured) that, with the existing
    storages, cover every file in `rels`: per top-level folder, the files' deepest common one."""
    covered = [os.path.normpath(p) for p in existing]
    groups: dict[str, list[str]] = {}
    for rel in rels:
        folder = os.path.normpath(root / rel.parent)
        if not any(folder == c or folder.startswith(c + os.sep) for c in covered):
            groups.setdefault(rel.parts[0], []).append(folder)
    return [os.path.commonpath(folders) for folders in groups.values()]


def import_images(ls: ImportTarget, project: int, items: Sequence[Item], *,
                  labels: bool = False, document_root: Path | None = None) -> ImportReport:
    """Import `items` as tasks of `project`; with `labels`, known labels become annotations."""
    config = parse_label_config(ls.label_config(project))
    report = ImportReport()
    items = _readable(items, report)
    present = {str((t.get("data") or {}).get(config.value_key)) for t in ls.tasks(project)}
    urls: dict[int, str] = {}  # index in items -> task data URL
    in_place: dict[int, Path] = {}  # index -> path relative to the document root
    for i, item in enumerate(items):
        rel = None if item.is_url else _under(document_root, item.source)
        if item.is_url:
            urls[i] = item.source
        elif rel is not None:
            in_place[i], urls[i] = rel, local_files_url(rel.as_posix())
    todo = [i for i in range(len(items)) if i not in urls or urls[i] not in present]
    report.already_there = len(items) - len(todo)
    if placed := [i for i in todo if i in in_place]:
        root = Path(os.path.abspath(document_root))
        existing = ls.local_storage_paths(project)
        for folder in _storage_dirs(root, [in_place[i] for i in placed], existing):
            ls.add_local_storage(project, folder)
            report.storages.append(folder)
        _check_served(ls, urls[placed[0]], items[placed[0]].source, root)
    upload = [i for i in todo if i not in urls]
    for start in range(0, len(upload), UPLOAD_BATCH):
        batch = upload[start : start + UPLOAD_BATCH]
        urls.update(zip(batch, ls.upload_files(project, [Path(items[i].source) for i in batch])))
    by_question = labels and _answers_questions(config, items, report)
    tasks = []
    for i in todo:
        task: dict = {"data": {config.value_key: urls[i]}}
        if by_question:
            answers = _known_answers(config, items[i].cells or {}, report)
        else:
            answers = _known_label(config, items[i].label if labels else None, report)
        if answers:
            task["annotations"] = [{"result": config.result(answers)}]
            report.annotations += 1
        tasks.append(task)
    report.task_ids = ls.import_tasks(project, tasks) if tasks else []
    report.tasks, report.served_in_place, report.uploaded = len(tasks), len(placed), len(upload)
    report.urls = len(tasks) - len(placed) - len(upload)
    return report


def _answers_questions(config: LabelConfig, items: Sequence[Item],
                       report: ImportReport) -> bool:
    """Whether the items' CSV columns answer the config's questions (a column names one);
    otherwise their one label column, if any, answers its one single-choice question."""
    headers = list(dict.fromkeys(h for item in items for h in (item.cells or {})))
    names = {q.name for q in config.questions}
    if not names & set(headers):
        return False
    report.ignored_columns = [h for h in headers if h not in names]
    return True


def _known_answers(config: LabelConfig, cells: Answers, report: ImportReport) -> Answers:
    """The answers among `cells` the config can take; a question's labels that are not all
    among its choices (or several for a single-choice question) are counted, not imported."""
    out: Answers = {}
    for q in config.questions:
        said = cells.get(q.name)
        if not said:
            continue
        bad = [x for x in said if x not in q.classes]
        if not q.multiple and len(said) > 1:
            bad = ["|".join(said)]
        for x in bad:
            report.unknown_answers.setdefault(q.name, Counter())[x] += 1
        if not bad:
            out[q.name] = said
    return out


def _known_label(config: LabelConfig, label: str | None, report: ImportReport) -> Answers:
    """A folder's or a label column's label as the answer to the config's one single-choice
    question; counted as unknown when it is no choice of it (or the config asks several)."""
    question = config.single
    if label is None:
        return {}
    if question is None or label not in question.classes:
        report.unknown_labels[label] += 1
        return {}
    return {question.name: (label,)}


def _why_unreadable(item: Item) -> str | None:
    if item.is_url:
        return None  # fetched by whoever opens it; a retrain reports it per task
    try:
        decode_image(Path(item.source).read_bytes())
    except (BadImage, OSError) as exc:
        return str(exc)
    return None


def _readable(items: Sequence[Item], report: ImportReport) -> list[Item]:
    """The items whose files decode (a zero-byte, truncated or bomb file would be a task no
    one can label or train on); the others go to `report.unreadable`."""
    with ThreadPoolExecutor(max(2, min(8, os.cpu_count() or 2))) as pool:
        why = list(pool.map(_why_unreadable, items))
    report.unreadable = [(i.source, w) for i, w in zip(items, why) if w is not None]
    return [i for i, w in zip(items, why) if w is None]


def _check_served(ls: ImportTarget, url: str, file: str, root: Path) -> None:
    """Refuse to import tasks Label Studio cannot show: it serves local files only when its
    document root is the one given here and LOCAL_FILES_SERVING_ENABLED is on."""
    try:
        ls.fetch_image(url)
    except Exception as exc:  # noqa: BLE001 - ImageFetchError, or the network's own
        raise RuntimeError(
            f"Label Studio does not serve {file} as {url} ({exc}); start it with "
            f"LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true and "
            f"LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT={root}, or pass the document root it has"
        ) from None


def run_import(project: int, sources: Sequence[str], *, labels: bool = False,
               document_root: Path | None = None) -> ImportReport:
    """The CLI command: read SOURCE, import through the configured Label Studio, report."""
    from ml_backend.labelstudio import LabelStudioClient
    from ml_backend.settings import get_settings

    settings = get_settings()
    items = read_sources(sources)
    ls = LabelStudioClient(settings)
    try:
        report = import_images(ls, project, items, labels=labels,
                               document_root=document_root
                               or settings.label_studio_local_files_document_root)
    finally:
        ls.close()
    print("\n".join(report.lines(project)))
    if report.annotations:
        print("The next submit in Label Studio retrains on them (or now: "
              f"`python -m ml_backend reconcile --project {project}`).")
    return report
