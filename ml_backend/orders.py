"""A version's whole order, kept beside the project's versions: Label Studio holds its head.

A retrain ranks every unlabelled task but stores in Label Studio the predictions of only the
first QUEUE_HEAD: importing predictions, and deleting them with an old version, costs Label
Studio time per prediction. The rest of the order is kept here, one file per version: a top-up
pushes its next slice when annotators work through the head faster than retrains land, and
`/predict` answers a task outside the head with its priority from it, so that a prediction Label
Studio asks for on demand joins the queue at its place.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ml_backend.label_config import LabelConfig
from ml_backend.settings import Settings
from model.versions import writer_id

# Score of a task the order does not hold (imported after it, or its image failed): served last.
LAST = 1.0


@dataclass
class StoredOrder:
    """Unlabelled tasks first to last, their priorities and pre-annotations: per task a JSON
    object of question -> labels ("{}" for none), or in orders kept by older releases the one
    question's label ("" for none)."""

    tasks: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    _index: dict[int, int] = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return len(self.tasks)

    def score_of(self, task: int) -> float | None:
        if not self._index:
            self._index = {int(t): i for i, t in enumerate(self.tasks.tolist())}
        i = self._index.get(int(task))
        return None if i is None else float(self.scores[i])

    def predictions(self, start: int, stop: int, version: str,
                    config: LabelConfig) -> list[dict]:
        """Label Studio prediction payloads of places `start` to `stop` of the order."""
        return [{"task": int(t), "score": float(s), "model_version": version,
                 "result": config.result(_answers(str(label), config))}
                for t, s, label in zip(self.tasks[start:stop].tolist(),
                                       self.scores[start:stop].tolist(),
                                       self.labels[start:stop].tolist())]


def _answers(label: str, config: LabelConfig) -> dict:
    if label.startswith("{"):
        return json.loads(label)
    single = config.single  # an order kept before label configs could ask several questions
    return {single.name: (label,)} if label and single is not None else {}


def _path(settings: Settings, project: int, version: str) -> Path:
    return Path(settings.model_dir) / "projects" / str(project) / "orders" / f"{version}.npz"


def save(settings: Settings, project: int, version: str, predictions: list[dict]) -> None:
    """Keep the order `predictions` (payloads, served first to last) of Label Studio version
    `version`, replacing any; written to a temporary file and renamed."""
    path = _path(settings, project, version)
    path.parent.mkdir(parents=True, exist_ok=True)
    said: dict[int, str] = {}  # plans share one result per distinct answer: encode it once
    for p in predictions:
        if id(p["result"]) not in said:
            said[id(p["result"])] = json.dumps(
                {r["from_name"]: r["value"]["choices"] for r in p["result"]}, separators=(",", ":"))
    labels = [said[id(p["result"])] for p in predictions]
    tmp = path.with_name(f".{path.stem}.{writer_id()}.npz")  # MODEL_DIR may be shared
    np.savez(tmp, tasks=np.array([p["task"] for p in predictions], dtype=np.int64),
             scores=np.array([p["score"] for p in predictions], dtype=np.float64),
             labels=np.array(labels, dtype=str))
    os.replace(tmp, path)


def load(settings: Settings, project: int, version: str) -> StoredOrder | None:
    """The kept order of `version`; None when there is none (a version pushed by an older
    release, which pushed every task)."""
    try:
        with np.load(_path(settings, project, version), allow_pickle=False) as data:
            return StoredOrder(data["tasks"], data["scores"], data["labels"])
    except FileNotFoundError:
        return None


def stamp(settings: Settings, project: int, version: str) -> float | None:
    """When `version`'s order was written (a cache key for readers in other processes)."""
    try:
        return _path(settings, project, version).stat().st_mtime
    except FileNotFoundError:
        return None


def remove(settings: Settings, project: int, versions: list[str]) -> None:
    for version in versions:
        _path(settings, project, version).unlink(missing_ok=True)
