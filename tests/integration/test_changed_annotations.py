"""A worker reads only the annotations changed since its last read, and still ends up with what
Label Studio holds: new, edited, skipped and deleted annotations (one by one or in bulk), with
no webhook involved, each compared with a full read by a fresh client."""

from __future__ import annotations

import httpx
import pytest

from ml_backend.label_config import parse_label_config
from ml_backend.labelstudio import LabelStudioClient
from ml_backend.pool import build_pool
from ml_backend.settings import Settings
from ml_backend.steps import annotation_counts

pytestmark = pytest.mark.integration


class Reader:
    """A worker's client (a token: it keeps what it read) that counts its full reads."""

    def __init__(self, label_studio, pid: int, **settings):
        self.requests: list[httpx.Request] = []
        self.settings = Settings(label_studio_url=label_studio.url,
                                 label_studio_api_key=label_studio.token, **settings)
        http = httpx.Client(timeout=60, event_hooks={"request": [self.requests.append]})
        self.worker = LabelStudioClient(self.settings, http=http)
        self.pid = pid

    def full_reads(self) -> int:
        """Exports of every annotated task (an export of changed tasks names their ids)."""
        return sum(r.url.path.endswith("/export") and "ids[]" not in r.url.params
                   for r in self.requests)

    def pool(self, client: LabelStudioClient, token):
        info = client.project(self.pid)
        config = parse_label_config(info.label_config)
        tasks = client.labelling_tasks(self.pid, token=token, counts=annotation_counts(info))
        return build_pool(tasks, config, annotators=frozenset(self.settings.annotators))

    def read(self) -> tuple[dict[int, str], dict]:
        """The worker's labels and skip reasons, checked against a full read of a fresh client."""
        got = self.pool(self.worker, token="t")
        fresh = LabelStudioClient(self.settings)
        try:
            truth = self.pool(fresh, token=None)
        finally:
            fresh.close()
        assert (got.labels, got.skipped, got.filtered) == (
            truth.labels, truth.skipped, truth.filtered)
        return {t: a["label"][0] for t, a in got.labels.items()}, dict(got.skipped)


def test_changes_are_read_without_reading_every_annotation(label_studio, ls_project):
    api, pid, ids, truth = ls_project.api, ls_project.id, ls_project.task_ids, ls_project.truth
    other = {"red": "green", "green": "blue", "blue": "red"}
    first = api.annotate(ids[0], truth[ids[0]])
    api.annotate(ids[1], truth[ids[1]])
    reader = Reader(label_studio, pid)
    assert reader.read()[0] == {ids[0]: truth[ids[0]], ids[1]: truth[ids[1]]}
    assert reader.full_reads() == 1  # nothing kept yet

    api.annotate(ids[2], truth[ids[2]])  # new
    assert ids[2] in reader.read()[0]
    api.patch(f"/api/annotations/{first['id']}/", json={"result": [  # edited
        {"from_name": "label", "to_name": "image", "type": "choices",
         "value": {"choices": [other[truth[ids[0]]]]}}]})
    assert reader.read()[0][ids[0]] == other[truth[ids[0]]]
    api.annotate(ids[3], None, was_cancelled=True)  # skipped
    assert reader.read()[1].get("skipped") == 1
    second = api.annotate(ids[0], truth[ids[0]])  # a second annotation, then deleted again
    assert reader.read()[0][ids[0]] == truth[ids[0]]  # the newest one counts
    api.delete(f"/api/annotations/{second['id']}/")
    assert reader.read()[0][ids[0]] == other[truth[ids[0]]]
    assert reader.full_reads() == 1  # all of that read as changes

    gone = api.get(f"/api/tasks/{ids[1]}/annotations/")[0]
    api.delete(f"/api/annotations/{gone['id']}/")  # the task's only annotation
    assert ids[1] not in reader.read()[0]
    api.post("/api/dm/actions", params={"id": "delete_tasks_annotations", "project": pid},
             json={"selectedItems": {"all": False, "included": [ids[2]]}})  # in bulk
    assert ids[2] not in reader.read()[0]
    assert reader.full_reads() <= 3  # counts that disagree make it read everything again


def test_a_full_read_comes_back_periodically(label_studio, ls_project):
    api, pid, ids, truth = ls_project.api, ls_project.id, ls_project.task_ids, ls_project.truth
    api.annotate(ids[0], truth[ids[0]])
    reader = Reader(label_studio, pid, annotations_full_read_every=0)
    reader.read()
    reader.read()
    assert reader.full_reads() == 2


def test_changed_annotations_respect_the_annotators_filter(label_studio, ls_project):
    api, pid, ids, truth = ls_project.api, ls_project.id, ls_project.task_ids, ls_project.truth
    reader = Reader(label_studio, pid, annotators="admin@example.com")
    reader.read()
    api.annotate(ids[0], truth[ids[0]])
    assert reader.read()[0] == {ids[0]: truth[ids[0]]}  # the admin's, named by email
    assert reader.full_reads() == 1
