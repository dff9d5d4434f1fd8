"""Immutable, numbered model versions of a project, and which one serves.

Layout under the model dir::

    projects/<id>/versions/v<N>/head.pt     weights of the head (or of the ensemble's heads)
    projects/<id>/versions/v<N>/meta.json   label map, training config, metrics, counts,
                                            promotion decision, backbone it was trained on
    projects/<id>/versions/v<N>/tasks.json  task ids by role: train, val, test
    projects/<id>/serving                   name of the serving version

A version is written into a temporary folder and renamed into place, and the serving pointer is
replaced atomically, so a crash never leaves a half-written version that gets served. Several
workers, on several machines, may share the folder (NFS and the like rename atomically too):
a reader sees a version whole or not at all, and a name is claimed by the rename itself, which
fails onto a folder that exists, so two workers saving at once get two names. Temporary names
carry the host as well as the process id.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import tempfile
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import torch

from model.head import Ensemble, Head, QuestionHeads, build_head, predict_proba
from model.questions import Answers, Question, decide, matching

UNTRAINED = "untrained"
_NAME = re.compile(r"^v(\d+)$")


def per_question(meta: dict) -> bool:
    """Whether a version's `meta` describes one head per question (several questions, or a
    multiple-choice one): it then has no `classes`, and its metrics and label counts are per
    question (`model.evaluation.combine`)."""
    return "classes" not in meta and bool(meta.get("questions"))


class UnknownVersion(KeyError):
    """The project has no version of that name."""

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass
class ModelVersion:
    name: str
    head: Head | Ensemble | QuestionHeads
    meta: dict
    path: Path | None = field(default=None, repr=False)

    @property
    def classes(self) -> list[str]:
        """The classes of a version with one single-choice question (every version before
        label configs could ask several)."""
        if self.several_questions:
            raise ValueError(f"{self.name} answers several questions: use its `questions`")
        return list(self.meta["classes"])

    @property
    def several_questions(self) -> bool:
        """One head per question (`per_question`), exported and predicted per question."""
        return per_question(self.meta)

    @property
    def questions(self) -> list[Question]:
        """The questions this version answers, in the order of its `heads`."""
        if "questions" in self.meta:
            return [Question.from_json(q) for q in self.meta["questions"]]
        return [Question("", tuple(self.meta["classes"]))]  # trained before questions had names

    @property
    def heads(self) -> list[Head | Ensemble]:
        """One head per question, in the order of `questions`."""
        if isinstance(self.head, QuestionHeads):
            return list(self.head.heads)
        return [self.head]

    def thresholds(self, question: str) -> list[float] | None:
        """A multiple-choice question's per-label thresholds (None: 0.5 each)."""
        for q in self.meta.get("questions") or []:
            if q["name"] == question:
                return q.get("thresholds")
        return None

    def probabilities(self, x: np.ndarray, offered: list[Question] | tuple[Question, ...], *,
                      passes: int = 1, seed: int = 0) -> dict[str, np.ndarray]:
        """Per question `offered` (the label config's now) this version has a head for, that
        head's probabilities over its own classes: [n, c], or [n, c, T] for `passes` > 1."""
        mine = matching(self.questions, offered)
        return {name: predict_proba(self.heads[self.questions.index(q)], x, passes=passes,
                                    seed=seed)
                for name, q in mine.items()}

    def answers(self, probs: dict[str, np.ndarray],
                offered: list[Question] | tuple[Question, ...], n: int) -> list[Answers]:
        """The pre-annotation of each of `n` rows of `probs` (see `probabilities`): per offered
        question, what this version answers among the labels the config still offers
        (`model.questions.decide`); questions it cannot answer are left out."""
        mine = matching(self.questions, offered)
        said = {q.name: decide(probs[q.name], mine[q.name], q.classes,
                               self.thresholds(mine[q.name].name))
                for q in offered if q.name in probs}
        return [{name: labels[i] for name, labels in said.items() if labels[i]}
                for i in range(n)]

    @cached_property
    def tasks(self) -> dict[str, list[int]]:
        """Task ids by role (train, val, test); empty for versions that were not trained here."""
        try:
            return json.loads((self.path / "tasks.json").read_text())
        except (FileNotFoundError, TypeError):
            return {}


class VersionStore:
    def __init__(self, model_dir: Path, project: int):
        self.project = project
        self.root = Path(model_dir) / "projects" / str(project)
        self.versions_dir = self.root / "versions"

    def names(self) -> list[str]:
        """Version names, oldest first."""
        if not self.versions_dir.is_dir():
            return []
        found = [(int(m.group(1)), p.name) for p in self.versions_dir.iterdir()
                 if (m := _NAME.match(p.name)) and (p / "meta.json").is_file()]
        return [name for _, name in sorted(found)]

    def serving(self) -> str | None:
        try:
            name = (self.root / "serving").read_text().strip()
        except FileNotFoundError:
            return None
        return name if (self.versions_dir / name / "meta.json").is_file() else None

    def meta(self, name: str) -> dict:
        return json.loads((self.versions_dir / name / "meta.json").read_text())

    def _check(self, name: str) -> None:
        if not _NAME.match(name or "") or not (self.versions_dir / name / "meta.json").is_file():
            have = ", ".join(self.names()) or "none"
            raise UnknownVersion(f"project {self.project} has no version {name!r} (it has: {have})")

    def load(self, name: str) -> ModelVersion:
        self._check(name)
        meta = self.meta(name)
        head = build_head(meta["head_config"])
        state = torch.load(self.versions_dir / name / "head.pt", map_location="cpu",
                           weights_only=True)
        head.load_state_dict(state)
        head.eval()
        return ModelVersion(name, head, meta, self.versions_dir / name)

    def save(self, head: Head | Ensemble, meta: dict,
             tasks: dict[str, list[int]] | None = None) -> str:
        """Write a new version atomically and return its name (never overwrites one)."""
        self.versions_dir.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{writer_id()}-", dir=self.root))
        try:
            torch.save(head.state_dict(), tmp / "head.pt")
            if tasks is not None:
                (tmp / "tasks.json").write_text(json.dumps(tasks))
            while True:
                name = f"v{self._next_number()}"
                full = {**meta, "version": name, "head_config": head.config,
                        "created_at": time.time()}
                (tmp / "meta.json").write_text(json.dumps(full, indent=2))
                try:
                    os.rename(tmp, self.versions_dir / name)  # fails if the name was taken
                    return name
                except OSError:
                    if not (self.versions_dir / name).exists():
                        raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def _next_number(self) -> int:
        """One past every `v<N>` folder, finished or not: a folder without meta.json (left by a
        crash or a full disk) keeps its name taken, so the rename below cannot keep failing."""
        taken = [int(m.group(1)) for p in self.versions_dir.iterdir() if (m := _NAME.match(p.name))]
        return max(taken, default=0) + 1

    def promote(self, name: str) -> None:
        self._check(name)
        tmp = self.root / f".serving-{writer_id()}"
        tmp.write_text(name)
        os.replace(tmp, self.root / "serving")

    def update_meta(self, name: str, **fields: object) -> None:
        """Record a decision about a version (its weights stay immutable)."""
        path = self.versions_dir / name / "meta.json"
        meta = json.loads(path.read_text()) | fields
        tmp = path.with_suffix(f".tmp-{writer_id()}")
        tmp.write_text(json.dumps(meta, indent=2))
        os.replace(tmp, path)


def writer_id() -> str:
    """A name for this process's temporary files, unique across the machines sharing the folder."""
    return f"{socket.gethostname()}-{os.getpid()}"


def projects(model_dir: Path) -> list[int]:
    """Projects that have a folder under the model dir."""
    root = Path(model_dir) / "projects"
    if not root.is_dir():
        return []
    return sorted(int(p.name) for p in root.iterdir() if p.name.isdigit())
