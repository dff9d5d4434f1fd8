"""Every endpoint fuzzed from the app's own OpenAPI schema (schemathesis, valid and invalid data).

Whatever arrives, the answer is never a server error and never an HTML error page: Label Studio
shows our error text to people, and a 5xx is a bug. Bounded: a few seconds per endpoint.
(Schemathesis' pytest plugin does not run on pytest 9 yet, so its strategies drive hypothesis.)
"""

import pytest
import schemathesis
from fastapi import HTTPException
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis import Redis
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from ml_backend.runtime import Runtime
from ml_backend.routes.deps import MAX_ID, project_id
from ml_backend.server import create_app
from ml_backend.settings import Settings
from ml_backend.steps import retrain
from tests.unit.fakes import CONFIG, FakeLabelStudio

EXAMPLES = 60
NOT_JSON = {"/": "text/html", "/metrics": "text/plain", "/status/{project}/curve.png": "image/png"}
OPERATIONS = sorted(
    (method.upper(), path)
    for path, methods in create_app(Settings()).openapi()["paths"].items()
    for method in methods
)


@pytest.fixture(scope="module")
def api(redis_server, tmp_path_factory):
    """The app with a serving version (so /predict gets past "untrained"), built once."""
    url = f"{redis_server}/0"
    Redis.from_url(url).flushdb()
    settings = Settings(
        model_dir=tmp_path_factory.mktemp("fuzz") / "models", backbone="mobilenet_v3_small",
        weights="none", redis_url=url, label_studio_url="http://ls.test:8080", batch_size=8,
    )
    runtime = Runtime(settings, labelstudio=FakeLabelStudio())
    retrain(runtime, 1)
    yield schemathesis.openapi.from_asgi("/openapi.json", create_app(settings, runtime))
    Redis.from_url(url).flushdb()


@pytest.mark.parametrize(("method", "path"), OPERATIONS)
def test_no_input_gets_a_server_error_or_an_html_error_page(api, method, path):
    operation = api[path][method]
    cases = st.one_of(operation.as_strategy(GenerationMode.POSITIVE),
                      operation.as_strategy(GenerationMode.NEGATIVE))

    @given(case=cases)
    @settings(max_examples=EXAMPLES, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    def fuzz(case):
        response = case.call()
        case.validate_response(response, checks=[not_a_server_error])
        kind = response.headers.get("content-type", [""])[0]
        expected = "application/json" if response.status_code >= 400 else NOT_JSON.get(
            path, "application/json")
        assert kind.startswith(expected), (response.status_code, kind, response.text[:200])

    fuzz()


def test_every_endpoint_is_fuzzed():
    paths = {path for _, path in OPERATIONS}
    assert {"/health", "/setup", "/predict", "/webhook", "/status/{project}", "/versions",
            "/metrics", "/"} <= paths


# Schema-driven generation seldom produces the extremes below; project ids reach the file system
# (a folder per project), so they get a property test of their own.
project_values = st.one_of(
    st.integers(), st.text(), st.text(alphabet="0123456789.", max_size=30),
    st.from_regex(r"\A[0-9]{15,6000}(\.[0-9]+)?\Z"), st.none(), st.booleans(), st.floats(),
    st.dictionaries(st.just("id"), st.one_of(st.integers(), st.text())),
)


@given(value=project_values)
@settings(max_examples=300, deadline=None, database=None)
def test_a_project_id_is_a_positive_database_integer_or_a_422(value):
    try:
        parsed = project_id(value)
    except HTTPException as exc:
        assert exc.status_code == 422 and len(exc.detail) < 120
    else:
        assert isinstance(parsed, int) and 0 < parsed <= MAX_ID


@pytest.mark.parametrize(("value", "expected"), [
    ("12.1700000000", 12), (12, 12), ({"id": 12, "title": "x"}, 12), ("1" * 5000, None),
    ("١٢", None), (MAX_ID + 1, None), (True, None), ("0", None), (-3, None),
])
def test_project_id_examples(value, expected):
    if expected is None:
        with pytest.raises(HTTPException):
            project_id(value)
    else:
        assert project_id(value) == expected


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                max_size=3),
    max_leaves=8,
)
image_urls = st.sampled_from(sorted(FakeLabelStudio().images))  # images the stand-in serves
tasks = st.lists(st.fixed_dictionaries(
    {"id": st.integers(), "data": st.fixed_dictionaries({}, optional={
        "image": json_values | image_urls, "other": json_values})},
    optional={"project": st.integers()}), max_size=6)


@given(batch=tasks)
@settings(max_examples=80, deadline=None, database=None)
def test_predict_answers_every_task_list_in_order_or_refuses_it_with_a_4xx(api, batch):
    """Past the schema, with a valid label config: task ids and data of any shape."""
    client = TestClient(api.app, raise_server_exceptions=False)
    res = client.post("/predict", json={"tasks": batch, "project": "1.1", "label_config": CONFIG})
    assert res.status_code < 500, res.text
    if res.status_code == 200:
        assert len(res.json()["results"]) == len(batch)
    else:
        assert res.status_code == 422 and isinstance(res.json()["detail"], str)
