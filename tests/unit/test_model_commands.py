"""CLI model commands: export, import-model, predict, rollback errors, and backbone fine-tuning."""

import csv
import io
import json

import numpy as np
import pytest
import torch
from PIL import Image
from redis import Redis
from rq import Queue, SimpleWorker
from torchvision import models

from ml_backend import jobs
from ml_backend.__main__ import main
from ml_backend.finetuning import finetune_backbone
from ml_backend.model_commands import export, import_model, predict_folder
from ml_backend.queue_state import ProjectQueue
from ml_backend.queueing import enqueue_retrain
from ml_backend.runtime import Runtime
from ml_backend.steps import retrain
from ml_backend.settings import get_settings
from model.finetune import FinetuneConfig
from model.head import predict_proba
from tests.images import png_bytes


@pytest.fixture
def trained(runtime):
    retrain(runtime, 1)
    return runtime


def live_probs(rt: Runtime, project: int, images: list[bytes]) -> np.ndarray:
    """What serving computes for these images: the version's backbone, then its head."""
    model = rt.serving_model(project)
    imgs = [Image.open(io.BytesIO(b)) for b in images]
    return predict_proba(model.head, rt.backbone_for(project).embed_batch(imgs))


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
def test_export_is_self_contained_and_answers_like_the_live_path(trained, tmp_path):
    out = export(trained, 1, tmp_path / "export")
    assert out["version"] == "v1"
    folder = tmp_path / "export"
    assert sorted(p.name for p in folder.iterdir()) == [
        "README.md", "labels.json", "metrics.json", "model.json", "model.onnx", "model.pt"]
    assert json.loads((folder / "labels.json").read_text()) == ["red", "green", "blue"]
    assert json.loads((folder / "metrics.json").read_text())["metrics"]["n"] > 0
    readme = (folder / "README.md").read_text()
    assert "torch.jit.load" in readme and "224" in readme and "0.485" in readme

    model = torch.jit.load(str(folder / "model.pt"))
    bb = trained.backbone
    images = [png_bytes(c, 50 + i) for i, c in enumerate(("red", "green", "blue"))]
    x = bb.inputs(torch.stack([bb.preprocess(Image.open(io.BytesIO(b))) for b in images]))
    with torch.no_grad():
        got = model(x).numpy()
    np.testing.assert_allclose(got, live_probs(trained, 1, images), atol=1e-5)
    with pytest.raises(ValueError, match="not an empty folder"):
        export(trained, 1, tmp_path / "export")


def test_an_exported_model_imports_into_a_new_project(trained, tmp_path):
    export(trained, 1, tmp_path / "export")
    out = import_model(trained, 2, tmp_path / "export" / "model.pt")
    assert out["version"] == "v1" and trained.versions(2).serving() == "v1"
    images = [png_bytes("green", 60), png_bytes("blue", 61)]
    np.testing.assert_allclose(live_probs(trained, 2, images), live_probs(trained, 1, images),
                               atol=1e-5)
    meta = trained.versions(2).meta("v1")
    assert meta["backbone_weights"].startswith("backbones/") and meta["classes"] == [
        "red", "green", "blue"]


def assert_serves_like(runtime, project, net, atol):
    """The imported project's live probabilities are the original network's."""
    images = [png_bytes("red", 1), png_bytes("blue", 2)]
    bb = runtime.backbone_for(project)
    x = bb.inputs(torch.stack([bb.preprocess(Image.open(io.BytesIO(b))) for b in images]))
    with torch.no_grad():
        want = torch.softmax(net(x), 1).numpy()
    np.testing.assert_allclose(live_probs(runtime, project, images), want, atol=atol)


def test_a_torchvision_state_dict_imports_with_its_labels(runtime, tmp_path):
    torch.manual_seed(1)
    net = models.get_model("mobilenet_v3_small", weights=None, num_classes=2).eval()
    torch.save(net.state_dict(), tmp_path / "mine.pth")
    (tmp_path / "labels.json").write_text(json.dumps(["cat", "dog"]))
    out = import_model(runtime, 3, tmp_path / "mine.pth", tmp_path / "labels.json")
    assert out["classes"] == ["cat", "dog"] and out["backbone"] == "mobilenet_v3_small"
    assert_serves_like(runtime, 3, net, atol=1e-5)

    (tmp_path / "three.json").write_text(json.dumps(["a", "b", "c"]))
    with pytest.raises(ValueError, match="2 outputs but the labels file names 3"):
        import_model(runtime, 4, tmp_path / "mine.pth", tmp_path / "three.json")
    with pytest.raises(ValueError, match="pass --labels"):
        import_model(runtime, 4, tmp_path / "mine.pth")
    with pytest.raises(ValueError, match="not a resnet18 classifier|does not fit resnet18"):
        import_model(runtime, 4, tmp_path / "mine.pth", tmp_path / "labels.json", "resnet18")
    assert runtime.versions(4).names() == []  # nothing half-imported


def test_a_timm_state_dict_of_the_default_backbone_imports(runtime, tmp_path):
    from model.export import classifier

    torch.manual_seed(2)
    net, _ = classifier("efficientnet_lite0", 3)
    torch.save(net.eval().state_dict(), tmp_path / "lite.pth")
    (tmp_path / "labels.json").write_text(json.dumps(["a", "b", "c"]))
    out = import_model(runtime, 5, tmp_path / "lite.pth", tmp_path / "labels.json",
                       "efficientnet_lite0")
    assert out["backbone"] == "efficientnet_lite0" and out["classes"] == ["a", "b", "c"]
    assert_serves_like(runtime, 5, net, atol=1e-4)


def test_predict_writes_a_csv_and_skips_unreadable_files(trained, tmp_path, capsys):
    folder = tmp_path / "new"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.png").write_bytes(png_bytes("red", 70))
    (folder / "sub" / "b.png").write_bytes(png_bytes("blue", 71))
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 not really")
    (folder / "notes.txt").write_text("not an image, not reported")
    out = predict_folder(trained, 1, folder, tmp_path / "out.csv", progress=False)
    assert out == {"version": "v1", "predicted": 2, "skipped": 1,
                   "out": str(tmp_path / "out.csv")}
    rows = list(csv.DictReader((tmp_path / "out.csv").open()))
    assert list(rows[0]) == ["path", "label", "score", "red", "green", "blue"]
    assert sorted(r["path"] for r in rows) == [str(folder / "a.png"), str(folder / "sub/b.png")]
    for row in rows:
        probs = [float(row[c]) for c in ("red", "green", "blue")]
        assert abs(sum(probs) - 1) < 1e-4 and float(row["score"]) == max(probs)
    want = live_probs(trained, 1, [png_bytes("red", 70)])[0]
    a = next(r for r in rows if r["path"].endswith("a.png"))
    np.testing.assert_allclose([float(a[c]) for c in ("red", "green", "blue")], want, atol=1e-5)
    err = capsys.readouterr().err
    assert "skipped" in err and "broken.jpg" in err and "notes.txt" not in err


def test_cli_errors_are_one_line_and_change_nothing(trained, tmp_path, cli_env, capsys):
    assert main(["rollback", "--project", "1", "v7"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: project 1 has no version 'v7' (it has: v1)"
    assert main(["predict", "--project", "9", str(tmp_path), "--out", str(tmp_path / "o.csv")]) == 2
    assert capsys.readouterr().err.strip() == (
        "error: project 9 has no serving version yet (train or import one)")
    assert not (tmp_path / "o.csv").exists()
    assert main(["import-model", "--project", "5", str(tmp_path / "nope.pth")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["export", "--project", "1", "--out", str(tmp_path / "e")]) == 0
    assert "exported project 1 v1" in capsys.readouterr().out
    assert trained.versions(1).serving() == "v1"


def test_finetune_job_trains_a_version_on_a_new_backbone(settings, fake_ls, monkeypatch,
                                                          request):
    rt = Runtime(settings.model_copy(update={
        "finetune_every": 10, "finetune_epochs": 1, "promotion_min_heldout": 0,
        "promotion_tolerance": 1.0}), labelstudio=fake_ls)
    jobs.use_runtime(rt)
    request.addfinalizer(lambda: jobs.use_runtime(None))
    monkeypatch.setattr(rt.settings.__class__, "finetune_config", lambda s: FinetuneConfig(
        epochs=1, p=3, k=2, augment=False))
    redis = Redis.from_url(settings.redis_url)
    enqueue_retrain(redis, rt.settings, 1, "START_TRAINING")
    SimpleWorker([Queue(rt.settings.queue_name, connection=redis)], connection=redis).work(
        burst=True)
    history = ProjectQueue(redis, 1).history()
    assert [h["kind"] for h in reversed(history)] == ["retrain", "finetune"], history
    assert history[0]["status"] == "finished"
    store = rt.versions(1)
    first, tuned = store.meta("v1"), store.meta("v2")
    assert first["backbone_weights"] is None
    assert tuned["backbone_weights"].startswith("backbones/mobilenet_v3_small-")
    assert tuned["backbone_fingerprint"] != first["backbone_fingerprint"]
    # Both versions were judged on their own backbone's embeddings.
    assert tuned["promotion"]["old"] is not None and tuned["promotion"]["promoted"]
    assert store.serving() == "v2" and rt.backbone_for(1).fingerprint == tuned[
        "backbone_fingerprint"]
    config = '<View><Image name="img" value="$image"/><Choices name="colour" toName="img">' \
             '<Choice value="red"/><Choice value="green"/><Choice value="blue"/></Choices></View>'
    from ml_backend.label_config import parse_label_config

    task = next(t for t in fake_ls.task_list if not t["annotations"])
    (pred,) = rt.predict(1, parse_label_config(config), [task])
    assert pred["model_version"] == "al-v2" and pred["result"]
    # The pool now lives in the fine-tuned backbone's store.
    assert rt.store(1).path.parent.name == tuned["backbone_fingerprint"]


def test_finetune_needs_known_images(runtime):
    with pytest.raises(ValueError, match="too few labelled tasks"):
        finetune_backbone(runtime, 1, FinetuneConfig(epochs=1))


def test_a_command_waits_for_the_running_job_of_its_project(trained, cli_env, settings, capsys,
                                                            monkeypatch):
    """rollback, seed and finetune take the lock a worker's jobs take: none of them switches a
    project's order while a retrain of it runs."""
    redis = Redis.from_url(settings.redis_url)
    monkeypatch.setenv("RETRAIN_LOCK_WAIT", "1")
    get_settings.cache_clear()
    held = redis.lock(ProjectQueue(redis, 1).lock_key, timeout=60)
    assert held.acquire(blocking=False)
    try:
        assert main(["rollback", "--project", "1", "v1"]) == 2
        assert "another job held the lock longer than 1 s" in capsys.readouterr().err
    finally:
        held.release()
    assert trained.versions(1).meta("v1").get("rolled_back_at") is None  # nothing changed
