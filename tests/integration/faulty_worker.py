"""`python -m tests.integration.faulty_worker worker`: the real worker, except that one step of
publishing a version fails once when the file named by FAULT_FILE names it (the file is removed
as the fault fires, so the job's retry runs clean):

- `after save`: the version is written, then the job fails (nothing pushed);
- `during push`: half of the predictions are imported, then the import fails;
- `before switch`: Label Studio's switch to the new version fails;
- `after switch`: the switch is made, then the job fails (the backend's title not yet changed);
- `during pruning`: deleting an old version's predictions fails.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from ml_backend.labelstudio import LabelStudioClient
from model.versions import VersionStore


def armed(step: str) -> bool:
    """Whether the fault of `step` fires now (at most once)."""
    path = Path(os.environ["FAULT_FILE"])
    try:
        if path.read_text().strip() != step:
            return False
        path.unlink()
    except FileNotFoundError:
        return False
    return True


def fail(step: str) -> None:
    raise ConnectionError(f"injected fault: {step}")


def patch(cls, name: str, wrapper) -> None:
    real = getattr(cls, name)
    setattr(cls, name, lambda self, *a, **kw: wrapper(real, self, *a, **kw))


def save(real, self, *args, **kwargs):
    name = real(self, *args, **kwargs)
    if armed("after save"):
        fail("after save")
    return name


def import_predictions(real, self, project, predictions, *args, **kwargs):
    if armed("during push"):
        real(self, project, predictions[: len(predictions) // 2], *args, **kwargs)
        fail("during push")
    return real(self, project, predictions, *args, **kwargs)


def serve_by_priority(real, self, *args, **kwargs):
    if armed("before switch"):
        fail("before switch")
    real(self, *args, **kwargs)
    if armed("after switch"):
        fail("after switch")


def delete_model_version(real, self, *args, **kwargs):
    if armed("during pruning"):
        fail("during pruning")
    return real(self, *args, **kwargs)


patch(VersionStore, "save", save)
patch(LabelStudioClient, "import_predictions", import_predictions)
patch(LabelStudioClient, "serve_by_priority", serve_by_priority)
patch(LabelStudioClient, "delete_model_version", delete_model_version)

if __name__ == "__main__":
    from ml_backend.__main__ import main

    sys.exit(main(sys.argv[1:]))
