"""A backend with basic auth and a webhook secret, driven by a real Label Studio.

Label Studio sends the ML backend's basic auth on /health, /setup, /predict and on the
START_TRAINING it posts itself; its project webhook sends only its stored headers, which the
backend sets (reconcile) to the secret. No annotation is lost before that happens.
"""

from __future__ import annotations

import httpx
import pytest

from .dataset import CLASSES
from .labelstudio import LSApiError
from .loop import project_webhooks, retrieve_predictions, served_name, wait_for_idle_version
from .procs import wait_until
from .stack import start_stack

pytestmark = pytest.mark.integration

USER, PASSWORD, SECRET = "label-studio", "backend-pw-7f3a", "webhook-secret-91c2"


@pytest.fixture(scope="module")
def secured(label_studio, redis_url, tmp_path_factory):
    stack = start_stack(label_studio.url, label_studio.token, redis_url,
                        tmp_path_factory.mktemp("secured"), auth=(USER, PASSWORD),
                        BASIC_AUTH_USER=USER, BASIC_AUTH_PASS=PASSWORD, WEBHOOK_SECRET=SECRET,
                        RECONCILE_INTERVAL="0")
    yield stack
    log = stack.log_text()
    print(stack.logs(60))
    stack.stop()
    assert PASSWORD not in log and SECRET not in log  # after the whole module's traffic


def connect(project, stack, password: str | None = PASSWORD):
    body = {"url": stack.url, "project": project.id, "title": "al-backend"}
    if password is not None:
        body |= {"auth_method": "BASIC_AUTH", "basic_auth_user": USER,
                 "basic_auth_pass": password}
    return project.api.post("/api/ml/", json=body)


def test_label_studio_connects_only_with_the_backends_credentials(ls_project, secured):
    for password in (None, "wrong"):
        with pytest.raises(LSApiError, match="authentication"):
            connect(ls_project, secured, password)
    assert ls_project.api.get("/api/ml/", params={"project": ls_project.id}) == []
    ml = connect(ls_project, secured)
    assert ml["auth_method"] == "BASIC_AUTH"
    assert httpx.get(f"{secured.url}/health").status_code == 401


def test_annotations_before_the_webhook_is_secured_are_trained_too(ls_project, secured):
    api = ls_project.api
    connect(ls_project, secured)
    (hook,) = project_webhooks(ls_project)
    assert not hook["headers"]  # as Label Studio creates it
    early = [ls_project.tasks_of(label)[0] for label in CLASSES]
    for task in early:
        api.annotate(task, ls_project.truth[task])  # its webhook is refused: 401
    assert "POST /webhook HTTP/1.1\" 401" in secured.server.tail(400)
    assert secured.status(ls_project.id)["jobs"] == []

    out = secured.cli("reconcile", "--project", str(ls_project.id))
    assert "secured 1 webhook" in out and "retrain queued" in out, out
    (hook,) = project_webhooks(ls_project)
    assert hook["headers"] == {"X-Webhook-Secret": SECRET}

    late = [ls_project.tasks_of(label)[1] for label in CLASSES]
    for task in late:
        api.annotate(task, ls_project.truth[task])  # now accepted
    status = wait_for_idle_version(secured, ls_project.id, n_labels=len(early) + len(late))
    accepted = secured.http.get("/metrics").text
    assert 'al_webhooks_total{outcome="queued"}' in accepted, accepted
    # Label Studio's own /predict call carries the basic auth too.
    retrieve_predictions(ls_project, [ls_project.tasks_of("red")[3]])
    preds = api.predictions(ls_project.tasks_of("red")[3])
    assert any(p["model_version"] == served_name(status) for p in preds), preds


def test_start_training_reaches_the_webhook_with_basic_auth(ls_project, secured):
    ml = connect(ls_project, secured)
    task = ls_project.tasks_of("green")[0]
    ls_project.api.annotate(task, "green")  # refused: the webhook has no secret yet
    ls_project.api.post(f"/api/ml/{ml['id']}/train")  # Label Studio posts START_TRAINING itself
    status = wait_until(
        lambda: (s := secured.status(ls_project.id))["serving_version"] and s["jobs"] and s,
        180, 1.0, "a retrain started by the Start Training button")
    assert [j["reason"] for j in status["jobs"]] == ["START_TRAINING"], status["jobs"]
    assert status["jobs"][0]["status"] == "finished", status["jobs"]
    # Keeping the title equal to the version re-checks the connection, with our credentials.
    assert ls_project.api.get(f"/api/ml/{ml['id']}")["title"] == served_name(status)
