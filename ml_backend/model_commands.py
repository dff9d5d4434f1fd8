"""Model commands of the CLI: rollback, export, import-model, predict, finetune.

Each writes its result somewhere new and moves it into place at the end (versions, export
folders, CSV files), so a command that fails halfway leaves the old state as it was.
"""

from __future__ import annotations

import argparse
import csv
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ml_backend import jobs, priorities
from ml_backend.runtime import Runtime
from ml_backend.settings import get_settings
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
from model.finetune import LOSSES, SAMPLERS, FinetuneConfig, finetune
from model.head import predict_proba
from model.images import decode_image
from model.training import TRAIN, assign_roles
from model.versions import ModelVersion

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def _runtime() -> Runtime:
    return Runtime(get_settings())


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


# -- rollback ---------------------------------------------------------------------------------


def rollback(rt: Runtime, project: int, name: str) -> dict:
    """Serve version `name` again and make Label Studio's queue follow it; the versions
    themselves are never changed or deleted.

    As after a retrain: its predictions for every unlabelled task first (replacing any it had,
    which may be stale), then the pointer /setup reads, then the switch and the backend's title.
    """
    store = rt.versions(project)
    before = store.serving()
    model = store.load(name)  # refuses unknown names and unreadable heads before anything changes
    config, pool = jobs.read_pool(rt, project)
    queue = jobs.push_order(rt, project, pool, config, model, replace=True)
    store.promote(name)
    store.update_meta(name, rolled_back_at=time.time(), rolled_back_from=before)
    queue |= priorities.switch(rt, project, name)
    log.info("project %s: rolled back from %s to %s", project, before, name)
    return {"project": project, "serving": name, "was": before, "pushed": queue["pushed"]}


def _rollback(args: argparse.Namespace) -> None:
    out = rollback(_runtime(), args.project, args.version)
    print(f"project {out['project']}: {out['serving']} serves now (was {out['was']}); "
          f"{out['pushed']} unlabelled tasks queued by it")


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
    return {"project": project, "version": model.name, "out": str(out), "classes": model.classes,
            "files": sorted(p.name for p in out.iterdir())}


def _export(args: argparse.Namespace) -> None:
    formats = FORMATS if args.format == "both" else (args.format,)
    out = export(_runtime(), args.project, args.out, args.version, formats)
    print(f"exported project {out['project']} {out['version']} ({', '.join(out['classes'])}) "
          f"to {out['out']}: {', '.join(out['files'])}")


# -- import-model -----------------------------------------------------------------------------


def import_model(rt: Runtime, project: int, file: Path, labels: Path | None = None,
                 backbone: str | None = None) -> dict:
    """Make a classifier trained elsewhere version v<N> of `project` and serve it.

    Accepted: (1) a TorchScript file written by `export` (classes and backbone inside it;
    `--labels` may rename the classes); (2) a state dict (torch.save of `model.state_dict()`,
    optionally under a "state_dict" or "model" key, "module." prefixes allowed) of a
    torchvision classifier `models.get_model(BACKBONE, num_classes=K)`, with `--labels`
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
    }
    store = rt.versions(project)
    version = store.save(head, meta, {})
    store.promote(version)
    log.info("project %s: imported %s as %s", project, file, version)
    return {"project": project, "version": version, "classes": classes, "backbone": name}


def _import(args: argparse.Namespace) -> None:
    out = import_model(_runtime(), args.project, args.file, args.labels, args.backbone)
    print(f"project {out['project']}: imported as {out['version']} ({out['backbone']}; "
          f"{', '.join(out['classes'])}), serving it")


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
    label, score, then one probability column per class. Unreadable files are reported on
    stderr in one line each and skipped."""
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
        with os.fdopen(fd, "w", newline="") as fh, tqdm(
            total=len(files), desc="predicting", unit="img",
            disable=None if progress is None else not progress,
        ) as bar:
            writer = csv.writer(fh)
            writer.writerow(["path", "label", "score", *model.classes])
            rows: list[tuple[Path, np.ndarray]] = []

            def flush() -> None:
                probs = predict_proba(model.head, np.stack([v for _, v in rows]))
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


def _predict(args: argparse.Namespace) -> None:
    out = predict_folder(_runtime(), args.project, args.dir, args.out, args.version)
    print(f"{out['version']}: wrote {out['predicted']} predictions to {out['out']}"
          + (f" ({out['skipped']} unreadable files skipped)" if out["skipped"] else ""))


# -- finetune ---------------------------------------------------------------------------------


class _TaskImages(Sequence):
    """Images of tasks, fetched and decoded when the fine-tuning loop asks for them."""

    def __init__(self, rt: Runtime, urls: list[str], target: int):
        self.rt, self.urls, self.target = rt, urls, target

    def __len__(self) -> int:
        return len(self.urls)

    def __getitem__(self, i):
        return decode_image(self.rt.labelstudio.fetch_image(self.urls[i]), target=self.target)


def finetune_backbone(rt: Runtime, project: int, config: FinetuneConfig,
                      progress: bool | None = None) -> Backbone:
    """Fine-tune the project's backbone on its training tasks (never the held-out ones, which
    judge the result) and return the new backbone, saved under MODEL_DIR/backbones/."""
    from ml_backend.jobs import read_pool

    s = rt.settings
    label_config, pool = read_pool(rt, project)
    bb = rt.backbone_for(project)
    known = rt.store(project, bb).task_vectors({t: pool.urls[t] for t in pool.labels})
    tasks = [t for t in pool.labels if t in known]  # images that loaded before
    roles = assign_roles(tasks, [pool.data[t].get(s.split_field) for t in tasks],
                         fraction=s.holdout_fraction, seed=s.seed)
    train = [t for t, r in zip(tasks, roles) if r == TRAIN]
    if len(train) < 2:
        raise ValueError(f"project {project}: too few labelled tasks to fine-tune on "
                         "(retrain first, so their images are known to load)")
    classes = list(label_config.classes)
    labels = [classes.index(pool.labels[t]) for t in train]
    images = _TaskImages(rt, [pool.urls[t] for t in train], bb.resize_size)
    state = finetune(bb, images, labels, config, progress=progress)
    path = save_weights(s.model_dir / "backbones", bb.name, state)
    return rt.load_backbone(bb.name, str(path.relative_to(s.model_dir)))


def _finetune(args: argparse.Namespace) -> None:
    from ml_backend.jobs import _retrain, runtime

    rt = runtime()
    s = rt.settings
    config = FinetuneConfig(epochs=args.epochs or s.finetune_epochs,
                            loss=args.loss or s.finetune_loss,
                            sampler=args.sampler or s.finetune_sampler, seed=s.seed)
    tuned = finetune_backbone(rt, args.project, config, progress=True)
    with rt.candidate_backbone(args.project, tuned):
        out = _retrain(rt, args.project)
    verdict = (out.get("promotion") or {}).get("reason", "promoted")
    print(f"project {args.project}: fine-tuned backbone {tuned.fingerprint}; trained "
          f"{out.get('version')}: {verdict}")


# -- registration -----------------------------------------------------------------------------


def register(sub: argparse._SubParsersAction) -> None:
    """Add the model commands to the CLI's subcommands."""
    p = sub.add_parser("rollback", help="serve an earlier version again")
    p.add_argument("--project", type=int, required=True)
    p.add_argument("version", help="version to serve, e.g. v3")
    p.set_defaults(func=_rollback)

    p = sub.add_parser("export", help="write a version as a self-contained model (ONNX and "
                       "TorchScript)")
    p.add_argument("--project", type=int, required=True)
    p.add_argument("--out", type=Path, required=True, help="new (or empty) folder to write")
    p.add_argument("--version", help="version to export (default: the serving one)")
    p.add_argument("--format", choices=(*FORMATS, "both"), default="both",
                   help="model file(s) to write: model.onnx, model.pt or both (default)")
    p.set_defaults(func=_export)

    p = sub.add_parser("import-model", help="start a project from your own trained classifier")
    p.add_argument("--project", type=int, required=True)
    p.add_argument("file", type=Path, help="TorchScript file from export, or a torchvision "
                   "classifier's state dict")
    p.add_argument("--labels", type=Path, help="JSON list of class names in output order "
                   "(required for a state dict)")
    p.add_argument("--backbone", help="architecture of a state dict (default: BACKBONE)")
    p.set_defaults(func=_import)

    p = sub.add_parser("predict", help="classify a folder of images into a CSV file")
    p.add_argument("--project", type=int, required=True)
    p.add_argument("dir", type=Path, help="folder of images (searched recursively)")
    p.add_argument("--out", type=Path, required=True, help="CSV file to write")
    p.add_argument("--version", help="version to use (default: the serving one)")
    p.set_defaults(func=_predict)

    p = sub.add_parser("finetune", help="fine-tune the backbone on the project's labels now")
    p.add_argument("--project", type=int, required=True)
    p.add_argument("--epochs", type=int, help="default: FINETUNE_EPOCHS")
    p.add_argument("--loss", choices=LOSSES, help="default: FINETUNE_LOSS")
    p.add_argument("--sampler", choices=SAMPLERS, help="default: FINETUNE_SAMPLER")
    p.set_defaults(func=_finetune)
