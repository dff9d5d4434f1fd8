"""A stand-in for Label Studio in unit tests (the integration suite uses the real one)."""

from __future__ import annotations

from types import SimpleNamespace

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
        self.predictions: list[dict] = []
        self.sampling: dict = {"sampling": "Sequential sampling", "model_version": ""}
        self.backends: list[dict] = [
            {"id": 1, "url": "http://backend:9090", "project": 1, "title": "al-untrained",
             "model_version": "al-untrained"},
            {"id": 2, "url": "http://other:9090", "project": 1, "title": "someone else's",
             "model_version": "x"},
        ]
        # Label Studio adds a webhook to <backend url>/webhook, without headers, on connecting.
        self.hooks: list[dict] = [
            {"id": 1, "project": 1, "url": "http://backend:9090/webhook", "headers": {}},
            {"id": 2, "project": 1, "url": "http://other:9090/webhook", "headers": {}},
        ]
        self.down = False  # True: every call fails as if Label Studio were unreachable
        self.deletes_per_call = 10**9  # predictions deleted before a deadline passes
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

    def project(self, project: int) -> SimpleNamespace:
        if self.down:
            raise ConnectionError("[Errno 111] Connection refused")
        # Like Label Studio: tasks with an annotation that is not skipped.
        labelled = sum(any(not a.get("was_cancelled") for a in t["annotations"])
                       for t in self.task_list)
        return SimpleNamespace(label_config=self.config, task_number=len(self.task_list),
                               num_tasks_with_annotations=labelled,
                               model_version=self.sampling["model_version"])

    def label_config(self, project: int) -> str:
        return self.project(project).label_config

    def tasks(self, project: int):
        for t in self.task_list:
            yield t | {"predictions": [p for p in self.predictions if p["task"] == t["id"]]}

    def labelling_tasks(self, project: int, *, token=None, counts=None) -> list[dict]:
        """Like Label Studio's: every task with its annotations, no predictions."""
        if self.down:
            raise ConnectionError("[Errno 111] Connection refused")
        return [dict(t) for t in self.task_list]

    def tasks_lacking(self, project: int, version: str) -> set[int]:
        have = {p["task"] for p in self.predictions if p["model_version"] == version}
        return {t["id"] for t in self.task_list} - have

    def forget_tasks(self, project: int) -> None:
        pass

    def fetch_image(self, url: str) -> bytes:
        self.fetches += 1
        if url not in self.images:
            raise RuntimeError(f"GET {url} answered 404")
        return self.images[url]

    def import_predictions(self, project: int, predictions: list[dict], chunk: int = 1000) -> int:
        self.predictions += [dict(p) for p in predictions]
        return len(predictions)

    def serve_by_priority(self, project: int, version: str) -> None:
        if version not in self.model_versions(project):
            raise RuntimeError("400: model version has no predictions")
        self.sampling = {"sampling": "Uncertainty sampling", "model_version": version}

    def model_versions(self, project: int) -> dict[str, int]:
        counts: dict[str, int] = {}
        for p in self.predictions:
            counts[p["model_version"]] = counts.get(p["model_version"], 0) + 1
        return counts

    def delete_model_version(self, project: int, version: str, *, more=None) -> int:
        """Like Label Studio: one prediction per request while `more()` (all without it), and
        `deletes_per_call` at most; how many are left."""
        doomed = [i for i, p in enumerate(self.predictions) if p["model_version"] == version]
        if more is not None:
            n = 0
            while n < min(len(doomed), self.deletes_per_call) and more():
                n += 1
            doomed = doomed[:n]
        self.predictions = [p for i, p in enumerate(self.predictions) if i not in set(doomed)]
        return sum(p["model_version"] == version for p in self.predictions)

    def ml_backends(self, project: int) -> list[dict]:
        return [dict(b) for b in self.backends]

    def set_webhook_headers(self, project: int, urls: set[str], headers: dict[str, str]) -> int:
        changed = 0
        for hook in self.hooks:
            if (hook["project"] == project and hook["url"] in urls
                    and any(hook["headers"].get(k) != v for k, v in headers.items())):
                hook["headers"] = hook["headers"] | headers
                changed += 1
        return changed

    def retitle_backend(self, backend: dict, title: str) -> None:
        for b in self.backends:
            if b["id"] == backend["id"]:
                b["title"] = b["model_version"] = title

    def queue(self, version: str) -> list[int]:
        """Unlabelled tasks in the order Label Studio's uncertainty sampling would serve them."""
        labelled = {t["id"] for t in self.task_list if t["annotations"]}
        preds = [p for p in self.predictions
                 if p["model_version"] == version and p["task"] not in labelled]
        return [p["task"] for p in sorted(preds, key=lambda p: p["score"])]


# A label config asking two questions: the colour (single-choice) and tags (multiple-choice).
TWO_QUESTIONS = (
    '<View><Image name="img" value="$image"/><Choices name="colour" toName="img">'
    '<Choice value="red"/><Choice value="green"/><Choice value="blue"/></Choices>'
    '<Choices name="tags" toName="img" choice="multiple"><Choice value="warm"/>'
    '<Choice value="cool"/><Choice value="leafy"/></Choices></View>'
)
TAGS = {"red": ["warm"], "green": ["cool", "leafy"], "blue": ["cool"]}


def answer_both(fake_ls: FakeLabelStudio, n: int) -> None:
    """Ask TWO_QUESTIONS and annotate the first `n` tasks with their colour and TAGS."""
    fake_ls.config = TWO_QUESTIONS
    for t in fake_ls.task_list:
        ann = fake_ls.annotation(t["truth"], t["id"])
        ann["result"].append({"from_name": "tags", "to_name": "img", "type": "choices",
                              "value": {"choices": TAGS[t["truth"]]}})
        t["annotations"] = [ann] if t["id"] <= n else []
