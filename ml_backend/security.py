"""Who may call the backend, and how much they may send.

Label Studio sends the ML backend's basic auth (its "Basic Authentication" connection setting) on
/health, /setup, /predict and on the START_TRAINING it posts to /webhook itself. The project
webhook it creates for <backend>/webhook sends only the headers stored on that webhook (none at
first), so /webhook also accepts the shared secret in `X-Webhook-Secret`, which the worker writes
onto that webhook (`priorities.secure_webhooks`). Secrets are compared in constant time.
"""

from __future__ import annotations

import base64
import json
import secrets

from fastapi import HTTPException, Request
from fastapi.security import APIKeyHeader, HTTPBasic
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ml_backend.settings import Settings

WEBHOOK_SECRET_HEADER = "X-Webhook-Secret"
WEBHOOK_PATH = "/webhook"

_basic = HTTPBasic(auto_error=False, description="BASIC_AUTH_USER / BASIC_AUTH_PASS")
_webhook_secret = APIKeyHeader(
    name=WEBHOOK_SECRET_HEADER, auto_error=False, description="WEBHOOK_SECRET (only /webhook)"
)


def _same(given: str, expected: str) -> bool:
    return secrets.compare_digest(given.encode(), expected.encode())


def authorizer(settings: Settings):
    """A dependency that refuses a request lacking the credentials its path needs (401).

    Credentials are parsed only where some are configured, so an open backend ignores whatever
    Authorization header a client sends.
    """
    user = settings.basic_auth_user
    password = settings.basic_auth_pass.get_secret_value()
    secret = settings.webhook_secret.get_secret_value()

    async def authorize(request: Request) -> None:
        webhook = getattr(request.scope.get("route"), "path", None) == WEBHOOK_PATH
        if not user and not (webhook and secret):
            return
        try:
            basic = await _basic(request) if user else None
        except HTTPException:  # a malformed Basic header counts as no credentials
            basic = None
        header = await _webhook_secret(request) if webhook and secret else None
        # `&`, not `and`: both halves are always compared, so timing says nothing about either.
        if basic is not None and _same(basic.username, user) & _same(basic.password, password):
            return
        if header is not None and _same(header, secret):
            return
        raise HTTPException(
            401, "wrong credentials" if basic or header else "authentication required",
            headers={"WWW-Authenticate": "Basic"} if user else None,
        )

    return authorize


def webhook_headers(settings: Settings) -> dict[str, str]:
    """Headers Label Studio's project webhook must send for /webhook to accept it."""
    if settings.webhook_secret.get_secret_value():
        return {WEBHOOK_SECRET_HEADER: settings.webhook_secret.get_secret_value()}
    if settings.basic_auth_user:
        token = f"{settings.basic_auth_user}:{settings.basic_auth_pass.get_secret_value()}"
        return {"Authorization": "Basic " + base64.b64encode(token.encode()).decode()}
    return {}


class BodyLimit:
    """ASGI middleware: a request body over `max_bytes` is refused with a JSON 413.

    A declared Content-Length is refused before the app runs; a streamed body is counted while
    the app reads it. (Starlette's own limit answers plain text in the first case.)
    """

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(send)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise HTTPException(413, self._detail())
            return message

        await self.app(scope, counted, send)

    def _detail(self) -> str:
        return f"request body larger than {self.max_bytes} bytes (MAX_REQUEST_BYTES)"

    async def _refuse(self, send: Send) -> None:
        body = json.dumps({"detail": self._detail()}).encode()
        await send({"type": "http.response.start", "status": 413, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
            (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})
