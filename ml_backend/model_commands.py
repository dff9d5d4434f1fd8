"""Model commands of the CLI: export, import-model, predict.

Each writes its result somewhere new and moves it into place at the end (versions, export
folders, CSV files), so a command that fails halfway leaves the old state as it was.
"""

from __future__ import annotations

import csv
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ml_backend.ownership import marker
from ml_backend.runtime import Runtime
from model.backbone import Backbone, save_weights
from model.embeddings import embed_files
from model.export import (
    FORMATS,
    is_torchscript,
    read_labels,
    split_state_dict,
    split_torchscript,
    write_export,
)
from model.head import predict_proba
from model.images import IMAGE_SUFFIXES
from model.versions import ModelVersion

log = logging.getLogger(__name__)

def _version(rt: Runtime, project: int, name: str | None) -> ModelVersion:
    """Version `name`, or the serving one; a clear error when there is none."""
    store = rt.versions(project)
    name = name or store.serving()
    if name is None:
        raise ValueError(f"project {project} has no serving version yet (train or import one)")
    return store.load(name)


def _version_backbone(rt: Runtime, model: ModelVersion) -> Backbone:
    """The backbone `model` was trained on, refusing one that BACKBONE/WEIGHTS no longer give."""
    bb = rt.backbone_of(model.meta)
    want = model.meta.get("backbone_fingerprint")
    if want and bb.fingerprint != want:
        raise ValueError(
            f"{model.name} was trained on backbone {model.meta.get('backbone')} with other "
            f"weights (fingerprint {want}); BACKBONE={rt.settings.backbone} "
            f"WEIGHTS={rt.settings.weights} give {bb.fingerprint}: set them back to use it"
        )
    return bb


# -- export -----------------------------------------------------------------------------------


def export(rt: Runtime, project: int, out: Path, name: str | None = None,
           formats: Sequence[str] = FORMATS) -> dict:
    """Write a version (the serving one by default) as self-contained models in `formats`
    (ONNX, TorchScript) with labels.json, model.json, metrics.json and README.md into the new
    folder `out`, checked to answer as the live path does."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"{out} exists and is not an empty folder")
    model = _version(rt, project, name)
    bb = _version_backbone(rt, model)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        write_export(bb, model, tmp, formats)
        if out.exists():
            out.rmdir()
        os.rename(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if model.several_questions:
        answers = {"questions": {q.name: list(q.classes) for q in model.questions}}
    else:
        answers = {"classes": model.classes}
    return {"project": project, "version": model.name, "out": str(out), **answers,
            "files": sorted(p.name for p in out.iterdir())}


# -- import-model -----------------------------------------------------------------------------


def import_model(rt: Runtime, project: int, file: Path, labels: Path | None = None,
                 backbone: str | None = None) -> dict:
    """Make a classifier trained elsewhere version v<N> of `project` and serve it.

    Accepted: (1) a TorchScript file written by `export` (classes and backbone inside it;
    `--labels` may rename the classes); (2) a state dict (torch.save of `model.state_dict()`,
    optionally under a "state_dict" or "model" key, "module." prefixes allowed) of a
    torchvision classifier `models.get_model(BACKBONE, num_classes=K)` or, for the timm
    backbones, timm's `create_model` of the same architecture, with `--labels`
    naming its K outputs in order. Its last Linear layer becomes the head, the rest the
    project's backbone (saved under MODEL_DIR/backbones/); later retrains start from both.
    """
    file = Path(file)
    if not file.is_file():
        raise ValueError(f"{file} does not exist")
    names = read_labels(labels) if labels else None
    if is_torchscript(file):
        name, state, head, classes = split_torchscript(file)
        if backbone and backbone != name:
            raise ValueError(f"{file} holds a {name} backbone, not {backbone}")
        if names is not None:
            if len(names) != len(classes):
                raise ValueError(f"{file} has {len(classes)} classes, {labels} names {len(names)}")
            classes = names
    else:
        if names is None:
            raise ValueError("a state dict carries no class names: pass --labels labels.json")
        name = backbone or rt.settings.backbone
        state, head = split_state_dict(file, name, len(names), dropout=rt.settings.head_dropout)
        classes = names
    path = save_weights(rt.settings.model_dir / "backbones", name, state)
    bb = rt.load_backbone(name, str(path.relative_to(rt.settings.model_dir)))
    if head.config["dim"] != bb.dim:
        raise ValueError(f"the head takes {head.config['dim']} features, {name} gives {bb.dim}")
    meta = {
        "classes": classes, "n_labels": 0, "label_counts": {}, "metrics": None,
        "test_metrics": None, "project": project, "imported_from": str(file.resolve()),
        **rt.backbone_meta(bb),
        "promotion": {"promoted": True, "reason": "imported with import-model"},
        **marker(rt.settings),
    }
    store = rt.versions(project)
    version = store.save(head, meta, {})
    store.promote(version)
    log.info("project %s: imported %s as %s", project, file, version)
    return {"project": project, "version": version, "classes": classes, "backbone": name}


# -- predict ----------------------------------------------------------------------------------


def image_files(folder: Path) -> list[Path]:
    """Image files under `folder` (by suffix, recursively), in a stable order."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"{folder} is not a folder")
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES
                  and p.is_file())


def predict_folder(rt: Runtime, project: int, folder: Path, out: Path, name: str | None = None,
                   progress: bool | None = None) -> dict:
    """Classify every image under `folder` with the serving version into CSV `out`: path,
    label, score, then one probability column per class. A version answering several
    questions (or a multiple-choice one) writes per question its answer (labels joined by `|`,
    those at or above their thresholds for a multiple-choice question) and its probabilities,
    `<question>:<class>`. Unreadable files are reported on stderr in one line each and
    skipped."""
    model = _version(rt, project, name)
    bb = _version_backbone(rt, model)
    files = image_files(folder)
    if not files:
        raise ValueError(f"no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) under {folder}")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}-", dir=out.parent)
    done = skipped = 0
    try:
        # A file name that is not UTF-8 is written as its own bytes, as `ls` shows it.
        fh = os.fdopen(fd, "w", newline="", encoding="utf-8", errors="surrogateescape")
        with fh, tqdm(
            total=len(files), desc="predicting", unit="img",
            disable=None if progress is None else not progress,
        ) as bar:
            writer = csv.writer(fh)
            several = model.several_questions
            writer.writerow(_question_header(model) if several
                            else ["path", "label", "score", *model.classes])
            rows: list[tuple[Path, np.ndarray]] = []

            def flush() -> None:
                x = np.stack([v for _, v in rows])
                if several:
                    for path, cells in zip((p for p, _ in rows), _question_cells(model, x)):
                        writer.writerow([str(path), *cells])
                    rows.clear()
                    return
                probs = predict_proba(model.head, x)
                for (path, _), p in zip(rows, probs):
                    best = int(p.argmax())
                    writer.writerow([str(path), model.classes[best], f"{p[best]:.6f}",
                                     *(f"{v:.6f}" for v in p)])
                rows.clear()

            for path, vec, err in embed_files(bb, files, batch_size=rt.settings.batch_size):
                bar.update(1)
                if err is not None:
                    skipped += 1
                    tqdm.write(f"skipped {path}: {err}", file=sys.stderr)
                    continue
                rows.append((path, vec))
                done += 1
                if len(rows) >= 1024:
                    flush()
            if rows:
                flush()
        os.replace(tmp, out)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return {"version": model.name, "predicted": done, "skipped": skipped, "out": str(out)}


def _question_header(model: ModelVersion) -> list[str]:
    """path, then per question its answer column and one `<question>:<class>` column per
    class."""
    out = ["path"]
    for q in model.questions:
        out += [q.name, *(f"{q.name}:{c}" for c in q.classes)]
    return out


def _question_cells(model: ModelVersion, x: np.ndarray) -> list[list[str]]:
    """Per row of embeddings `x`, the cells `_question_header` names: what the version
    pre-annotates for each question (its own labels, its thresholds), and the probabilities."""
    qs = model.questions
    probs = model.probabilities(x, qs)
    said = model.answers(probs, qs, len(x))
    return [[cell for q in qs for cell in ("|".join(answers.get(q.name, ())),
                                            *(f"{v:.6f}" for v in probs[q.name][i]))]
            for i, answers in enumerate(said)]
