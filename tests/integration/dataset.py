"""A tiny, visibly separable image dataset and a Label Studio project built on it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .labelstudio import LSApi

CLASSES = ("red", "green", "blue")
_BASE_RGB = {"red": (200, 40, 40), "green": (40, 180, 60), "blue": (40, 60, 200)}
IMAGE_SUBDIR = "colors"
IMAGE_SIZE = 64

LABEL_CONFIG = (
    "<View>"
    '<Image name="image" value="$image"/>'
    '<Choices name="label" toName="image" choice="single">'
    + "".join(f'<Choice value="{c}"/>' for c in CLASSES)
    + "</Choices>"
    "</View>"
)


def make_images(images_root: Path, per_class: int = 6, seed: int = 0) -> dict[str, str]:
    """Write `per_class` noisy solid-colour PNGs per class under images_root/colors/.

    Returns {relative path (to images_root): true label}.
    """
    rng = np.random.default_rng(seed)
    out_dir = images_root / IMAGE_SUBDIR
    out_dir.mkdir(parents=True, exist_ok=True)
    truth: dict[str, str] = {}
    for label in CLASSES:
        base = np.array(_BASE_RGB[label], dtype=np.float32)
        for i in range(per_class):
            noise = rng.normal(0, 25, size=(IMAGE_SIZE, IMAGE_SIZE, 3))
            shift = rng.uniform(-20, 20, size=3)
            pixels = np.clip(base + shift + noise, 0, 255).astype(np.uint8)
            rel = f"{IMAGE_SUBDIR}/{label}_{i:02d}.png"
            Image.fromarray(pixels, "RGB").save(images_root / rel)
            truth[rel] = label
    return truth


def local_files_url(rel_path: str) -> str:
    return f"/data/local-files/?d={rel_path}"


@dataclass
class LSProject:
    """A Label Studio project over the colour images, with the ground truth kept test-side."""

    id: int
    api: LSApi
    truth: dict[int, str]  # task id -> true label
    image_of: dict[int, str]  # task id -> relative image path
    storage_id: int
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def task_ids(self) -> list[int]:
        return sorted(self.truth)

    def tasks_of(self, label: str) -> list[int]:
        return [t for t in self.task_ids if self.truth[t] == label]


def create_project(
    api: LSApi, images_root: Path, truth_by_path: dict[str, str], title: str = "colours"
) -> LSProject:
    project = api.post("/api/projects/", json={"title": title, "label_config": LABEL_CONFIG})
    pid = project["id"]
    # A local-files storage over the image folder is what authorises /data/local-files/ URLs;
    # tasks are imported directly (not synced) so their order and data are under our control.
    storage = api.post(
        "/api/storages/localfiles",
        json={
            "project": pid,
            "title": "colour images",
            "path": str(images_root / "colors"),
            "use_blob_urls": True,
            "regex_filter": r".*\.png",
        },
    )
    paths = sorted(truth_by_path)
    api.post(
        f"/api/projects/{pid}/import",
        json=[{"data": {"image": local_files_url(p)}} for p in paths],
    )
    tasks = api.list_tasks(pid)
    prefix = local_files_url("")
    image_of = {t["id"]: t["data"]["image"][len(prefix) :] for t in tasks}
    truth = {tid: truth_by_path[rel] for tid, rel in image_of.items()}
    if len(truth) != len(paths):
        raise AssertionError(f"imported {len(paths)} tasks, LS lists {len(truth)}")
    return LSProject(
        id=pid, api=api, truth=truth, image_of=image_of, storage_id=storage["id"], raw=project
    )
