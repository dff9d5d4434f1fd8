"""An annotator in headless Chromium sees what the backend decided: after a retrain, "Label All
Tasks" serves the top-priority task with the model's guess selected, and after Submit the next
one in the backend's order.

The browser is Debian's chromium driven by playwright-core (tests/integration/browser, installed
by `make test` with `npm ci`); Label Studio, Redis and the backend are the integration fixtures.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from redis import Redis

from ml_backend.queue_state import ProjectQueue

from .labelstudio import ADMIN_EMAIL, ADMIN_PASSWORD
from .loop import connect_backend, served_name, wait_for_idle_version

pytestmark = pytest.mark.integration

BROWSER = Path(__file__).parent / "browser"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")


def _require_browser() -> None:
    missing = [what for what, ok in (
        ("node", shutil.which("node")), (CHROMIUM, os.access(CHROMIUM, os.X_OK)),
        ("playwright-core", (BROWSER / "node_modules" / "playwright-core").is_dir()),
    ) if not ok]  # fmt: skip
    if missing:
        pytest.fail(f"missing {', '.join(missing)}: run `make system-deps browser-deps`",
                    pytrace=False)


def _label_stream(label_studio, project: int, out: Path) -> list[dict]:
    """Run the annotator script; what it saw, task by task."""
    args = {"url": label_studio.url, "email": ADMIN_EMAIL, "password": ADMIN_PASSWORD,
            "project": project, "out": str(out)}
    done = subprocess.run(["node", "label_stream.mjs", json.dumps(args)], cwd=BROWSER,
                          capture_output=True, text=True, timeout=300, check=False,
                          env=dict(os.environ, CHROMIUM=CHROMIUM))
    assert done.returncode == 0, f"browser script failed:\n{done.stdout}\n{done.stderr}"
    return json.loads(done.stdout.strip().splitlines()[-1])["served"]


def _label_stream_held(label_studio, project: int, out: Path, redis_url: str) -> list[dict]:
    """`_label_stream` while holding the project's lock: the submit's webhook queues a retrain,
    and the lock keeps it from reordering the queue while the browser asks for the next task."""
    redis = Redis.from_url(redis_url)
    lock = redis.lock(ProjectQueue(redis, project).lock_key, timeout=600)
    assert lock.acquire(blocking_timeout=60)
    try:
        return _label_stream(label_studio, project, out)
    finally:
        lock.release()


def _queue(api, task_ids: list[int], version: str) -> list[tuple[float, int, str]]:
    """(score, task, predicted choice) of `version` for `task_ids`, lowest score first."""
    queue = []
    for task in task_ids:
        (pred,) = [p for p in api.predictions(task) if p["model_version"] == version]
        (choice,) = pred["result"][0]["value"]["choices"]
        queue.append((pred["score"], task, choice))
    return sorted(queue)


def test_label_all_tasks_serves_the_backends_choice_preselected(
    label_studio, backend, ls_project, redis_url, tmp_path
):
    _require_browser()
    api, project = ls_project.api, ls_project.id
    connect_backend(ls_project, backend,
                    title=backend.setup_version(project, ls_project.raw["label_config"]))
    labelled = [t for label in ("red", "green", "blue") for t in ls_project.tasks_of(label)[:2]]
    for task in labelled:
        api.annotate(task, ls_project.truth[task])
    status = wait_for_idle_version(backend, project, len(labelled))
    version = served_name(status)
    assert api.get(f"/api/projects/{project}/")["model_version"] == version

    queue = _queue(api, [t for t in ls_project.task_ids if t not in labelled], version)
    (s1, first, guess), (s2, second, _) = queue[:2]
    assert s1 < s2 < queue[2][0], f"ties make the order ambiguous: {queue[:3]}"

    seen = _label_stream_held(label_studio, project, tmp_path, redis_url)

    print("served:", seen, "\nqueue head:", queue[:3])
    assert [s["task"] for s in seen] == [first, second]
    assert seen[0]["checked"] == [guess]  # the backend's pre-annotation, selected
    assert all(Path(s["screenshot"]).stat().st_size > 10_000 for s in seen)
    # The browser's submit is an annotation with that choice, and the backend trains on it.
    (annotation,) = api.get(f"/api/tasks/{first}/annotations/")
    assert annotation["result"][0]["value"]["choices"] == [guess]
    after = wait_for_idle_version(backend, project, len(labelled) + 1)
    assert after["versions"][-1]["version"] != version


def test_two_questions_arrive_preselected_together(
    label_studio, backend, ls_project, redis_url, tmp_path
):
    """A config with a single-choice and a multiple-choice question: the task "Label All Tasks"
    serves shows the model's answer to both, every predicted tag ticked."""
    from .test_questions import TAGS, TWO_QUESTIONS, _region

    _require_browser()
    api, project = ls_project.api, ls_project.id
    api.patch(f"/api/projects/{project}/", json={"label_config": TWO_QUESTIONS})
    connect_backend(ls_project, backend, title=backend.setup_version(project, TWO_QUESTIONS))
    labelled = [t for label in ("red", "green", "blue") for t in ls_project.tasks_of(label)[:2]]
    for task in labelled:
        truth = ls_project.truth[task]
        api.post(f"/api/tasks/{task}/annotations/", json={"result": [
            _region("colour", (truth,)), _region("tags", TAGS[truth])]})
    status = wait_for_idle_version(backend, project, len(labelled))
    version = served_name(status)

    seen = _label_stream_held(label_studio, project, tmp_path, redis_url)
    first = seen[0]["task"]
    (pred,) = [p for p in api.predictions(first) if p["model_version"] == version]
    said = {r["from_name"]: r["value"]["choices"] for r in pred["result"]}
    print("served:", seen, "\npre-annotation:", said)
    assert set(said) == {"colour", "tags"}, said
    assert sorted(seen[0]["checked"]) == sorted(said["colour"] + said["tags"])
    (annotation,) = api.get(f"/api/tasks/{first}/annotations/")
    assert {r["from_name"]: r["value"]["choices"] for r in annotation["result"]} == said
