import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from model import backbone as backbone_mod
from model.backbone import WeightsUnavailable, load_backbone
from model.embeddings import EmbeddingStore, embed_tasks
from model.head import class_weights, predict_proba, train_head
from model.images import BadImage, decode_image
from model.training import VAL, assign_roles, fit
from model.versions import VersionStore
from tests.images import png_bytes


def blobs(n_per_class=40, dim=16, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 3, (3, dim))
    x = np.concatenate([c + rng.normal(0, 1, (n_per_class, dim)) for c in centres])
    y = np.repeat(np.arange(3), n_per_class)
    return x.astype(np.float32), y


def test_head_learns_separable_classes_and_is_deterministic():
    x, y = blobs()
    head_a, _ = train_head(x, y, 3, seed=1)
    head_b, _ = train_head(x, y, 3, seed=1)
    pa, pb = predict_proba(head_a, x), predict_proba(head_b, x)
    assert (pa.argmax(1) == y).mean() > 0.95
    np.testing.assert_allclose(pa, pb)


def test_stochastic_passes_differ_and_sum_to_one():
    x, y = blobs()
    head, _ = train_head(x, y, 3, dropout=0.5, seed=0)
    p = predict_proba(head, x, passes=5)
    assert p.shape == (len(x), 3, 5)
    np.testing.assert_allclose(p.sum(1), 1, atol=1e-5)
    assert not np.allclose(p[..., 0], p[..., 1])
    assert not head.training  # dropout is off again after stochastic passes


def test_class_weights_favour_the_rare_class():
    w = class_weights(np.array([0] * 90 + [1] * 10), 3)
    assert w[1] > w[0] * 5 and w[2] == 0


def test_fit_reports_heldout_metrics_and_counts():
    x, y = blobs()
    roles = assign_roles(list(range(len(y))), [None] * len(y), fraction=0.2, seed=0)
    n_val = int((roles == VAL).sum())
    _, meta = fit(x, y, ["a", "b", "c"], roles=roles)
    assert meta["n_labels"] == len(y) and meta["n_heldout"] == n_val > 10
    assert meta["n_train"] == len(y) - n_val
    assert meta["metrics"]["accuracy"] > 0.9
    assert set(meta["metrics"]["per_class"]) == {"a", "b", "c"}
    assert np.array(meta["metrics"]["confusion"]).sum() == n_val
    assert meta["test_metrics"] is None


def test_versions_are_numbered_atomic_and_promoted_explicitly(tmp_path):
    x, y = blobs()
    head, meta = fit(x, y, ["a", "b", "c"])
    store = VersionStore(tmp_path, 7)
    assert store.serving() is None
    (store.root / ".tmp-crashed").mkdir(parents=True)  # a crash mid-write leaves only this
    first = store.save(head, meta)
    second = store.save(head, meta)
    assert (first, second) == ("v1", "v2")
    assert store.names() == ["v1", "v2"] and store.serving() is None
    store.promote(first)
    assert store.serving() == "v1"
    loaded = store.load("v1")
    np.testing.assert_allclose(predict_proba(loaded.head, x), predict_proba(head, x), atol=1e-6)
    assert loaded.classes == ["a", "b", "c"]
    with pytest.raises(KeyError):
        store.promote("v9")
    assert json.loads((store.versions_dir / "v2" / "meta.json").read_text())["version"] == "v2"


class Fetcher:
    def __init__(self, images):
        self.images, self.calls = images, []

    def __call__(self, url):
        self.calls.append(url)
        if url not in self.images:
            raise RuntimeError(f"404 for {url}")
        return self.images[url]


@pytest.fixture(scope="module")
def tiny_backbone():
    return load_backbone("mobilenet_v3_small", "none")


def test_embed_tasks_caches_by_content_and_reports_bad_images(tmp_path, tiny_backbone):
    images = {"/a.png": png_bytes("red", 1), "/b.png": png_bytes("blue", 2),
              "/a-copy.png": png_bytes("red", 1), "/bad.png": b"not an image"}
    fetch = Fetcher(images)
    store = EmbeddingStore(tmp_path, 1, tiny_backbone.fingerprint, tiny_backbone.dim)
    tasks = {1: "/a.png", 2: "/b.png", 3: "/a-copy.png", 4: "/bad.png", 5: "/missing.png"}
    vecs, errors = embed_tasks(tiny_backbone, store, tasks, fetch, batch_size=2)
    assert set(vecs) == {1, 2, 3} and set(errors) == {4, 5}
    assert "decode" in errors[4] and "404" in errors[5]
    np.testing.assert_array_equal(vecs[1], vecs[3])
    assert vecs[1].shape == (tiny_backbone.dim,)

    fetch.calls.clear()
    again, _ = embed_tasks(tiny_backbone, store, {1: "/a.png", 2: "/b.png"}, fetch)
    assert fetch.calls == []  # known tasks are served from the store without fetching
    np.testing.assert_array_equal(again[2], vecs[2])

    changed = embed_tasks(tiny_backbone, store, {1: "/b.png"}, fetch)[0]
    assert fetch.calls == ["/b.png"]  # a new URL for a task is fetched again
    np.testing.assert_array_equal(changed[1], vecs[2])


def test_random_backbone_is_identical_across_loads(tiny_backbone):
    other = load_backbone("mobilenet_v3_small", "none")
    img = Image.open(io.BytesIO(png_bytes("green", 3)))
    np.testing.assert_allclose(tiny_backbone.embed_batch([img]), other.embed_batch([img]),
                               atol=1e-5)
    assert tiny_backbone.fingerprint == other.fingerprint


def test_backbone_errors_are_clear(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="unknown backbone"):
        load_backbone("alexnet9000", "none")
    with pytest.raises(WeightsUnavailable, match="unknown weights"):
        load_backbone("resnet18", "IMAGENET9K_V9")
    with pytest.raises(WeightsUnavailable, match="does not exist"):
        load_backbone("resnet18", str(tmp_path / "nope.pth"))

    def offline(*a, **k):
        raise OSError("network is unreachable")

    monkeypatch.setattr(backbone_mod.torch.hub, "load_state_dict_from_url", offline)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    with pytest.raises(WeightsUnavailable, match=r"resnet18-f37072fd\.pth"):
        load_backbone("resnet18", "IMAGENET1K_V1")


def test_backbone_loads_a_local_weights_file(tmp_path):
    net = backbone_mod.models.get_model("mobilenet_v3_small", weights=None)
    torch.nn.init.constant_(net.features[0][0].weight, 0.01)
    path = tmp_path / "mine.pth"
    torch.save(net.state_dict(), path)
    bb = load_backbone("mobilenet_v3_small", str(path))
    assert torch.all(bb.net.features[0][0].weight == 0.01)
    assert bb.fingerprint != load_backbone("mobilenet_v3_small", "none").fingerprint


def test_decode_rejects_corrupt_truncated_and_huge_images():
    good = png_bytes("red", 0)
    assert decode_image(good).size == (48, 48)
    with pytest.raises(BadImage):
        decode_image(b"\x89PNG garbage")
    with pytest.raises(BadImage):
        decode_image(good[: len(good) // 2])
    buf = io.BytesIO()
    Image.new("L", (10000, 10000)).save(buf, format="PNG")  # 100 MP: a decompression bomb
    with pytest.raises(BadImage, match="too large"):
        decode_image(buf.getvalue())
