"""import-images: reading SOURCE (folders, files, CSV) and what reaches Label Studio.

Label Studio is a recording fake here; tests/integration/test_import_images.py imports into a real
one.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ml_backend.__main__ import main
from ml_backend.importer import Item, import_images, local_files_url, read_sources
from tests.images import png_bytes
from tests.unit.fakes import CONFIG


def _png(path: Path, label: str = "red", seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png_bytes(label, seed, size=8))
    return path


class RecordingLS:
    """The calls the importer makes, with Label Studio's answers faked."""

    def __init__(self, existing: list[str] = (), storages: list[str] = (), serves: bool = True):
        self.existing = list(existing)
        self.storages = list(storages)
        self.serves = serves
        self.imported: list[dict] = []
        self.uploaded: list[Path] = []
        self.fetched: list[str] = []

    def label_config(self, project: int) -> str:
        return CONFIG  # Choices "colour" over red, green, blue; Image "img" with $image

    def tasks(self, project: int):
        return [{"id": n, "data": {"image": url}} for n, url in enumerate(self.existing, 1)]

    def local_storage_paths(self, project: int) -> list[str]:
        return list(self.storages)

    def add_local_storage(self, project: int, path: str) -> None:
        self.storages.append(path)

    def upload_files(self, project: int, paths: list[Path]) -> list[str]:
        self.uploaded += paths
        return [f"/data/upload/{project}/{n}-{p.name}" for n, p in enumerate(paths)]

    def import_tasks(self, project: int, tasks: list[dict]) -> list[int]:
        self.imported += tasks
        return list(range(100, 100 + len(tasks)))

    def fetch_image(self, url: str) -> bytes:
        self.fetched.append(url)
        if not self.serves:
            raise RuntimeError("GET answered 404")
        return b"png"


def _labels(task: dict) -> list[str]:
    return [c for a in task.get("annotations", []) for r in a["result"]
            for c in r["value"]["choices"]]


# -- reading SOURCE ---------------------------------------------------------------------------
def test_a_folder_of_class_subfolders_labels_by_folder_and_a_flat_one_does_not(tmp_path):
    _png(tmp_path / "set/red/a.png")
    _png(tmp_path / "set/green/deeper/b.JPG")
    _png(tmp_path / "set/c.png")
    (tmp_path / "set/notes.txt").write_text("not an image")
    _png(tmp_path / "set/.thumbs/x.png")

    items = read_sources([tmp_path / "set"])

    got = {Path(i.source).name: i.label for i in items}
    assert got == {"c.png": None, "b.JPG": "green", "a.png": "red"}
    assert all(Path(i.source).is_absolute() for i in items)


def test_files_and_urls_are_taken_as_given_each_once(tmp_path):
    a = _png(tmp_path / "a.png")
    items = read_sources([str(a), "https://example.com/x.jpg", str(a)])
    assert items == [Item(str(a.resolve())), Item("https://example.com/x.jpg")]


def test_csv_with_a_header_paths_relative_to_the_csv_urls_and_optional_labels(tmp_path):
    _png(tmp_path / "imgs/one.png")
    _png(tmp_path / "imgs/two.png")
    csv = tmp_path / "list.csv"
    csv.write_text("id,Path,Class\n1,imgs/one.png,red\n2,imgs/two.png,\n"
                   "3,https://cdn.example.com/3.png,blue\n\n")

    items = read_sources([csv])

    assert items == [Item(str((tmp_path / "imgs/one.png").resolve()), "red"),
                     Item(str((tmp_path / "imgs/two.png").resolve()), None),
                     Item("https://cdn.example.com/3.png", "blue")]


def test_csv_without_a_header_is_image_then_label(tmp_path):
    csv = tmp_path / "list.csv"
    csv.write_text("https://e.com/a.png,red\nhttps://e.com/b.png,green\n")
    assert [i.label for i in read_sources([csv])] == ["red", "green"]


@pytest.mark.parametrize("content, message", [
    ("name,label\nx,red\n", "names no image column"),
    ("image,label\nmissing.png,red\n", "list.csv:2: missing.png does not exist"),
    ("image,label\n,red\n", "list.csv:2: no image in the row"),
    ("image,label\n", "no images in"),
    ("", "has no rows"),
])
def test_csv_errors_name_the_file_and_line(tmp_path, content, message):
    csv = tmp_path / "list.csv"
    csv.write_text(content)
    with pytest.raises(ValueError, match=message):
        read_sources([csv])


def test_sources_that_are_not_images_are_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="does not exist"):
        read_sources([tmp_path / "nope"])
    with pytest.raises(ValueError, match="no images"):
        read_sources([tmp_path / "empty"])
    with pytest.raises(ValueError, match="neither a folder"):
        read_sources([tmp_path / "notes.txt"])


def test_one_image_with_two_labels_is_an_error(tmp_path):
    csv = tmp_path / "l.csv"
    csv.write_text("https://e.com/a.png,red\nhttps://e.com/a.png,blue\n")
    with pytest.raises(ValueError, match="two labels"):
        read_sources([csv])


# -- importing --------------------------------------------------------------------------------
def test_files_under_the_document_root_are_served_in_place_from_one_new_storage(tmp_path):
    root = tmp_path / "root"
    _png(root / "team/set/red/a.png")
    _png(root / "team/set/blue/b.png")
    items = read_sources([root / "team/set/red", root / "team/set"])  # red/a.png twice
    ls = RecordingLS()

    report = import_images(ls, 1, items, labels=True, document_root=root)

    assert ls.storages == [str(root / "team/set")]  # one storage covering both class folders
    assert [t["data"]["image"] for t in ls.imported] == [
        local_files_url("team/set/red/a.png"), local_files_url("team/set/blue/b.png")]
    assert len(items) == 2
    assert ls.fetched == [local_files_url("team/set/red/a.png")]  # checked before importing
    assert [_labels(t) for t in ls.imported] == [["red"], ["blue"]]
    assert ls.imported[0]["annotations"][0]["result"][0]["from_name"] == "colour"
    assert ls.uploaded == []
    assert (report.tasks, report.served_in_place, report.annotations) == (2, 2, 2)
    assert report.task_ids == [100, 101]


def test_an_existing_storage_is_reused_and_images_already_there_are_skipped(tmp_path):
    root = tmp_path / "root"
    a, b = _png(root / "set/a.png"), _png(root / "set/b.png")
    ls = RecordingLS(existing=[local_files_url("set/a.png")], storages=[str(root / "set")])

    report = import_images(ls, 1, read_sources([a, b]), document_root=root)

    assert ls.storages == [str(root / "set")]
    assert [t["data"]["image"] for t in ls.imported] == [local_files_url("set/b.png")]
    assert report.already_there == 1 and report.storages == []


def test_files_outside_the_document_root_are_uploaded_and_urls_kept(tmp_path):
    root = tmp_path / "root"
    _png(root / "top.png")  # directly in the root: Label Studio allows no storage there
    outside = _png(tmp_path / "elsewhere/x.png")
    items = read_sources([root / "top.png", outside, "https://e.com/u.png"])
    ls = RecordingLS()

    report = import_images(ls, 7, items, document_root=root)

    assert [p.name for p in ls.uploaded] == ["top.png", "x.png"]
    assert [t["data"]["image"] for t in ls.imported] == [
        "/data/upload/7/0-top.png", "/data/upload/7/1-x.png", "https://e.com/u.png"]
    assert (report.uploaded, report.urls, report.served_in_place) == (2, 1, 0)
    assert ls.storages == [] and all("annotations" not in t for t in ls.imported)


def test_labels_outside_the_label_config_are_reported_and_imported_unlabelled(tmp_path):
    csv = tmp_path / "l.csv"
    csv.write_text("url,label\nhttps://e.com/1.png,red\nhttps://e.com/2.png,purple\n"
                   "https://e.com/3.png,purple\nhttps://e.com/4.png,Red\n")
    ls = RecordingLS()

    report = import_images(ls, 1, read_sources([csv]), labels=True)

    assert [_labels(t) for t in ls.imported] == [["red"], [], [], []]
    assert report.unknown_labels == {"purple": 2, "Red": 1}
    assert "'purple' (2)" in "\n".join(report.lines(1))


def test_without_labels_no_annotation_is_created(tmp_path):
    csv = tmp_path / "l.csv"
    csv.write_text("https://e.com/1.png,red\n")
    ls = RecordingLS()
    import_images(ls, 1, read_sources([csv]))
    assert ls.imported == [{"data": {"image": "https://e.com/1.png"}}]


def test_nothing_is_imported_when_label_studio_does_not_serve_the_local_files(tmp_path):
    root = tmp_path / "root"
    ls = RecordingLS(serves=False)
    with pytest.raises(RuntimeError, match="LOCAL_FILES_DOCUMENT_ROOT="):
        import_images(ls, 1, read_sources([_png(root / "set/a.png")]), document_root=root)
    assert ls.imported == []


def test_the_command_fails_in_one_line_on_a_bad_source(tmp_path, capsys):
    assert main(["import-images", "--project", "1", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "does not exist" in err and err.count("\n") == 1


# -- several questions ------------------------------------------------------------------------
class TwoQuestionsLS(RecordingLS):
    def label_config(self, project: int) -> str:
        from tests.unit.fakes import TWO_QUESTIONS

        return TWO_QUESTIONS  # colour: red/green/blue; tags (multiple): warm/cool/leafy


def _answers(task: dict) -> dict:
    return {r["from_name"]: r["value"]["choices"] for a in task.get("annotations", [])
            for r in a["result"]}


def test_a_csv_with_a_column_per_question_answers_each(tmp_path):
    csv = tmp_path / "l.csv"
    csv.write_text("url,colour,tags,notes\n"
                   "https://e.com/1.png,green,cool|leafy,x\n"
                   "https://e.com/2.png,red,,\n"  # tags unanswered
                   "https://e.com/3.png,,warm,\n"  # colour unanswered
                   "https://e.com/4.png,,,\n")
    ls = TwoQuestionsLS()

    report = import_images(ls, 1, read_sources([csv]), labels=True)

    assert [_answers(t) for t in ls.imported] == [
        {"colour": ["green"], "tags": ["cool", "leafy"]}, {"colour": ["red"]}, {"tags": ["warm"]},
        {}]
    assert "annotations" not in ls.imported[3]
    assert all(r["to_name"] == "img" for a in ls.imported[0]["annotations"] for r in a["result"])
    assert report.annotations == 3 and not report.unknown_labels
    assert report.ignored_columns == ["notes"]
    assert "CSV columns that name no question of the label config, ignored: notes." in \
        report.lines(1)


def test_unknown_labels_are_counted_per_question_and_only_that_answer_is_dropped(tmp_path):
    csv = tmp_path / "l.csv"
    csv.write_text("image,colour,tags\n"
                   "https://e.com/1.png,purple,cool\n"
                   "https://e.com/2.png,red,cool|hot\n"  # one unknown label: no tags answer
                   "https://e.com/3.png,red|blue,warm\n"  # two labels for a single choice
                   "https://e.com/4.png,purple,hot\n")
    ls = TwoQuestionsLS()

    report = import_images(ls, 1, read_sources([csv]), labels=True)

    assert [_answers(t) for t in ls.imported] == [
        {"tags": ["cool"]}, {"colour": ["red"]}, {"tags": ["warm"]}, {}]
    assert report.unknown_answers == {"colour": {"purple": 2, "red|blue": 1}, "tags": {"hot": 2}}
    lines = "\n".join(report.lines(1))
    assert "Question 'colour': labels not among its choices, imported without an answer to it: " \
        "'purple' (2), 'red|blue' (1)." in lines
    assert "Question 'tags'" in lines and "'hot' (2)" in lines


def test_a_single_question_csv_naming_the_question_or_label_imports_alike(tmp_path):
    for header in ("image,colour", "image,label", "image,Class,notes"):
        csv = tmp_path / "l.csv"
        csv.write_text(f"{header}\nhttps://e.com/1.png,red\nhttps://e.com/2.png,purple\n")
        ls = RecordingLS()
        report = import_images(ls, 1, read_sources([csv]), labels=True)
        assert [_labels(t) for t in ls.imported] == [["red"], []], header
        assert report.annotations == 1 and report.ignored_columns == []
        assert (report.unknown_labels, report.unknown_answers) in (
            ({"purple": 1}, {}), ({}, {"colour": {"purple": 1}})), header


def test_an_image_listed_twice_with_other_answers_is_an_error(tmp_path):
    csv = tmp_path / "l.csv"
    csv.write_text("image,colour,tags\nhttps://e.com/a.png,red,warm\n"
                   "https://e.com/a.png,red,cool\n")
    with pytest.raises(ValueError, match="listed twice with other answers"):
        read_sources([csv])
