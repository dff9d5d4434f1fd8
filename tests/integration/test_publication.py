"""Publishing against the real Label Studio: only our own prediction versions are ever touched,
and a retrain that fails at any step of publishing ends with its version served after the retry.

One stack for the module (a worker whose faults the test arms one at a time, KEEP_VERSIONS=1 so
every retrain prunes), a new project per test.
"""

from __future__ import annotations

import pytest

from .dataset import CLASSES
from .loop import connect_backend, retrains, wait_for_idle_version
from .procs import wait_until
from .stack import start_stack

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stack(label_studio, redis_url, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("publication")
    fault = workdir / "fault"
    s = start_stack(label_studio.url, label_studio.token, redis_url, workdir, worker=False,
                    KEEP_VERSIONS="1", JOB_RETRIES="1", JOB_RETRY_DELAY="1",
                    RECONCILE_INTERVAL="0")
    s.start_worker("tests.integration.faulty_worker", FAULT_FILE=str(fault))
    s.fault = fault
    yield s
    print(s.logs(80))
    s.stop()


def label(project, n_per_class: int, start: int = 0) -> list[int]:
    done = []
    for name in CLASSES:
        for task in project.tasks_of(name)[start : start + n_per_class]:
            project.api.annotate(task, name)
            done.append(task)
    return done


def versions(project) -> dict[str, int]:
    return project.api.get(f"/api/projects/{project.id}/model-versions/")


def served_after(project, stack, labelled: set[int]) -> str:
    """Wait until the newest version has every label and Label Studio serves it (a retry
    waits in RQ's scheduler meanwhile, which /status does not count as busy); its name."""
    status = wait_for_idle_version(stack, project.id, len(labelled))
    version = "al-" + status["versions"][-1]["version"]

    def live() -> bool:
        titles = [b["title"] for b in project.api.get("/api/ml/", params={"project": project.id})]
        return (project.api.get(f"/api/projects/{project.id}/")["model_version"] == version
                and titles == [version])

    wait_until(live, 120, 1.0, f"Label Studio to serve {version}")
    wait_for_idle_version(stack, project.id, len(labelled))
    assert_serves(project, stack, version, labelled)
    return version


def assert_serves(project, stack, version: str, labelled: set[int]) -> None:
    """Label Studio's stream follows `version`: the project's model version, our backend's
    title and /setup say it, and every unlabelled task has one prediction of it."""
    api = project.api
    settings = api.get(f"/api/projects/{project.id}/")
    assert settings["model_version"] == version, settings["model_version"]
    assert [b["title"] for b in api.get("/api/ml/", params={"project": project.id})] == [version]
    assert stack.setup_version(project.id, settings["label_config"]) == version
    tasks = sorted(p["task"] for p in api.project_predictions(project.id)
                   if p["model_version"] == version)
    assert tasks == sorted(set(project.task_ids) - labelled), tasks


def test_foreign_versions_named_like_ours_are_never_touched(ls_project, stack):
    """A user's imported pre-annotations under `v1`, `untrained` and our own new naming
    survive retrains and pruning; a version someone else holds is never pushed into."""
    api, pid, ids = ls_project.api, ls_project.id, ls_project.task_ids

    def theirs(version: str) -> list[dict]:
        return [{"task": t, "result": [], "score": 0.25, "model_version": version}
                for t in ids[:4]]

    api.post(f"/api/projects/{pid}/import/predictions",
             json=theirs("v1") + theirs("v2") + theirs("untrained"))
    connect_backend(ls_project, stack)
    labelled = set(label(ls_project, 1))
    first = served_after(ls_project, stack, labelled)
    labelled |= set(label(ls_project, 1, start=1))
    newest = served_after(ls_project, stack, labelled)
    stored = versions(ls_project)
    assert first not in stored  # ours, pruned (KEEP_VERSIONS=1)
    assert {v: stored.get(v) for v in ("v1", "v2", "untrained")} == dict.fromkeys(
        ("v1", "v2", "untrained"), 4), stored

    # The next version's name, imported by a user first: our push into it is refused.
    taken = f"al-v{int(newest[4:]) + 1}"
    api.post(f"/api/projects/{pid}/import/predictions", json=theirs(taken))
    before = {p["id"]: p for p in api.project_predictions(pid) if p["model_version"] != newest}
    api.annotate(ls_project.tasks_of("red")[2], "red")
    failed = wait_until(lambda: [j for j in retrains(stack.status(pid))
                                 if j["status"] == "failed"] or None, 120, 1.0,
                        f"the retrain into {taken} to be refused")
    assert "did not create" in failed[0]["error"], failed
    assert api.get(f"/api/projects/{pid}/")["model_version"] == newest
    after = {p["id"]: p for p in api.project_predictions(pid)}
    for key, p in before.items():  # every foreign prediction as it was
        assert after.get(key) == p, (p, after.get(key))
    assert versions(ls_project)[taken] == 4


@pytest.mark.parametrize("step", ["after save", "during push", "before switch", "after switch",
                                  "during pruning"])
def test_a_fault_at_each_step_ends_with_the_newest_version_served(step, ls_project, stack):
    """One annotation, one retrain, one fault in its publication: the job's retry (labels
    unchanged since the version it saved) publishes that version."""
    pid = ls_project.id
    connect_backend(ls_project, stack)
    labelled = set(label(ls_project, 1))
    old = served_after(ls_project, stack, labelled)

    stack.fault.write_text(step)
    task = ls_project.tasks_of("green")[1]
    ls_project.api.annotate(task, "green")
    labelled.add(task)
    newest = served_after(ls_project, stack, labelled)
    assert not stack.fault.exists(), f"the {step} fault never fired"
    assert newest != old
    jobs = retrains(stack.status(pid))
    if step != "during pruning":  # deleting is best effort: that job does not fail
        assert any(j["status"] == "retrying" and "injected fault" in j["error"]
                   for j in jobs), jobs
    assert old not in versions(ls_project)  # pruned, after the fault too
