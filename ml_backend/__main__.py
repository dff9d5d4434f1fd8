"""Command line: `python -m ml_backend COMMAND`. Errors end in one line on stderr, exit 2."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from pydantic import ValidationError

from ml_backend.seeding import COLD_START_METHODS, seed


def _serve(args: argparse.Namespace) -> None:
    import uvicorn

    from ml_backend.server import create_app
    from ml_backend.settings import get_settings

    uvicorn.run(create_app(get_settings()), host=args.host, port=args.port,
                log_level=args.log_level.lower())


def _worker(args: argparse.Namespace) -> None:
    from redis import Redis
    from rq import SimpleWorker

    from ml_backend import reconcile
    from ml_backend.jobs import runtime
    from ml_backend.settings import get_settings

    settings = get_settings()
    connection = Redis.from_url(settings.redis_url)
    connection.ping()
    runtime().backbone  # load once, before the first job, so retrains start warm
    if not args.burst:
        reconcile.start(settings)  # catches what webhooks missed, now and every interval
    # Maintenance every minute, not RQ's ten: it is when a worker takes over the scheduler that
    # runs job retries after Redis or the worker that had it went away.
    worker = SimpleWorker(worker_queues(settings, args.queues), connection=connection,
                          maintenance_interval=60)
    worker.work(with_scheduler=True, burst=args.burst, logging_level=args.log_level)


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
    from ml_backend.jobs import runtime
    from model.versions import projects

    rt = runtime()
    ids = [args.project] if args.project else projects(rt.settings.model_dir)
    if not ids:
        print(f"No project known under {rt.settings.model_dir}; pass --project ID.")
    redis = Redis.from_url(rt.settings.redis_url)
    for project in ids:
        out = reconcile.check(rt, redis, project)
        state = ("in step" if out["status"] == "in step"
                 else f"labels changed since the newest version: retrain {out['status']}")
        secured = out["webhooks_secured"]
        print(f"project {project}: {out['labels']} labels in Label Studio, {state}"
              + (f"; secured {secured} webhook(s)" if secured else ""))


def _seed(args: argparse.Namespace) -> None:
    from ml_backend.jobs import runtime

    out = seed(runtime(), args.project, args.size, args.method, dry_run=args.dry_run)
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
    )  # fmt: skip
    result = simulate(
        args.data, args.out, config, backbone=args.backbone or settings.backbone,
        weights=args.weights or settings.weights, device=settings.device, cache=args.cache,
    )  # fmt: skip
    print(format_summary(result.summary))
    print(f"Wrote results.csv, summary.json and curve.png to {args.out}")


def _demo(args: argparse.Namespace) -> None:
    from ml_backend.demo import run

    run(host=args.host, port=args.port, ls_port=args.ls_port, data=args.data_dir)


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

    p = sub.add_parser("simulate", help="compare strategies offline on a labelled image folder")
    p.add_argument("--data", type=Path, required=True, help="one subfolder of images per class")
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

    p = sub.add_parser("demo", help="Redis, Label Studio, the server and a worker, with a "
                       "sample project (IMAGES=DIR for your own images)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=9090, help="the backend's port")
    p.add_argument("--ls-port", type=int, default=8080, help="Label Studio's port")
    p.add_argument("--data-dir", type=Path, default=Path("data/demo"),
                   help="everything the demo keeps; a second run reuses it")
    p.set_defaults(func=_demo)

    from ml_backend.model_commands import register as register_model_commands

    register_model_commands(sub)  # rollback, export, import-model, predict, finetune
    args = parser.parse_args(argv)
    try:
        from ml_backend.settings import get_settings

        settings = get_settings()
        args.log_level = (args.log_level or settings.log_level).upper()
        logging.basicConfig(
            level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
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
