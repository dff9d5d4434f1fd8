from redis import Redis
from rq import Queue, SimpleWorker

from ml_backend import jobs
from ml_backend.queue_state import ProjectQueue
from ml_backend.queueing import enqueue_retrain
from ml_backend.steps import retrain


def test_retrain_trains_a_version_from_label_studio_state(runtime, fake_ls):
    result = retrain(runtime, 1)
    assert result["version"] == "v1" and result["n_labels"] == 12
    store = runtime.versions(1)
    assert store.serving() == "v1"
    meta = store.meta("v1")
    assert meta["label_counts"] == {"red": 4, "green": 4, "blue": 4}
    assert meta["metrics"]["n"] == meta["n_heldout"] > 0


def test_retrain_ignores_skips_and_reports_unknown_labels(runtime, fake_ls):
    fake_ls.task_list[0]["annotations"] = [fake_ls.annotation("red", 1, cancelled=True)]
    fake_ls.task_list[1]["annotations"] = [fake_ls.annotation("purple", 2)]
    result = retrain(runtime, 1)
    assert result["n_labels"] == 10
    skipped = runtime.versions(1).meta("v1")["skipped"]
    assert skipped["skipped"] == 1 and any("purple" in k for k in skipped)


def test_retrain_with_no_labels_writes_no_version(runtime, fake_ls):
    for task in fake_ls.task_list:
        task["annotations"] = []
    assert retrain(runtime, 1)["version"] is None
    assert runtime.versions(1).names() == []


def test_unloadable_labelled_images_are_left_out_not_fatal(runtime, fake_ls):
    fake_ls.images[fake_ls.task_list[0]["data"]["image"]] = b"corrupt"
    assert retrain(runtime, 1)["n_labels"] == 11


def test_a_burst_of_webhooks_enqueues_one_retrain(settings):
    redis = Redis.from_url(settings.redis_url)
    outcomes = [enqueue_retrain(redis, settings, 5, "ANNOTATION_CREATED")["status"]
                for _ in range(5)]
    assert outcomes == ["queued"] + ["coalesced"] * 4
    assert Queue(settings.queue_name, connection=redis).count == 1
    # Another project is independent.
    assert enqueue_retrain(redis, settings, 6, "START_TRAINING")["status"] == "queued"


class AnnotatorsMeanwhile:
    """The stand-in's task listing, with annotators submitting while the first retrain reads
    it: webhooks arrive, and a label is added after the read."""

    def __init__(self, fake_ls, redis, settings):
        self.fake_ls, self.redis, self.settings = fake_ls, redis, settings
        self.seen: list[str] = []
        self.real = fake_ls.labelling_tasks

    def __call__(self, project, **kw):
        tasks = self.real(project, **kw)
        if not self.seen:
            self.seen.extend(enqueue_retrain(self.redis, self.settings, 1,
                                             "ANNOTATION_CREATED")["status"] for _ in range(4))
            self.fake_ls.task_list[4]["annotations"] = [self.fake_ls.annotation("red", 5)]
        return tasks


def test_webhooks_during_a_running_retrain_lead_to_exactly_one_follow_up(settings, fake_ls,
                                                                        worker_runtime):
    redis = Redis.from_url(settings.redis_url)
    queue = Queue(settings.queue_name, connection=redis)
    meanwhile = AnnotatorsMeanwhile(fake_ls, redis, settings)
    fake_ls.labelling_tasks = meanwhile
    enqueue_retrain(redis, settings, 1, "ANNOTATION_CREATED")
    SimpleWorker([queue], connection=redis).work(burst=True)
    assert meanwhile.seen == ["queued", "coalesced", "coalesced", "coalesced"]
    assert worker_runtime.versions(1).names() == ["v1", "v2"]
    state = ProjectQueue(redis, 1)
    history = state.history()
    assert [h["status"] for h in history] == ["finished", "finished"]
    assert history[0]["version"] == "v2" and history[0]["seconds"] >= 0
    assert not state.is_locked() and not state.is_pending("retrain")


def test_a_failed_retrain_is_recorded_and_releases_the_lock(settings, worker_runtime, fake_ls):
    redis = Redis.from_url(settings.redis_url)
    fake_ls.config = "<View/>"
    job = Queue(settings.queue_name, connection=redis).enqueue(jobs.retrain, 1, "test")
    SimpleWorker([Queue(settings.queue_name, connection=redis)], connection=redis).work(
        burst=True)
    assert job.get_status(refresh=True) in ("failed", "scheduled")
    entry = ProjectQueue(redis, 1).history()[0]
    assert entry["status"] == "failed" and "UnsupportedConfig" in entry["error"]
    assert not ProjectQueue(redis, 1).is_locked()


def test_a_retrain_logs_one_timed_line_per_step(runtime, caplog):
    caplog.set_level("INFO", logger="ml_backend")
    retrain(runtime, 1)
    steps = [r.getMessage() for r in caplog.records if r.name == "ml_backend.steps"]
    for step in ("read pool", "train candidate", "publish order", "switch to v1"):
        assert any(m.startswith(f"project 1: {step} in ") and " s" in m for m in steps), steps


def test_http_libraries_log_requests_only_at_debug():
    import logging

    from ml_backend.__main__ import CHATTY_LOGGERS, setup_logging

    try:
        setup_logging("INFO")
        assert all(logging.getLogger(n).getEffectiveLevel() == logging.WARNING
                   for n in CHATTY_LOGGERS)
        setup_logging("DEBUG")
        assert logging.getLogger("httpx").getEffectiveLevel() == logging.DEBUG
    finally:
        for name in CHATTY_LOGGERS:
            logging.getLogger(name).setLevel(logging.NOTSET)
