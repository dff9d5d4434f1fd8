import pytest
from fastapi.testclient import TestClient

from ml_backend.queue_state import ProjectQueue
from ml_backend.server import create_app
from ml_backend.settings import Settings
from ml_backend.steps import retrain
from tests.unit.fakes import CONFIG


@pytest.fixture
def client(settings, runtime):
    return TestClient(create_app(settings, runtime), raise_server_exceptions=False)


@pytest.fixture
def trained(runtime):
    retrain(runtime, 1)
    return runtime


def predict_body(fake_ls, ids, project="1.1700000000"):
    tasks = [t for t in fake_ls.task_list if t["id"] in ids]
    return {"tasks": [{"id": t["id"], "data": t["data"]} for t in tasks],
            "project": project, "label_config": CONFIG, "params": {"context": None}}


def test_health_and_index(client):
    assert client.get("/health").json()["status"] == "UP"
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]


def test_setup_reports_untrained_then_the_serving_version(client, runtime):
    body = {"project": "1.1700000000", "schema": CONFIG, "hostname": "http://localhost:8080",
            "access_token": "x", "extra_params": None}
    assert client.post("/setup", json=body).json() == {"model_version": "al-untrained"}
    retrain(runtime, 1)
    assert client.post("/setup", json=body | {"extra_params": "{}"}).json() == {"model_version": "al-v1"}


def test_setup_refuses_unsupported_configs_with_a_named_reason(client):
    res = client.post("/setup", json={"project": "1.1", "schema": "<View><Text name='t' value='$t'/><Labels name='l' toName='t'><Label value='a'/></Labels></View>"})
    assert res.status_code == 422
    assert "Labels" in res.json()["detail"]


def test_predict_before_any_model_answers_empty_results_served_last(client, fake_ls):
    res = client.post("/predict", json=predict_body(fake_ls, [1, 2]))
    assert res.status_code == 200
    assert res.json()["results"] == [{"result": [], "score": 1.0, "model_version": "al-untrained"}] * 2


def test_predict_answers_each_task_in_order_with_choice_and_score(client, trained, fake_ls):
    ids = [5, 6, 11, 12, 17, 18]  # the unlabelled tasks: two of each colour
    res = client.post("/predict", json=predict_body(fake_ls, ids)).json()["results"]
    assert len(res) == len(ids)
    truth = {t["id"]: t["truth"] for t in fake_ls.task_list}
    correct = 0
    for tid, entry in zip(ids, res):
        assert entry["model_version"] == "al-v1"
        assert 0.0 <= entry["score"] <= 1.0
        (region,) = entry["result"]
        assert (region["from_name"], region["to_name"], region["type"]) == ("colour", "img", "choices")
        correct += region["value"]["choices"] == [truth[tid]]
    assert correct >= 4  # random backbone, but colours are easy


def test_a_broken_image_gets_an_empty_result_and_the_others_are_predicted(client, trained, fake_ls):
    body = predict_body(fake_ls, [5, 6])
    body["tasks"][0]["data"]["image"] = "/data/local-files/?d=missing.png"
    res = client.post("/predict", json=body).json()["results"]
    assert res[0]["result"] == [] and res[0]["model_version"] == "al-v1"
    assert res[1]["result"] and res[1]["model_version"] == "al-v1"


def test_predict_serves_a_cached_task_without_fetching(client, trained, fake_ls):
    client.post("/predict", json=predict_body(fake_ls, [5]))
    before = fake_ls.fetches
    client.post("/predict", json=predict_body(fake_ls, [5]))
    assert fake_ls.fetches == before


@pytest.mark.parametrize("body", [
    {"tasks": [{"id": 1, "data": {}}], "project": "abc", "label_config": CONFIG},
    {"tasks": [{"id": "x"}], "project": "1.1", "label_config": CONFIG},
    {"tasks": [{"id": 1, "data": {}}], "project": "1.1", "label_config": "<View/>"},
    {"tasks": [{"id": 1, "data": {}}], "project": "1.1"},
    {"project": "1.1", "label_config": CONFIG},
])
def test_predict_bad_input_is_a_json_4xx(client, body):
    res = client.post("/predict", json=body)
    assert 400 <= res.status_code < 500
    assert isinstance(res.json()["detail"], str)


def test_malformed_json_is_a_json_4xx_everywhere(client):
    for path in ("/setup", "/predict", "/webhook"):
        res = client.post(path, content=b"{not json", headers={"content-type": "application/json"})
        assert res.status_code == 422 and "detail" in res.json()


def test_annotation_webhooks_enqueue_and_coalesce(client, settings):
    event = {"action": "ANNOTATION_CREATED", "project": {"id": 3, "title": "x"},
             "annotation": {"id": 9, "task": 1}, "task": {"id": 1, "project": 3}}
    first = client.post("/webhook", json=event)
    assert first.status_code == 200 and first.json()["status"] == "queued"
    assert client.post("/webhook", json=event).json()["status"] == "coalesced"
    assert client.post("/webhook", json={"action": "START_TRAINING", "project": {"id": 4}}).json()[
        "status"] == "queued"


def test_new_tasks_queue_a_prioritize_job(client):
    res = client.post("/webhook", json={"action": "TASKS_CREATED", "project": {"id": 1},
                                        "tasks": [{"id": 99}]})
    assert res.json()["status"] == "queued" and res.json()["job"] == "prioritize"


def test_task_events_make_workers_list_the_tasks_afresh(client, settings):
    """Workers keep a project's task listing while this count stays the same."""
    import redis

    r = redis.Redis.from_url(settings.redis_url)
    for action in ("TASKS_CREATED", "TASKS_DELETED"):
        res = client.post("/webhook", json={"action": action, "project": {"id": 7}})
        assert res.status_code == 200
    assert res.json()["status"] == "noted"
    assert int(ProjectQueue(r, 7).tasks_changed()) == 2


def test_other_events_are_ignored_and_missing_project_is_a_4xx(client):
    for action in ("PROJECT_UPDATED", "SOMETHING_NEW"):
        res = client.post("/webhook", json={"action": action, "project": {"id": 1}})
        assert res.status_code == 200 and res.json()["status"] == "ignored"
    assert client.post("/webhook", json={"action": "ANNOTATION_CREATED"}).status_code == 422
    assert client.post("/webhook", json={"project": {"id": 1}}).status_code == 422


def test_webhook_with_redis_down_is_a_503(tmp_path, runtime):
    settings = Settings(model_dir=tmp_path, redis_url="redis://127.0.0.1:1/0", weights="none")
    client = TestClient(create_app(settings, runtime))
    res = client.post("/webhook", json={"action": "ANNOTATION_CREATED", "project": {"id": 1}})
    assert res.status_code == 503 and "queue" in res.json()["detail"]


def test_status_versions_and_metrics(client, trained):
    status = client.get("/status/1").json()
    assert status["serving_version"] == "v1" and status["labels"] == 12
    assert status["versions"][0]["metrics"]["accuracy"] is not None
    assert client.get("/versions").json()["versions"] == ["al-v1"]
    assert client.get("/versions", params={"project": "1.1"}).json()["model_version"] == "al-v1"
    client.get("/health")
    assert 'al_requests_total{endpoint="health"}' in client.get("/metrics").text
    assert client.get("/status/2").json()["serving_version"] is None


def test_setup_and_predict_answer_every_question_of_a_two_question_config(client, runtime,
                                                                          fake_ls):
    from tests.unit.fakes import TWO_QUESTIONS, answer_both

    answer_both(fake_ls, 12)
    assert client.post("/setup", json={"project": "1.1", "schema": TWO_QUESTIONS}).status_code == 200
    retrain(runtime, 1)
    body = predict_body(fake_ls, [13, 14]) | {"label_config": TWO_QUESTIONS}
    res = client.post("/predict", json=body)
    assert res.status_code == 200
    for pred in res.json()["results"]:
        said = {r["from_name"]: r["value"]["choices"] for r in pred["result"]}
        assert len(said["colour"]) == 1 and said.get("tags")
        assert pred["model_version"] == "al-v1"
    for schema, named in ((TWO_QUESTIONS.replace('toName="img" choice', 'toName="img" '
                                                 'perRegion="true" choice'), "perRegion"),
                          (TWO_QUESTIONS.replace("</View>", '<Image name="b" value="$b"/></View>'),
                           "Image")):
        res = client.post("/setup", json={"project": "1.1", "schema": schema})
        assert res.status_code == 422 and named in res.json()["detail"]
