"""Several questions per image, and multiple-choice ones, through the whole loop against a real
Label Studio: seed, label from "Label All Tasks", retrain, pre-annotations that answer every
question, and a queue ordered by the priority that combines the questions' heads."""

from __future__ import annotations

import numpy as np
import pytest

from ml_backend.label_config import parse_label_config
from ml_backend.runtime import Runtime
from ml_backend.settings import Settings
from sampling.questions import combined_confidence

from .backend import backend_env
from .dataset import CLASSES
from .loop import connect_backend, run_seed, served_name, served_order, wait_for_idle_version

pytestmark = pytest.mark.integration

# Tags follow the colour, blue has two: a multiple-choice question the images answer.
TAGS = {"red": ("warm",), "green": ("natural",), "blue": ("cool", "natural")}
TAG_CHOICES = "".join(f'<Choice value="{t}"/>' for t in ("warm", "cool", "natural"))
TWO_QUESTIONS = (
    '<View><Image name="image" value="$image"/>'
    '<Header value="Colour"/><Choices name="colour" toName="image" choice="single-radio">'
    + "".join(f'<Choice value="{c}"/>' for c in CLASSES) + "</Choices>"
    '<Header value="Tags"/><Choices name="tags" toName="image" choice="multiple">'
    + TAG_CHOICES + "</Choices></View>"
)
TAGS_ONLY = ('<View><Image name="image" value="$image"/>'
             '<Choices name="tags" toName="image" choice="multiple">' + TAG_CHOICES +
             "</Choices></View>")


def _region(name: str, labels: tuple[str, ...]) -> dict:
    return {"from_name": name, "to_name": "image", "type": "choices",
            "value": {"choices": list(labels)}}


def _answers(prediction: dict) -> dict[str, tuple[str, ...]]:
    return {r["from_name"]: tuple(r["value"]["choices"]) for r in prediction.get("result") or []}


def _label_from_stream(project, n: int, answer) -> list[int]:
    """Take `n` tasks from the admin's label stream and submit `answer(truth)` for each."""
    done = []
    for i in range(n):
        task = project.api.next_task(project.id)
        assert task is not None and task["id"] not in done
        result = answer(project.truth[task["id"]], i)
        project.api.post(f"/api/tasks/{task['id']}/annotations/", json={"result": result})
        done.append(task["id"])
    return done


def _expected_confidence(project, backend, label_studio, config, tasks: list[int]) -> np.ndarray:
    """The combined confidence of `tasks` under the serving version, computed here from the
    backend's own version and embedding cache as the worker computes it."""
    env = backend_env(label_studio.url, label_studio.token, backend.redis_url, backend.model_dir)
    rt = Runtime(Settings(label_studio_url=env["LABEL_STUDIO_URL"],
                          label_studio_api_key=env["LABEL_STUDIO_API_KEY"],
                          redis_url=env["REDIS_URL"], model_dir=backend.model_dir,
                          backbone=env["BACKBONE"], weights=env["WEIGHTS"]))
    urls = {t: f"/data/local-files/?d={project.image_of[t]}" for t in tasks}
    vectors = rt.store(project.id, rt.backbone_for(project.id)).task_vectors(urls)
    model = rt.serving_model(project.id)
    probs = model.probabilities(np.stack([vectors[t] for t in tasks]), config.questions)
    names = list(probs)
    kinds = {q.name: q.multiple for q in config.questions}
    return combined_confidence([probs[q] for q in names], [kinds[q] for q in names])


def _check_order(project, backend, label_studio, config, labelled: list[int]) -> dict:
    """Label Studio serves the serving version's order, each score the combined confidence."""
    status = wait_for_idle_version(backend, project.id, n_labels=len(labelled))
    version = served_name(status)
    assert project.api.get(f"/api/projects/{project.id}/")["model_version"] == version
    preds = {p["task"]: p for p in project.api.project_predictions(project.id)
             if p["model_version"] == version}
    unlabelled = sorted(set(project.task_ids) - set(labelled))
    assert sorted(preds) == unlabelled
    want = _expected_confidence(project, backend, label_studio, config, unlabelled)
    got = np.array([preds[t]["score"] for t in unlabelled])
    np.testing.assert_allclose(got, want, atol=1e-5)
    # The next task served is the one with the lowest combined confidence, pre-annotated.
    task = project.api.next_task(project.id)
    order = served_order(project, version)
    assert preds[task["id"]]["score"] == preds[order[0]]["score"]
    (pred,) = [p for p in task["predictions"] if p["model_version"] == version]
    return {"version": version, "status": status, "preds": preds, "next": pred}


def test_two_questions_answered_and_ranked_together(ls_project, backend, label_studio):
    api, pid = ls_project.api, ls_project.id
    api.patch(f"/api/projects/{pid}/", json={"label_config": TWO_QUESTIONS})
    config = parse_label_config(TWO_QUESTIONS)
    run_seed(ls_project, backend, label_studio.url, label_studio.token, 6, "kcenter")
    connect_backend(ls_project, backend)

    def answer(truth: str, i: int) -> list[dict]:
        colour = _region("colour", (truth,))
        return [colour] if i % 3 == 2 else [colour, _region("tags", TAGS[truth])]

    labelled = _label_from_stream(ls_project, 9, answer)
    seen = _check_order(ls_project, backend, label_studio, config, labelled)
    meta = seen["status"]["versions"][-1]
    assert meta["metrics"] is None or "questions" in meta["metrics"], meta
    # Every pre-annotation answers the colour; the tags too, wherever a label is likely enough.
    said = [_answers(p) for p in seen["preds"].values()]
    assert all(a.get("colour", ("?",))[0] in CLASSES for a in said), said
    assert all(set(a.get("tags", ())) <= {"warm", "cool", "natural"} for a in said), said
    right = [a.get("colour") == (ls_project.truth[t],) and a.get("tags") == TAGS[ls_project.truth[t]]
             for t, a in zip(seen["preds"], said)]
    assert np.mean(right) >= 0.5, said
    assert set(_answers(seen["next"])) == {"colour", "tags"}, seen["next"]


def test_multiple_choice_question_alone(ls_project, backend, label_studio):
    api, pid = ls_project.api, ls_project.id
    api.patch(f"/api/projects/{pid}/", json={"label_config": TAGS_ONLY})
    config = parse_label_config(TAGS_ONLY)
    connect_backend(ls_project, backend)
    first = [ls_project.tasks_of(c)[0] for c in CLASSES]  # past the cold start: each colour once
    for t in first:
        api.post(f"/api/tasks/{t}/annotations/",
                 json={"result": [_region("tags", TAGS[ls_project.truth[t]])]})
    labelled = first + _label_from_stream(
        ls_project, 5, lambda truth, i: [_region("tags", TAGS[truth])])
    seen = _check_order(ls_project, backend, label_studio, config, labelled)
    said = [_answers(p).get("tags", ()) for p in seen["preds"].values()]
    assert np.mean([s == TAGS[ls_project.truth[t]] for t, s in zip(seen["preds"], said)]) >= 0.5
    assert "blue" not in str(said)
    version = backend.status(pid)["versions"][-1]
    assert version["n_labels"] == len(labelled)
