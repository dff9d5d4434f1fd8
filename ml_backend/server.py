"""The ASGI app: the protocol and status routers behind the optional auth, and errors as JSON."""

from __future__ import annotations

import logging

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from ml_backend.routes import protocol, status
from ml_backend.routes.deps import AppState
from ml_backend.runtime import Runtime
from ml_backend.security import BodyLimit, authorizer
from ml_backend.settings import Settings

log = logging.getLogger(__name__)


async def _http_error(_: Request, exc: HTTPException) -> JSONResponse:
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)


async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
    problems = "; ".join(
        f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in exc.errors()
    )
    return JSONResponse({"detail": f"invalid request: {problems}"}, status_code=422)


async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
    log.exception("unexpected error")
    return JSONResponse({"detail": f"internal error: {type(exc).__name__}"}, status_code=500)


def create_app(settings: Settings, runtime: Runtime | None = None) -> FastAPI:
    """The ASGI app; tests pass their own settings (and may pass a prepared runtime)."""
    rt = runtime or Runtime(settings)
    # Every route, the schema included, sits behind the optional auth (security.py).
    app = FastAPI(
        title="Active-learning backend for Label Studio", version="0.1.0",
        dependencies=[Depends(authorizer(settings))],
        openapi_url=None, docs_url=None, redoc_url=None,
    )
    app.add_middleware(BodyLimit, max_bytes=settings.max_request_bytes)
    app.state.runtime = rt
    app.state.backend = AppState(settings, rt)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unexpected)

    @app.get("/openapi.json", include_in_schema=False)
    def openapi() -> dict:
        return app.openapi()

    app.include_router(protocol.router)
    app.include_router(status.router)
    return app
