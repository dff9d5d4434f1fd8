"""Access to the HTTP API: basic auth, the webhook secret, request size; no secret in logs."""

import base64
import logging

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from pydantic import ValidationError

from ml_backend.server import create_app
from ml_backend.settings import Settings

USER, PASSWORD, SECRET = "label-studio", "pw:with-colon!123", "hook-secret-456"
EVENT = {"action": "ANNOTATION_CREATED", "project": {"id": 1}}


def basic(user: str = USER, password: str = PASSWORD) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def app_client(settings: Settings, runtime, **overrides) -> TestClient:
    configured = Settings(**(settings.model_dump() | overrides))
    runtime.settings = configured
    return TestClient(create_app(configured, runtime), raise_server_exceptions=False)


def every_route(client: TestClient) -> list[tuple[str, str]]:
    """(method, path) of every route the app serves, the schema included."""
    routes, pending = [], list(client.app.routes)
    while pending:
        route = pending.pop(0)
        if isinstance(route, APIRoute):
            path = route.path.replace("{project}", "1")
            routes += [(m, path) for m in sorted(route.methods)]
        elif hasattr(route, "original_router"):  # a router included (FastAPI >= 0.165)
            pending += route.original_router.routes
    assert ("GET", "/openapi.json") in routes and ("POST", "/webhook") in routes
    return routes


@pytest.fixture
def locked(settings, runtime):
    return app_client(settings, runtime, basic_auth_user=USER,
                      basic_auth_pass=PASSWORD, webhook_secret=SECRET)


def test_with_basic_auth_every_route_refuses_anonymous_and_wrong_credentials(locked):
    for method, path in every_route(locked):
        for headers in ({}, basic(password="wrong"), basic(user="wrong"),
                        {"Authorization": "Basic !!not-base64"}, {"X-Webhook-Secret": "wrong"}):
            res = locked.request(method, path, headers=headers)
            assert res.status_code == 401, (method, path, headers, res.text)
            assert res.headers["www-authenticate"] == "Basic"
            assert isinstance(res.json()["detail"], str)


def test_with_basic_auth_the_right_credentials_pass(locked):
    for method, path in every_route(locked):
        res = locked.request(method, path, headers=basic())
        assert res.status_code != 401, (method, path, res.text)
    assert locked.get("/health", headers=basic()).json()["status"] == "UP"


def test_webhook_takes_the_secret_header_or_basic_auth(locked):
    assert locked.post("/webhook", json=EVENT, headers={"X-Webhook-Secret": SECRET}).json()[
        "status"] == "queued"
    assert locked.post("/webhook", json=EVENT, headers=basic()).status_code == 200
    assert locked.post("/webhook", json=EVENT).status_code == 401
    assert locked.post("/webhook", json=EVENT, headers={"X-Webhook-Secret": SECRET[:-1]}
                       ).status_code == 401
    # The secret opens /webhook only.
    assert locked.get("/status/1", headers={"X-Webhook-Secret": SECRET}).status_code == 401


def test_webhook_secret_alone_guards_only_the_webhook(settings, runtime):
    client = app_client(settings, runtime, webhook_secret=SECRET)
    assert client.get("/health").status_code == 200
    assert client.post("/webhook", json=EVENT).status_code == 401
    assert "www-authenticate" not in client.post("/webhook", json=EVENT).headers
    assert client.post("/webhook", json=EVENT, headers={"X-Webhook-Secret": SECRET}
                       ).status_code == 200


def test_an_open_backend_ignores_whatever_authorization_a_client_sends(settings, runtime):
    client = app_client(settings, runtime)
    for headers in ({"Authorization": "Basic !!not-base64"}, {"Authorization": "Token abc"},
                    basic(), {"X-Webhook-Secret": "anything"}):
        assert client.get("/health", headers=headers).status_code == 200
        assert client.post("/webhook", json=EVENT, headers=headers).status_code == 200


def test_basic_auth_needs_both_user_and_password_in_ascii():
    with pytest.raises(ValidationError, match="BASIC_AUTH_USER and BASIC_AUTH_PASS"):
        Settings(basic_auth_user=USER)
    with pytest.raises(ValidationError, match="BASIC_AUTH_USER and BASIC_AUTH_PASS"):
        Settings(basic_auth_pass=PASSWORD)
    with pytest.raises(ValidationError, match="ASCII"):
        Settings(basic_auth_user=USER, basic_auth_pass="pässword")
    with pytest.raises(ValidationError, match="ASCII"):
        Settings(basic_auth_user="a:b", basic_auth_pass=PASSWORD)


def test_secrets_never_reach_logs_or_reprs(locked, caplog):
    caplog.set_level(logging.DEBUG)
    locked.post("/webhook", json=EVENT, headers={"X-Webhook-Secret": SECRET})
    locked.post("/webhook", json=EVENT, headers={"X-Webhook-Secret": SECRET + "x"})
    locked.get("/status/1", headers=basic(password=PASSWORD + "x"))
    locked.get("/status/1", headers=basic())
    settings = locked.app.state.runtime.settings
    logging.getLogger("test").info("settings: %s %r", settings, settings)
    for secret in (PASSWORD, SECRET):
        assert secret not in caplog.text
        assert secret not in repr(settings) and secret not in str(settings.model_dump())


@pytest.fixture
def small_limit(settings, runtime):
    return app_client(settings, runtime, max_request_bytes=4096)


@pytest.mark.parametrize("path", ["/predict", "/webhook", "/setup"])
def test_a_body_over_the_limit_is_a_json_413(small_limit, path):
    body = b'{"pad": "' + b"x" * 5000 + b'"}'
    declared = small_limit.post(path, content=body, headers={"content-type": "application/json"})
    assert declared.status_code == 413 and "MAX_REQUEST_BYTES" in declared.json()["detail"]
    # Streamed without a Content-Length: counted while it is read.
    chunks = (body[i : i + 1000] for i in range(0, len(body), 1000))
    streamed = small_limit.post(path, content=chunks, headers={"content-type": "application/json"})
    assert streamed.status_code == 413 and "MAX_REQUEST_BYTES" in streamed.json()["detail"]


def test_a_body_under_the_limit_is_served_and_a_get_with_a_huge_body_is_refused(small_limit):
    assert small_limit.post("/webhook", json=EVENT).status_code == 200
    res = small_limit.request("GET", "/health", content=b"x" * 10_000)
    assert res.status_code == 413 and res.headers["content-type"] == "application/json"
