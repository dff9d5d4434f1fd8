"""Process-wide state a server or worker keeps warm: backbone, embedding stores, loaded versions."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path

import numpy as np

from ml_backend.label_config import LabelConfig
from ml_backend import orders
from ml_backend.labelstudio import LabelStudioAPI, LabelStudioClient
from ml_backend.ownership import model_name, serving_name
from ml_backend.settings import Settings
from model.backbone import Backbone, load_backbone
from model.embeddings import EmbeddingStore, TaskMatrix, embed_tasks
from model.store import check_cache_location
from model.versions import ModelVersion, VersionStore

log = logging.getLogger(__name__)


class Runtime:
    """`labelstudio`: a client of one's own (the unit tests' stand-in); by default the real one,
    made when first used."""

    def __init__(self, settings: Settings, labelstudio: LabelStudioAPI | None = None):
        # At start, in one line: a cache on a network filesystem would fail at the first image.
        check_cache_location(settings.embedding_cache_dir or settings.model_dir)
        self.settings = settings
        self._labelstudio = labelstudio
        self._lock = threading.Lock()
        self._stores: dict[tuple[int, str], EmbeddingStore] = {}
        self._loaded: dict[tuple[int, str], ModelVersion] = {}
        self._orders: dict[int, tuple[tuple, orders.StoredOrder | None]] = {}
        self._backbones: dict[tuple[str, str], Backbone] = {}
        self._candidates: dict[int, Backbone] = {}
        self._matrices: dict[int, tuple[str, TaskMatrix]] = {}  # project -> (fingerprint, ...)
        self._backbone_lock = threading.Lock()  # loading one takes seconds: not under _lock

    @cached_property
    def backbone(self) -> Backbone:
        """The configured backbone (BACKBONE, WEIGHTS)."""
        s = self.settings
        return load_backbone(s.backbone, s.weights, s.device)

    def load_backbone(self, name: str, weights: str) -> Backbone:
        """A project's own backbone (fine-tuned or imported), from a file under MODEL_DIR."""
        key = (name, str(weights))
        with self._backbone_lock:
            if key not in self._backbones:
                path = self.settings.model_dir / weights
                self._backbones[key] = load_backbone(name, str(path), self.settings.device)
            return self._backbones[key]

    def backbone_of(self, meta: dict) -> Backbone:
        """The backbone a version was trained on: its own weights file when it names one (see
        `backbone_meta`), else the configured backbone."""
        weights = meta.get("backbone_weights")
        return self.load_backbone(meta["backbone"], weights) if weights else self.backbone

    def backbone_for(self, project: int) -> Backbone:
        """The backbone of the project's embeddings: the serving version's (or a candidate's,
        see `candidate_backbone`)."""
        if project in self._candidates:
            return self._candidates[project]
        model = self.serving_model(project)
        return self.backbone_of(model.meta) if model else self.backbone

    @contextmanager
    def candidate_backbone(self, project: int, backbone: Backbone) -> Iterator[None]:
        """While a version trained on a new backbone (fine-tuned) is being put in place, the
        project's embeddings come from that backbone (a worker runs one job at a time)."""
        self._candidates[project] = backbone
        try:
            yield
        finally:
            self._candidates.pop(project, None)

    def backbone_meta(self, bb: Backbone) -> dict:
        """What a version records about its backbone; `backbone_weights` (relative to
        MODEL_DIR) only for a project's own backbone, so the others follow BACKBONE/WEIGHTS."""
        weights = None
        if bb is not self.__dict__.get("backbone"):  # (without loading the configured one)
            weights = str(Path(bb.weights).resolve().relative_to(self.settings.model_dir.resolve()))
        return {"backbone": bb.name, "backbone_fingerprint": bb.fingerprint,
                "backbone_weights": weights}

    @property
    def labelstudio(self) -> LabelStudioAPI:
        with self._lock:
            if self._labelstudio is None:
                self._labelstudio = LabelStudioClient(self.settings)
            return self._labelstudio

    def versions(self, project: int) -> VersionStore:
        return VersionStore(self.settings.model_dir, project)

    def store(self, project: int, backbone: Backbone | None = None) -> EmbeddingStore:
        bb = backbone or self.backbone_for(project)
        with self._lock:
            if (project, bb.fingerprint) not in self._stores:
                self._stores[project, bb.fingerprint] = EmbeddingStore(
                    self.settings.embedding_cache_dir or self.settings.model_dir, project,
                    bb.fingerprint, bb.dim)
            return self._stores[project, bb.fingerprint]

    def serving_version(self, project: int) -> str:
        """The serving version's name in Label Studio (what /setup reports)."""
        return serving_name(self.settings, self.versions(project))

    def order(self, project: int, version: str) -> orders.StoredOrder | None:
        """The kept order of Label Studio version `version`, read once per process and again
        when a worker rewrites it."""
        key = (version, orders.stamp(self.settings, project, version))
        with self._lock:
            kept = self._orders.get(project)
        if kept is None or kept[0] != key:
            kept = (key, orders.load(self.settings, project, version))
            with self._lock:
                self._orders[project] = kept
        return kept[1]

    def priorities(self, project: int, version: str) -> Callable[[int], float]:
        """A task's score in `version`'s order (lower: served sooner), the scale of the
        predictions pushed; orders.LAST for a task the order does not hold."""
        order = self.order(project, version)

        def score(task: int) -> float:
            found = order.score_of(task) if order is not None else None
            return orders.LAST if found is None else found

        return score

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
        self, project: int, urls: dict[int, str], progress: bool | None = None,
        backbone: Backbone | None = None,
    ) -> tuple[dict[int, np.ndarray], dict[int, str]]:
        """Embeddings by `backbone`, by default the one the serving version was trained on;
        `progress=None` shows a bar on long runs when stderr is a terminal."""
        bb = backbone or self.backbone_for(project)
        return embed_tasks(
            bb,
            self.store(project, bb),
            urls,
            self.labelstudio.fetch_image,
            batch_size=self.settings.batch_size,
            progress=progress,
        )

    def embedding_matrix(
        self, project: int, urls: dict[int, str], progress: bool | None = None,
        backbone: Backbone | None = None,
    ) -> tuple[list[int], np.ndarray, dict[int, str]]:
        """`(ids, embeddings, errors)` of `{task: url}` as `TaskMatrix.take` gives them, from a
        matrix kept per project between jobs (one backbone's at a time): what a retrain ranks
        and trains on. The server, which embeds a few tasks per request, uses `embed`."""
        bb = backbone or self.backbone_for(project)
        with self._lock:
            kept = self._matrices.get(project)
            if kept is None or kept[0] != bb.fingerprint:
                kept = self._matrices[project] = (bb.fingerprint, TaskMatrix(bb.dim))
        return kept[1].take(urls, lambda missing: self.embed(project, missing, progress, bb))

    def predict(self, project: int, config: LabelConfig, tasks: list[dict]) -> list[dict]:
        """One Label Studio prediction per task, in order; empty results where none is possible.

        `score` is the task's priority in the serving version's order, as in the predictions a
        retrain pushes: Label Studio puts a prediction it asked for on demand into the same
        queue."""
        model = self.serving_model(project)
        version = model_name(self.settings, model)
        priority = self.priorities(project, version)

        def empty(task: int) -> dict:
            return {"result": [], "score": priority(task), "model_version": version}

        if model is None:
            return [empty(int(task["id"])) for task in tasks]
        urls = {}
        for task in tasks:
            url = (task.get("data") or {}).get(config.value_key)
            if isinstance(url, str) and url:
                urls[int(task["id"])] = url
        vectors, errors = self.embed(project, urls)
        for task, err in errors.items():
            log.warning("project %s task %s: no prediction: %s", project, task, err)
        ids = [t for t in (int(task["id"]) for task in tasks) if t in vectors]
        by_task = {}
        if ids:
            x = np.stack([vectors[t] for t in ids])
            # Only classes the current config still offers may be proposed.
            said = model.answers(model.probabilities(x, config.questions), config.questions,
                                 len(ids))
            by_task = {t: {"result": config.result(answers), "score": priority(t),
                           "model_version": version}
                       for t, answers in zip(ids, said) if answers}
        return [by_task.get(int(task["id"])) or empty(int(task["id"])) for task in tasks]
