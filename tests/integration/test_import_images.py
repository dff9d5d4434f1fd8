"""import-images against a real Label Studio: files served in place, uploads, labels."""

from __future__ import annotations

import shutil

import httpx
import pytest

from ml_backend.importer import import_images, read_sources
from ml_backend.labelstudio import LabelStudioClient
from ml_backend.settings import Settings

from .dataset import CLASSES, LABEL_CONFIG

pytestmark = pytest.mark.integration


@pytest.fixture
def client(label_studio) -> LabelStudioClient:
    ls = LabelStudioClient(Settings(label_studio_url=label_studio.url,
                                    label_studio_api_key=label_studio.token))
    yield ls
    ls.close()


def _project(label_studio) -> int:
    return label_studio.api.post(
        "/api/projects/", json={"title": "import", "label_config": LABEL_CONFIG})["id"]


def _image_ok(label_studio, url: str) -> bool:
    r = httpx.get(label_studio.url + url, headers={"Authorization": f"Token {label_studio.token}"})
    return r.status_code == 200 and r.content[:4] == b"\x89PNG"


def _choice(label_studio, task: dict) -> str | None:
    """The task's one annotation's choice, or None without annotations."""
    annotations = label_studio.api.get(f"/api/tasks/{task['id']}/annotations/")
    (annotation,) = annotations or [None]
    return annotation and annotation["result"][0]["value"]["choices"][0]


def test_class_folders_under_the_document_root_are_imported_with_their_labels(
    label_studio, client, colour_images, tmp_path
):
    images_root, truth = colour_images  # Label Studio's LOCAL_FILES_DOCUMENT_ROOT
    team = images_root / "team-set"
    for rel, label in list(truth.items())[::3]:  # a third of the images, one folder per class
        (team / label).mkdir(parents=True, exist_ok=True)
        shutil.copy(images_root / rel, team / label)
    (team / "purple").mkdir(exist_ok=True)
    shutil.copy(images_root / next(iter(truth)), team / "purple" / "odd.png")
    project = _project(label_studio)

    report = import_images(client, project, read_sources([team]), labels=True,
                           document_root=images_root)

    tasks = label_studio.api.list_tasks(project)
    assert len(tasks) == report.tasks == len(list(team.rglob("*.png")))
    assert report.served_in_place == report.tasks and report.uploaded == 0
    assert report.unknown_labels == {"purple": 1}
    for task in tasks:  # every image is shown by Label Studio, labelled by its folder
        url = task["data"]["image"]
        assert url.startswith("/data/local-files/?d=team-set/"), url
        assert _image_ok(label_studio, url), url
        folder = url.split("/")[-2]
        assert _choice(label_studio, task) == (folder if folder in CLASSES else None), task
    assert [s["path"] for s in label_studio.api.get(
        "/api/storages/localfiles", params={"project": project})] == [str(team)]

    again = import_images(client, project, read_sources([team]), labels=True,
                          document_root=images_root)
    assert (again.tasks, again.already_there) == (0, report.tasks)
    assert len(label_studio.api.list_tasks(project)) == report.tasks


def test_files_outside_the_document_root_are_uploaded(label_studio, client, colour_images,
                                                      tmp_path):
    images_root, truth = colour_images
    rel, label = next(iter(truth.items()))
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    shutil.copy(images_root / rel, outside / "a.png")
    shutil.copy(images_root / rel, outside / "b.png")
    csv = tmp_path / "labels.csv"
    csv.write_text(f"path,label\nelsewhere/a.png,{label}\nelsewhere/b.png,\n")
    project = _project(label_studio)

    report = import_images(client, project, read_sources([csv]), labels=True,
                           document_root=images_root)

    assert (report.uploaded, report.annotations) == (2, 1)
    tasks = {t["id"]: t for t in label_studio.api.list_tasks(project)}
    a, b = (tasks[i] for i in report.task_ids)
    assert a["data"]["image"].startswith(f"/data/upload/{project}/")
    assert a["data"]["image"].endswith("-a.png") and b["data"]["image"].endswith("-b.png")
    assert _image_ok(label_studio, a["data"]["image"])
    assert (_choice(label_studio, a), _choice(label_studio, b)) == (label, None)


TWO_QUESTIONS = (
    '<View><Image name="image" value="$image"/><Choices name="colour" toName="image">'
    + "".join(f'<Choice value="{c}"/>' for c in CLASSES) + "</Choices>"
    '<Choices name="tags" toName="image" choice="multiple"><Choice value="bright"/>'
    '<Choice value="plain"/><Choice value="odd"/></Choices></View>'
)


def test_a_csv_answering_two_questions_becomes_one_annotation_per_image(
        label_studio, client, colour_images, tmp_path):
    """Label Studio accepts the imported annotations and the backend reads them back as the
    answers the CSV gave (several labels of the multiple-choice question included)."""
    from ml_backend.label_config import parse_label_config

    images_root, truth = colour_images
    (rel_a, colour), (rel_b, _) = list(truth.items())[:2]
    shutil.copy(images_root / rel_a, tmp_path / "a.png")
    shutil.copy(images_root / rel_b, tmp_path / "b.png")
    csv = tmp_path / "labels.csv"
    csv.write_text(f"image,colour,tags\na.png,{colour},bright|odd\nb.png,,loud\n")
    project = label_studio.api.post(
        "/api/projects/", json={"title": "import two", "label_config": TWO_QUESTIONS})["id"]

    report = import_images(client, project, read_sources([csv]), labels=True,
                           document_root=images_root)

    assert (report.annotations, report.unknown_answers) == (1, {"tags": {"loud": 1}})
    config = parse_label_config(TWO_QUESTIONS)
    tasks = {t["id"]: t for t in label_studio.api.list_tasks(project)}
    a, b = (label_studio.api.get(f"/api/tasks/{tasks[i]['id']}/annotations/")
            for i in report.task_ids)
    assert len(a) == 1 and b == []
    assert config.answers_of(a[0]["result"]) == {"colour": (colour,), "tags": ("bright", "odd")}
