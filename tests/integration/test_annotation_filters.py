"""What a retrain reads from the real Label Studio: every task, and the annotations that count.

Annotated tasks come from Label Studio's export, which names annotators by user id only; the
`ANNOTATORS` filter accepts emails too, so the client looks them up.
"""

from __future__ import annotations

import pytest

from ml_backend.label_config import parse_label_config
from ml_backend.labelstudio import LabelStudioClient
from ml_backend.pool import build_pool
from ml_backend.settings import Settings

from .labelstudio import LSApi, sign_up

pytestmark = pytest.mark.integration


def labels(pool) -> dict[int, str]:
    """The one question's label of each labelled task."""
    return {t: a["label"][0] for t, a in pool.labels.items()}


def test_only_the_listed_annotators_labels_count(label_studio, ls_project):
    api, pid, ids = ls_project.api, ls_project.id, ls_project.task_ids
    other = LSApi(label_studio.url, sign_up(api, "Expert@example.com", "expert-pw-12345"))
    try:
        api.annotate(ids[0], ls_project.truth[ids[0]])  # the admin
        other.annotate(ids[1], ls_project.truth[ids[1]])  # the expert
        api.annotate(ids[2], None, was_cancelled=True)  # skipped
    finally:
        other.close()
    config = parse_label_config(api.get(f"/api/projects/{pid}")["label_config"])

    def pool(annotators: str):
        settings = Settings(label_studio_url=label_studio.url,
                            label_studio_api_key=label_studio.token, annotators=annotators)
        client = LabelStudioClient(settings)
        try:
            tasks = client.labelling_tasks(pid)
        finally:
            client.close()
        assert sorted(t["id"] for t in tasks) == sorted(ids)  # every task, once
        return build_pool(tasks, config, annotators=frozenset(settings.annotators))

    everyone = pool("")
    assert labels(everyone) == {ids[0]: ls_project.truth[ids[0]], ids[1]: ls_project.truth[ids[1]]}
    assert everyone.skipped["skipped"] == 1  # skipped tasks are read too
    expert = pool("expert@example.com")
    assert labels(expert) == {ids[1]: ls_project.truth[ids[1]]}
    assert ids[0] in expert.filtered and ids[0] not in expert.unlabeled
