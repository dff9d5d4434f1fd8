"""Process-wide state a server or worker keeps warm: backbone, embedding stores, loaded versions."""

from __future__ import annotations

import logging
import threading
from functools import cached_property

import numpy as np

from ml_backend.label_config import LabelConfig
from ml_backend.labelstudio import LabelStudioClient
from ml_backend.settings import Settings
from model.backbone import Backbone, load_backbone
from model.embeddings import EmbeddingStore, embed_tasks
from model.head import predict_proba
from model.versions import UNTRAINED, ModelVersion, VersionStore

log = logging.getLogger(__name__)


class Runtime:
    def __init__(self, settings: Settings):
        self.settings = settings
        self._lock = threading.Lock()
        self._stores: dict[int, EmbeddingStore] = {}
        self._loaded: dict[tuple[int, str], ModelVersion] = {}

    @cached_property
    def backbone(self) -> Backbone:
        s = self.settings
        return load_backbone(s.backbone, s.weights, s.device)

    @cached_property
    def labelstudio(self) -> LabelStudioClient:
        return LabelStudioClient(self.settings)

    def versions(self, project: int) -> VersionStore:
        return VersionStore(self.settings.model_dir, project)

    def store(self, project: int) -> EmbeddingStore:
        with self._lock:
            if project not in self._stores:
                bb = self.backbone
                self._stores[project] = EmbeddingStore(
                    self.settings.model_dir, project, bb.fingerprint, bb.dim
                )
            return self._stores[project]

    def serving_version(self, project: int) -> str:
        return self.versions(project).serving() or UNTRAINED

    def serving_model(self, project: int) -> ModelVersion | None:
        """The serving version, loaded once per process and reloaded when the pointer moves."""
        name = self.versions(project).serving()
        if name is None:
            return None
        key = (project, name)
        with self._lock:
            if key not in self._loaded:
                self._loaded = {k: v for k, v in self._loaded.items() if k[0] != project}
                self._loaded[key] = self.versions(project).load(name)
            return self._loaded[key]

    def embed(
        self, project: int, urls: dict[int, str], progress: bool = False
    ) -> tuple[dict[int, np.ndarray], dict[int, str]]:
        return embed_tasks(
            self.backbone,
            self.store(project),
            urls,
            self.labelstudio.fetch_image,
            batch_size=self.settings.batch_size,
            progress=progress,
        )

    def predict(self, project: int, config: LabelConfig, tasks: list[dict]) -> list[dict]:
        """One Label Studio prediction per task, in order; empty results where none is possible."""
        model = self.serving_model(project)
        if model is None:
            return [{"result": [], "score": 0.0, "model_version": UNTRAINED} for _ in tasks]
        urls = {}
        for task in tasks:
            url = (task.get("data") or {}).get(config.value_key)
            if isinstance(url, str) and url:
                urls[int(task["id"])] = url
        vectors, errors = self.embed(project, urls)
        for task, err in errors.items():
            log.warning("project %s task %s: no prediction: %s", project, task, err)
        # Only classes the current config still offers may be proposed.
        allowed = [i for i, c in enumerate(model.classes) if c in config.classes]
        ids = [t for t in (int(task["id"]) for task in tasks) if t in vectors]
        probs = predict_proba(model.head, np.stack([vectors[t] for t in ids])) if ids else None
        by_task = {}
        for row, t in enumerate(ids):
            if not allowed:
                break
            best = max(allowed, key=lambda i: probs[row, i])
            by_task[t] = {
                "result": config.result(model.classes[best]),
                "score": float(probs[row, best]),
                "model_version": model.name,
            }
        empty = {"result": [], "score": 0.0, "model_version": model.name}
        return [by_task.get(int(task["id"]), empty) for task in tasks]
