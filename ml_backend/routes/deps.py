"""What the routes share: the app's settings, runtime, Redis connection and metrics, as
`Annotated` dependencies, and reading a project id the ways Label Studio sends one."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Path, Request
from prometheus_client import CollectorRegistry, Counter, Histogram
from redis import Redis

from ml_backend.runtime import Runtime
from ml_backend.settings import Settings

MAX_ID = 2**63 - 1  # Label Studio's ids are database integers
ProjectPath = Annotated[int, Path(ge=1, le=MAX_ID)]


@dataclass
class Metrics:
    """The app's Prometheus metrics, in a registry of its own (one per app)."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.requests = Counter("al_requests", "Requests by endpoint", ["endpoint"], registry=r)
        self.predictions = Counter("al_predictions", "Tasks predicted", registry=r)
        self.webhooks = Counter("al_webhooks", "Webhooks by outcome", ["outcome"], registry=r)
        self.latency = Histogram("al_predict_seconds", "Time to answer /predict", registry=r)


@dataclass
class AppState:
    """Kept on `app.state.backend`; the Redis client is made on first use (short timeouts:
    /webhook answers within Label Studio's 1 s)."""

    settings: Settings
    runtime: Runtime
    metrics: Metrics = field(default_factory=Metrics)
    _redis: Redis | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def redis(self) -> Redis:
        with self._lock:
            if self._redis is None:
                self._redis = Redis.from_url(self.settings.redis_url, socket_timeout=0.5,
                                             socket_connect_timeout=0.5)
            return self._redis


def _state(request: Request) -> AppState:
    return request.app.state.backend


def _settings(request: Request) -> Settings:
    return _state(request).settings


def _runtime(request: Request) -> Runtime:
    return _state(request).runtime


def _redis(request: Request) -> Redis:
    return _state(request).redis()


def _metrics(request: Request) -> Metrics:
    return _state(request).metrics


SettingsDep = Annotated[Settings, Depends(_settings)]
RuntimeDep = Annotated[Runtime, Depends(_runtime)]
RedisDep = Annotated[Redis, Depends(_redis)]
MetricsDep = Annotated[Metrics, Depends(_metrics)]


def project_id(value: Any) -> int:
    """Label Studio sends `"<id>.<created timestamp>"`, an int, or a project object."""
    raw = value
    if isinstance(value, dict):
        value = value.get("id")
    if isinstance(value, bool):
        value = None
    if isinstance(value, str):
        head = value.split(".", 1)[0]
        value = int(head) if head.isascii() and head.isdigit() and len(head) <= 19 else None
    if isinstance(value, int) and 0 < value <= MAX_ID:
        return value
    shown = "an out-of-range number" if isinstance(raw, int) else repr(raw)[:60]
    raise HTTPException(422, f"cannot read a project id from {shown}")


def remember(rt: Runtime, project: int) -> None:
    """A folder for the project: the worker's reconciliation checks every project with one."""
    rt.versions(project).root.mkdir(parents=True, exist_ok=True)
