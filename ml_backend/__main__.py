"""Command line: `python -m ml_backend COMMAND`. Errors end in one line on stderr, exit 2."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import get_args

from pydantic import ValidationError

from ml_backend.settings import COLD_START_METHODS

# What the command line imports before it runs a command is kept light (no torch, no web
# framework): `--help` and a mistyped command answer at once.
# Libraries that log each HTTP request at INFO (a worker deleting old versions makes thousands).
CHATTY_LOGGERS = ("httpx", "httpcore", "urllib3", "label_studio_sdk")


def _runtime():
    """A command's runtime (a worker keeps its own, warm between jobs: `jobs.runtime`)."""
    from ml_backend.runtime import Runtime
    from ml_backend.settings import get_settings

    return Runtime(get_settings())


def _serve(args: argparse.Namespace) -> None:
    import uvicorn

    from ml_backend.server import create_app
    from ml_backend.settings import get_settings

    uvicorn.run(create_app(get_settings()), host=args.host, port=args.port,
                log_level=args.log_level.lower())


def _worker(args: argparse.Namespace) -> None:
    from redis import Redis
    from redis.exceptions import ConnectionError as RedisDown
    from rq import SimpleWorker

    from ml_backend import reconcile
    from ml_backend.jobs import runtime
    from ml_backend.settings import get_settings

    settings = get_settings()
    connection = Redis.from_url(settings.redis_url)
    connection.ping()  # a wrong REDIS_URL is a one-line error at start
    runtime().backbone  # load once, before the first job, so retrains start warm
    if not args.burst:
        reconcile.start(settings)  # catches what webhooks missed, now and every interval

    class Worker(SimpleWorker):
        stopping = False

        def request_stop(self, signum, frame):  # SIGTERM, SIGINT: RQ's warm shutdown
            self.stopping = True
            super().request_stop(signum, frame)

    while True:
        # Maintenance every minute, not RQ's ten: it is when a worker takes over the scheduler
        # that runs job retries after Redis or the worker that had it went away.
        worker = None
        try:
            worker = Worker(worker_queues(settings, args.queues), connection=connection,
                            maintenance_interval=60)
            worker.work(with_scheduler=True, burst=args.burst, logging_level=args.log_level)
        except RedisDown:
            if args.burst:
                raise
        if args.burst or (worker is not None and worker.stopping):
            return
        # RQ quits on a Redis outage outside its wait for jobs (a restart, a failover): outlive
        # it, as the server does, rather than leave the queue without workers.
        logging.getLogger(__name__).warning("the worker stopped unasked: starting it again "
                                            "once Redis answers")
        time.sleep(2)
        while not _redis_up(connection):
            time.sleep(2)


def _redis_up(connection) -> bool:
    from redis.exceptions import RedisError

    try:
        return bool(connection.ping())
    except RedisError:
        return False


def worker_queues(settings, given: str | None) -> list[str]:
    """`--queues a,b` as given; by default QUEUE_NAME, after GPU_QUEUE_NAME on a GPU machine."""
    if given:
        return [q.strip() for q in given.split(",") if q.strip()]
    from model.backbone import pick_device

    gpu = settings.gpu_queue_name and pick_device(settings.device).type == "cuda"
    return [settings.gpu_queue_name, settings.queue_name] if gpu else [settings.queue_name]


def _import_images(args: argparse.Namespace) -> None:
    from ml_backend.importer import run_import

    run_import(args.project, args.source, labels=args.labels, document_root=args.document_root)


def _reconcile(args: argparse.Namespace) -> None:
    from redis import Redis

    from ml_backend import reconcile
    from ml_backend.queueing import enqueuer
    from ml_backend.steps import StepContext
    from model.versions import projects

    rt = _runtime()
    ids = [args.project] if args.project else projects(rt.settings.model_dir)
    if not ids:
        print(f"No project known under {rt.settings.model_dir}; pass --project ID.")
    redis = Redis.from_url(rt.settings.redis_url)
    ctx = StepContext(enqueue_followup=enqueuer(redis, rt.settings))
    for project in ids:
        out = reconcile.check(rt, project, ctx)
        state = ("in step" if out["status"] == "in step"
                 else f"labels changed since the newest version: retrain {out['status']}")
        secured = out["webhooks_secured"]
        print(f"project {project}: {out['labels']} labels in Label Studio, {state}"
              + (f"; secured {secured} webhook(s)" if secured else ""))


def _seed(args: argparse.Namespace) -> None:
    from ml_backend.seeding import seed

    rt = _runtime()
    if args.dry_run:
        out = seed(rt, args.project, args.size, args.method, dry_run=True)
    else:
        with project_lock(rt.settings, args.project, "seed"):
            out = seed(rt, args.project, args.size, args.method)
    verb = "Would queue" if args.dry_run else "Queued"
    print(f"{verb} {len(out['chosen'])} tasks first in project {args.project} "
          f"(method {out['method']}, version {out['version']}, {out['labelled']} labelled):")
    for rank, (task, url) in enumerate(zip(out["chosen"], out["urls"]), 1):
        print(f"{rank:4d}. task {task}  {url}")
    if out["image_errors"]:
        print(f"{len(out['image_errors'])} images could not be loaded; they are served last.")


def _simulate(args: argparse.Namespace) -> None:
    from ml_backend.settings import get_settings
    from ml_backend.simulation import SimConfig, format_summary, simulate

    settings = get_settings()
    config = SimConfig(
        strategies=tuple(n.strip() for n in args.strategies.split(",") if n.strip()),
        seed_size=args.seed_size, batch=args.batch, budget=args.budget, repeats=args.repeats,
        test_fraction=args.test_fraction,
        seed=settings.seed if args.seed is None else args.seed,
        train=settings.train_config(), mc_passes=settings.mc_passes,
        label_uncertainty=settings.label_uncertainty, label_aggregate=settings.label_aggregate,
        question_weights=tuple(settings.question_weights.items()),
    )  # fmt: skip
    result = simulate(
        args.data, args.out, config, backbone=args.backbone or settings.backbone,
        weights=args.weights or settings.weights, device=settings.device, cache=args.cache,
        multiple=tuple(n.strip() for n in args.multiple.split(",") if n.strip()),
    )  # fmt: skip
    print(format_summary(result.summary))
    print(f"Wrote results.csv, summary.json and curve.png to {args.out}")


@contextmanager
def project_lock(settings, project: int, what: str) -> Iterator[None]:
    """The lock a worker's jobs take: a command that changes what a project serves never
    interleaves with a retrain (whichever switched last would win)."""
    from redis import Redis

    from ml_backend.queue_state import ProjectQueue

    redis = Redis.from_url(settings.redis_url)
    with ProjectQueue(redis, project).locked(settings.retrain_lock_ttl,
                                             settings.retrain_lock_wait, what):
        yield


def _rollback(args: argparse.Namespace) -> None:
    from ml_backend.steps import rollback

    rt = _runtime()
    with project_lock(rt.settings, args.project, "rollback"):
        out = rollback(rt, args.project, args.version)
    print(f"project {out['project']}: {out['serving']} serves now (was {out['was']}); "
          f"{out['pushed']} unlabelled tasks queued by it")


def _export(args: argparse.Namespace) -> None:
    from ml_backend.model_commands import export
    from model.export import FORMATS

    formats = FORMATS if args.format == "both" else (args.format,)
    out = export(_runtime(), args.project, args.out, args.version, formats)
    what = (", ".join(out["classes"]) if "classes" in out else
            "; ".join(f"{q}: {', '.join(c)}" for q, c in out["questions"].items()))
    print(f"exported project {out['project']} {out['version']} ({what}) "
          f"to {out['out']}: {', '.join(out['files'])}")


def _import(args: argparse.Namespace) -> None:
    from ml_backend.model_commands import import_model

    out = import_model(_runtime(), args.project, args.file, args.labels, args.backbone)
    print(f"project {out['project']}: imported as {out['version']} ({out['backbone']}; "
          f"{', '.join(out['classes'])}), serving it")


def _predict(args: argparse.Namespace) -> None:
    from ml_backend.model_commands import predict_folder

    out = predict_folder(_runtime(), args.project, args.dir, args.out, args.version)
    print(f"{out['version']}: wrote {out['predicted']} predictions to {out['out']}"
          + (f" ({out['skipped']} unreadable files skipped)" if out["skipped"] else ""))


def _finetune(args: argparse.Namespace) -> None:
    from ml_backend.finetuning import finetune
    from model.finetune import FinetuneConfig

    rt = _runtime()
    s = rt.settings
    config = FinetuneConfig(epochs=args.epochs or s.finetune_epochs,
                            loss=args.loss or s.finetune_loss,
                            sampler=args.sampler or s.finetune_sampler, seed=s.seed)
    with project_lock(s, args.project, "fine-tune"):
        tuned, out = finetune(rt, args.project, config=config, progress=True)
    verdict = (out.get("promotion") or {}).get("reason", "promoted")
    print(f"project {args.project}: fine-tuned backbone {tuned.fingerprint}; trained "
          f"{out.get('version')}: {verdict}")


def _add_model_commands(sub: argparse._SubParsersAction) -> None:
    from ml_backend.settings import Settings

    p = sub.add_parser("rollback", help="serve an earlier version again")
    p.add_argument("--project", type=int, required=True)
    p.add_argument("version", help="version to serve, e.g. v3")
    p.set_defaults(func=_rollback)

    p = sub.add_parser("export", help="write a version as a self-contained model (ONNX and "
                       "TorchScript)")
    p.add_argument("--project", type=int, required=True)
    p.add_argument("--out", type=Path, required=True, help="new (or empty) folder to write")
    p.add_argument("--version", help="version to export (default: the serving one)")
    p.add_argument("--format", choices=("onnx", "torchscript", "both"), default="both",
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

    fields = Settings.model_fields
    p = sub.add_parser("finetune", help="fine-tune the backbone on the project's labels now")
    p.add_argument("--project", type=int, required=True)
    p.add_argument("--epochs", type=int, help="default: FINETUNE_EPOCHS")
    p.add_argument("--loss", choices=get_args(fields["finetune_loss"].annotation),
                   help="default: FINETUNE_LOSS")
    p.add_argument("--sampler", choices=get_args(fields["finetune_sampler"].annotation),
                   help="default: FINETUNE_SAMPLER")
    p.set_defaults(func=_finetune)


def setup_logging(level: str) -> None:
    """LEVEL for the backend's own lines (one per job step, with its time); libraries that log
    every HTTP request only from WARNING on (at DEBUG, everything)."""
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    quiet = max(logging.WARNING, logging.getLevelName(level)) if level != "DEBUG" else level
    for name in CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(quiet)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ml_backend", description=__doc__)
    parser.add_argument("--log-level", default=None, help="overrides LOG_LEVEL")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="run the HTTP server Label Studio connects to")
    p.add_argument("--host", default="0.0.0.0")
    p.add_argument("--port", type=int, default=9090)
    p.set_defaults(func=_serve)

    p = sub.add_parser("worker", help="run an RQ worker that retrains models")
    p.add_argument("--burst", action="store_true", help="exit when the queue is empty")
    p.add_argument("--queues", default=None, help="comma-separated RQ queues, in priority "
                   "order (default: QUEUE_NAME, after GPU_QUEUE_NAME on a GPU machine)")
    p.set_defaults(func=_worker)

    p = sub.add_parser("seed", help="choose the first tasks to label in a new project")
    p.add_argument("--project", type=int, required=True)
    p.add_argument("--size", type=int, required=True, help="how many tasks to queue first")
    p.add_argument("--method", default="auto", choices=COLD_START_METHODS)
    p.add_argument("--dry-run", action="store_true", help="print the choice, change nothing")
    p.set_defaults(func=_seed)

    p = sub.add_parser("simulate", help="compare strategies offline on a labelled image folder "
                       "or a CSV of images answering one or more questions")
    p.add_argument("--data", type=Path, required=True, help="one subfolder of images per "
                   "class, or a CSV: an image column and one column per question (cat|dog: "
                   "several labels)")
    p.add_argument("--multiple", default="", help="a CSV's multiple-choice questions, comma-"
                   "separated (a column with a | in a cell is one anyway)")
    p.add_argument("--out", type=Path, required=True, help="folder for the CSV, summary, plot")
    p.add_argument("--strategies", default="auto,margin,entropy,kcenter,random")
    p.add_argument("--seed-size", type=int, default=20, help="labels chosen before any model")
    p.add_argument("--batch", type=int, default=20, help="labels added per round")
    p.add_argument("--budget", type=int, default=None,
                   help="labels at the end (default: seed size + 20 batches)")
    p.add_argument("--repeats", type=int, default=3, help="test splits to average over")
    p.add_argument("--test-fraction", type=float, default=0.2)
    p.add_argument("--backbone", default=None, help="overrides BACKBONE")
    p.add_argument("--weights", default=None, help="overrides WEIGHTS")
    p.add_argument("--seed", type=int, default=None, help="overrides SEED")
    p.add_argument("--cache", type=Path, default=None, help="embedding cache (default OUT/cache)")
    p.set_defaults(func=_simulate)

    p = sub.add_parser("reconcile", help="queue a retrain where Label Studio's labels differ "
                       "from those of the newest version")
    p.add_argument("--project", type=int, default=None, help="default: every known project")
    p.set_defaults(func=_reconcile)

    p = sub.add_parser("import-images", help="import images (and known labels) into a project")
    p.add_argument("--project", type=int, required=True)
    p.add_argument("source", nargs="+", help="a folder (flat, or one subfolder per class), "
                   "image files, or a CSV of image paths or URLs with an optional label column")
    p.add_argument("--labels", action="store_true",
                   help="also import the known labels (class folders, CSV column) as annotations")
    p.add_argument("--document-root", type=Path, default=None, help="Label Studio's "
                   "LOCAL_FILES_DOCUMENT_ROOT (default: the setting of that name); files under "
                   "it are served by Label Studio, others are uploaded")
    p.set_defaults(func=_import_images)

    _add_model_commands(sub)
    args = parser.parse_args(argv)
    try:
        from ml_backend.settings import get_settings

        settings = get_settings()
        args.log_level = (args.log_level or settings.log_level).upper()
        setup_logging(args.log_level)
        args.func(args)
    except ValidationError as exc:
        first = exc.errors()[0]
        print(f"error: setting {first['loc'][0]}: {first['msg']}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # one line for the user; the log has the rest at DEBUG
        logging.getLogger(__name__).debug("command failed", exc_info=True)
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
