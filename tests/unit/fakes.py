"""A stand-in for Label Studio in unit tests (the integration suite uses the real one)."""

from __future__ import annotations

from tests.images import png_bytes

CONFIG = (
    '<View><Image name="img" value="$image"/><Choices name="colour" toName="img">'
    '<Choice value="red"/><Choice value="green"/><Choice value="blue"/></Choices></View>'
)


class FakeLabelStudio:
    def __init__(self, n_per_class: int = 6, labelled_per_class: int = 4):
        self.config = CONFIG
        self.images: dict[str, bytes] = {}
        self.task_list: list[dict] = []
        self.fetches = 0
        tid = 0
        for label in ("red", "green", "blue"):
            for i in range(n_per_class):
                tid += 1
                url = f"/data/local-files/?d=img/{label}-{i}.png"
                self.images[url] = png_bytes(label, tid)
                task = {"id": tid, "data": {"image": url}, "annotations": [], "truth": label}
                if i < labelled_per_class:
                    task["annotations"] = [self.annotation(label, tid)]
                self.task_list.append(task)

    def annotation(self, label: str, id: int, cancelled: bool = False) -> dict:
        return {
            "id": id, "was_cancelled": cancelled, "updated_at": f"2024-01-01T00:00:{id:02d}",
            "result": [] if cancelled else [{"from_name": "colour", "to_name": "img",
                                             "type": "choices", "value": {"choices": [label]}}],
        }

    def label_config(self, project: int) -> str:
        return self.config

    def tasks(self, project: int, *, only_annotated: bool = False):
        return [t for t in self.task_list if t["annotations"] or not only_annotated]

    def fetch_image(self, url: str) -> bytes:
        self.fetches += 1
        if url not in self.images:
            raise RuntimeError(f"GET {url} answered 404")
        return self.images[url]
