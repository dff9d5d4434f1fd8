"""The status page a person opens: the queue in words, labels counted where Label Studio keeps
them, a learning curve that says how little its early points rest on, blank metrics explained,
per-class precision/recall and the confusion matrix of the serving version, checked in
headless Chromium."""

import io
import re
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from redis import Redis
from rq import Queue, SimpleWorker

from ml_backend import steps
from ml_backend.queue_state import ProjectQueue
from ml_backend.queueing import enqueue_retrain
from ml_backend.runtime import Runtime
from ml_backend.server import create_app
from ml_backend.status_charts import wilson
from tests.browser import chromium, served

CURVE_BLUE = np.array([0x1F, 0x77, 0xB4])


def colour_pixels(png: bytes, rgb, tol: int = 30) -> int:
    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    return int((np.abs(pixels - np.array(rgb)).sum(axis=2) < tol).sum())


def label_first(fake_ls, n: int) -> None:
    for t in fake_ls.task_list:
        t["annotations"] = [fake_ls.annotation(t["truth"], t["id"])] if t["id"] <= n else []


@pytest.fixture
def app(settings, runtime, fake_ls):
    # 6 labels: nothing held out; then 12 and 18 labels with a few held-out tasks each.
    for n in (6, 12, 18):
        label_first(fake_ls, n)
        steps.retrain(runtime, 1)
    return create_app(settings, runtime)


def test_wilson_interval_is_wide_on_few_tasks_and_narrow_on_many():
    low, high = wilson(0, 3)
    assert low == 0 and 0.5 < high < 0.6  # 0 of 3 right is compatible with 56% accuracy
    low, high = wilson(3, 3)
    assert 0.4 < low < 0.5 and high == 1
    low, high = wilson(900, 1000)
    assert 0.87 < low < 0.9 < high < 0.92


def test_the_status_explains_blank_metrics_and_counts_held_out_tasks(app):
    status = TestClient(app).get("/status/1").json()
    first, last = status["versions"][0], status["versions"][-1]
    assert first["metrics"] is None and first["n_heldout"] == 0
    assert "below 10 labels" in first["metrics_note"]
    assert last["n_heldout"] == last["metrics"]["n"] > 0 and last["metrics_note"] is None
    assert last["label_counts"] == {"red": 6, "green": 6, "blue": 6}
    page = TestClient(app).get("/").text
    assert "below 10 labels every label is used for training" in page
    assert "Accuracy (95% CI)" in page and "read these as rough" in page


def test_labels_are_what_label_studio_holds_not_what_the_newest_version_saw(
        settings, runtime, fake_ls):
    label_first(fake_ls, 12)
    steps.retrain(runtime, 1)
    label_first(fake_ls, 14)  # two submits the worker has not trained on yet
    client = TestClient(create_app(settings, runtime))
    status = client.get("/status/1").json()
    assert (status["labels"], status["labels_trained"], status["labels_serving"]) == (14, 12, 12)
    page = client.get("/").text
    assert "<b>2</b> not in a version yet" in page
    assert "Label Studio holds <b>14</b> labelled tasks; the serving version was trained on " \
        "<b>12</b> of them" in page


def test_the_page_says_what_the_running_job_is_doing_in_words(settings, fake_ls,
                                                              worker_runtime):
    """Asked while a worker's retrain trains (its first image fetch) and after it ended."""
    client = TestClient(create_app(settings, worker_runtime))
    seen, lock = [], threading.Lock()
    fetch = fake_ls.fetch_image

    def fetch_and_look(url):
        with lock:  # images are fetched in threads
            if not seen:
                seen.append(client.get("/status/1").json()["queue"])
        return fetch(url)

    fake_ls.fetch_image = fetch_and_look
    conn = Redis.from_url(settings.redis_url)
    enqueue_retrain(conn, settings, 1, "ANNOTATION_CREATED")
    SimpleWorker([Queue(settings.queue_name, connection=conn)], connection=conn).work(burst=True)
    [during] = seen
    assert during["doing"] == "training a version on 12 labels"
    assert re.fullmatch(r"retrain running since \d+ s \(ANNOTATION_CREATED\): "
                        r"training a version on 12 labels", during["summary"][0]), during
    after = client.get("/status/1").json()["queue"]
    assert after["doing"] is None and after["summary"] == ["idle: nothing running or queued"]


def test_label_studio_down_leaves_the_label_count_unknown_not_the_page(
        settings, runtime, fake_ls):
    steps.retrain(runtime, 1)
    fake_ls.down = True
    client = TestClient(create_app(settings, runtime))
    status = client.get("/status/1").json()
    assert status["labels"] is None and "Label Studio unreachable" in status["labels_error"]
    assert status["serving_version"] == "v1"
    assert "labelled tasks in Label Studio unknown" in client.get("/").text


def test_the_queue_is_described_in_words_and_counts_the_gpu_queue(settings, fake_ls, redis_url):
    settings = settings.model_copy(update={"gpu_queue_name": "al-gpu", "retrain_every": 5})
    runtime = Runtime(settings, labelstudio=fake_ls)
    steps.retrain(runtime, 1)
    conn = Redis.from_url(redis_url)
    conn.set(ProjectQueue(conn, 1).pending_key(), "ANNOTATION_CREATED")
    conn.set(ProjectQueue(conn, 1).pending_key("prune"), "old versions left")
    conn.set(ProjectQueue(conn, 1).annotations_key, 7)
    conn.set(ProjectQueue(conn, 1).lock_key, "held")
    Queue("al-gpu", connection=conn).enqueue(time.sleep, 0)
    Queue(settings.queue_name, connection=conn).enqueue(time.sleep, 0)
    client = TestClient(create_app(settings, runtime))
    queue = client.get("/status/1").json()["queue"]
    assert queue["queued_jobs"] == 2 and queue["retrain_pending"] and queue["running"]
    assert queue["summary"] == [
        "a job holds the project's lock (running)",
        "a retrain is queued (ANNOTATION_CREATED)",
        "deleting old prediction versions",
        "2 of 5 annotations counted toward the next retrain",
        f"2 jobs waiting for a worker ({settings.queue_name}: 1, al-gpu: 1; all projects)",
    ]
    page = client.get("/").text
    assert "deleting old prediction versions" in page and "retrain_pending" not in page


def test_a_running_job_is_named_with_how_long_it_has_run(settings, runtime, redis_url):
    conn = Redis.from_url(redis_url)
    Queue(settings.queue_name, connection=conn).enqueue(
        time.sleep, 30, job_id="retrain-1-0123abcd")
    conn.set(ProjectQueue(conn, 1).lock_key, "held")
    worker = subprocess.Popen(
        [sys.executable, "-c", "from rq.cli import main; main()", "worker", "--burst",
         "--url", redis_url, settings.queue_name],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        client = TestClient(create_app(settings, runtime))
        deadline = time.monotonic() + 60
        # RQ lists a job as started a moment before it records the start time: wait for both.
        while not (seconds := re.fullmatch(
                r"retrain running since (\d+) s",
                (summary := client.get("/status/1").json()["queue"]["summary"])[0])):
            assert time.monotonic() < deadline, summary
            time.sleep(0.2)
        assert int(seconds[1]) < 30, summary  # the job sleeps 30 s
    finally:
        worker.kill()
        worker.wait()


def test_the_page_in_headless_chromium_shows_curve_per_class_table_and_confusion(
        app, redis_url, tmp_path):
    conn = Redis.from_url(redis_url)
    conn.set(ProjectQueue(conn, 1).pending_key(), "ANNOTATION_CREATED")
    ProjectQueue(conn, 1).record({
        "kind": "retrain", "status": "failed", "reason": "START_TRAINING",
        "started_at": time.time() - 60, "seconds": 1.5,
        "error": "RuntimeError: project 1: no labelled image could be loaded"})
    page = TestClient(app).get("/").text
    assert "table class='confusion'" in page and "<th>Precision</th>" in page
    assert "a retrain is queued (ANNOTATION_CREATED)" in page
    shot = tmp_path / "status.png"
    with served(app) as url:
        chromium(tmp_path / "profile", "1200,1900", f"--screenshot={shot}", url + "/")
    png = shot.read_bytes()
    assert colour_pixels(png, CURVE_BLUE) > 200  # the curve, its points and the bars
    assert colour_pixels(png, (0xD6, 0x27, 0x28)) > 20  # the serving version's red ring
    # The interval band: the curve's blue at 12% over white.
    assert colour_pixels(png, (226, 236, 244), tol=12) > 500
    assert colour_pixels(png, (0xFD, 0xE2, 0xE2), tol=6) > 500  # the failed job's row



def test_several_questions_get_a_curve_each_and_per_question_tables(settings, tmp_path):
    from ml_backend.status_charts import QUESTION_COLOURS, question_curves
    from tests.unit.fakes import FakeLabelStudio, answer_both

    fake_ls = FakeLabelStudio(n_per_class=10)
    runtime = Runtime(settings, labelstudio=fake_ls)
    for n in (12, 21, 30):
        answer_both(fake_ls, n)
        steps.retrain(runtime, 1)
    client = TestClient(create_app(settings, runtime))
    status = client.get("/status/1").json()
    last = status["versions"][-1]
    assert last["several_questions"] and last["serving"]
    assert [q["name"] for q in last["questions"]] == ["colour", "tags"]
    assert last["label_counts"]["tags"] == {"warm": 10, "cool": 20, "leafy": 10}
    assert set(last["metrics"]["questions"]) == {"colour", "tags"}
    page = client.get("/").text
    assert "<h3>Per question: v3 (serving)" in page
    assert "<h3>colour <span class='muted'>(single-choice)</span></h3>" in page
    assert "<h3>tags <span class='muted'>(multiple-choice)</span></h3>" in page
    tags = page.split("data-question='tags'")[1].split("</table>")[0]
    assert "<th>Threshold</th>" in tags and "<td>leafy</td><td class='num'>10</td>" in tags
    assert "subset accuracy" in page and "micro-F1" in page
    colour = page.split("data-question='colour'")[1].split("</table>")[0]
    assert "<th>Threshold</th>" not in colour
    assert "table class='confusion'" in page  # the single-choice question's
    assert "(colour " in page and ", tags " in page  # per-question macro-F1 in the versions
    curves = question_curves(status["versions"])  # what the chart draws per question
    assert {q: [(x, multiple) for x, _, multiple in pts] for q, pts in curves.items()} == {
        "colour": [(12, False), (21, False), (30, False)], "tags": [(12, True), (21, True),
                                                                    (30, True)]}
    png = client.get("/status/1/curve.png").content
    for rgb in QUESTION_COLOURS[:2]:  # one line per question
        assert colour_pixels(png, tuple(int(rgb[i:i + 2], 16) for i in (1, 3, 5))) > 20
    assert colour_pixels(png, tuple(int(QUESTION_COLOURS[2][i:i + 2], 16)
                                    for i in (1, 3, 5))) == 0  # and no third


def test_a_single_question_page_has_no_per_question_parts(app):
    page = TestClient(app).get("/").text
    assert "Per question" not in page and "<h3>Per class: v3 (serving)" in page
    assert "Threshold" not in page
    png = TestClient(app).get("/status/1/curve.png").content
    from ml_backend.status_charts import QUESTION_COLOURS

    for rgb in QUESTION_COLOURS[:2]:
        assert colour_pixels(png, tuple(int(rgb[i:i + 2], 16) for i in (1, 3, 5))) == 0
