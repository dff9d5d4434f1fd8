"""Which prediction versions in a Label Studio project are this backend's.

Label Studio knows no owner of a prediction version: a user's imported pre-annotations, another
backend's predictions and ours are all rows with a `model_version` string. So ours are named
apart (VERSION_PREFIX: `al-v3`, `al-untrained`) and recorded per project in a file under
MODEL_DIR (it survives a Redis restart, as the versions do): only recorded versions are ever
pushed to again, deleted, or used to recognise our connected backend. A name Label Studio
already holds that the record lacks is someone else's, and a push to it is refused.

Migration: versions trained before the prefix existed carry no `label_studio_prefix` in their
meta and keep their old Label Studio name (`v3`), which the order may still be served by. Until
a project's record is first written, it holds those old names, and `untrained` when the project
has any: older releases pushed them (and pushed into any foreign version of the same name, so
such a version was mixed with ours already and is deleted with it).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from ml_backend.settings import Settings
from model.versions import UNTRAINED, ModelVersion, VersionStore, writer_id

PREFIX_KEY = "label_studio_prefix"  # in a version's meta: the prefix its Label Studio name has
RECORD = "label-studio-versions.json"


class ForeignVersion(RuntimeError):
    """Label Studio holds predictions under the name of one of our versions that we never
    pushed (someone else's); they are left alone and nothing is pushed to them."""


def marker(settings: Settings) -> dict:
    """What a new version's meta records so that its Label Studio name is `<prefix><name>`."""
    return {PREFIX_KEY: settings.version_prefix}


def name_of(name: str, meta: dict) -> str:
    """The Label Studio name of version `name` (its old one when trained before the prefix)."""
    prefix = meta.get(PREFIX_KEY)
    return name if prefix is None else prefix + name


def untrained_name(settings: Settings) -> str:
    """The Label Studio name of an order made before any model (seeding)."""
    return settings.version_prefix + UNTRAINED


def model_name(settings: Settings, model: ModelVersion | None) -> str:
    return untrained_name(settings) if model is None else name_of(model.name, model.meta)


def serving_name(settings: Settings, store: VersionStore) -> str:
    """The Label Studio name of the serving version: what `/setup` and `/predict` report."""
    name = store.serving()
    return untrained_name(settings) if name is None else name_of(name, store.meta(name))


def record_path(settings: Settings, project: int) -> Path:
    return Path(settings.model_dir) / "projects" / str(project) / RECORD


@dataclass
class Record:
    """The Label Studio versions this backend pushed to in a project, oldest first."""

    path: Path
    names: list[str] = field(default_factory=list)

    def add(self, name: str) -> None:
        """Note a push (before it is made, so a push cut short is ours too); a push to a
        version again (a rollback) makes it the newest."""
        self.names = [n for n in self.names if n != name] + [name]
        self._save()

    def discard(self, names: list[str]) -> None:
        if any(n in self.names for n in names):
            self.names = [n for n in self.names if n not in names]
            self._save()

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{RECORD}.{writer_id()}")  # MODEL_DIR may be shared
        tmp.write_text(json.dumps({"versions": self.names}))
        os.replace(tmp, self.path)


def record(settings: Settings, store: VersionStore) -> Record:
    """The project's record (see the module's doc for a project that has none yet)."""
    path = record_path(settings, store.project)
    try:
        return Record(path, list(json.loads(path.read_text())["versions"]))
    except FileNotFoundError:
        legacy = [n for n in store.names() if PREFIX_KEY not in store.meta(n)]
        return Record(path, ([UNTRAINED] if legacy else []) + legacy)


def claim(settings: Settings, store: VersionStore, name: str, stored: dict[str, int]) -> None:
    """Record that we push to `name` (`stored`: Label Studio's versions now); refused when
    Label Studio holds it and we never pushed to it."""
    rec = record(settings, store)
    if name in stored and name not in rec.names:
        raise ForeignVersion(
            f"project {store.project}: Label Studio holds {stored[name]} predictions of version "
            f"{name!r} that this backend did not create; they are left alone. Rename or delete "
            "them, or give this backend another VERSION_PREFIX")
    rec.add(name)
