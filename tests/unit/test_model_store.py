"""The embedding store and the extraction pipeline feeding it."""

import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

from model.backbone import load_backbone
from model.embeddings import (EmbeddingStore, TaskMatrix, embed_files, embed_tasks,
                              prefetch_map)
from tests.images import png_bytes

WRITER = textwrap.dedent("""
    import sys
    import numpy as np
    from model.store import EmbeddingStore
    root, me = sys.argv[1], int(sys.argv[2])
    store = EmbeddingStore(root, 1, "fp", 8)
    print("ready", flush=True)
    sys.stdin.readline()  # both start writing at the same moment
    for i in range(200):
        # Both writers store the shared hashes s<i> and their own m<me>-<i>.
        vecs = {f"s{i}": np.full(8, i, np.float32), f"m{me}-{i}": np.full(8, me, np.float32)}
        store.put(vecs, {me * 1000 + i: (f"/img/{i}", f"s{i}")})
    print("done")
""")


def test_two_processes_writing_at_once_lose_nothing(tmp_path):
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), str(me)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
             for me in (1, 2)]
    assert [p.stdout.readline().strip() for p in procs] == ["ready", "ready"]
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err for _, err in outs]
    store = EmbeddingStore(tmp_path, 1, "fp", 8)
    keys = [f"s{i}" for i in range(200)] + [f"m{me}-{i}" for me in (1, 2) for i in range(200)]
    got = store.get(keys)
    assert len(got) == 600
    assert all(got[f"s{i}"][0] == i for i in range(200))
    tasks = {me * 1000 + i: f"/img/{i}" for me in (1, 2) for i in range(200)}
    assert len(store.task_vectors(tasks)) == 400


OPENER = textwrap.dedent("""
    import sys, time
    from model.store import EmbeddingStore
    start = float(sys.argv[2])
    while time.time() < start:  # both open the new store at the same moment
        pass
    EmbeddingStore(sys.argv[1], 1, "fp", 8).put({"h": [1.0] * 8}, {1: ("/x.png", "h")})
""")


def test_two_processes_creating_the_same_store_at_once_both_open_it(tmp_path):
    """The server and a worker may open a project's new store together; SQLite refuses one
    of two simultaneous switches to WAL at once (about one round in two without a guard)."""
    for round_ in range(4):
        start = str(time.time() + 1.0)
        procs = [subprocess.Popen([sys.executable, "-c", OPENER, str(tmp_path / str(round_)),
                                   start], stderr=subprocess.PIPE, text=True)
                 for _ in (1, 2)]
        errors = [p.communicate(timeout=60)[1] for p in procs]
        assert [p.returncode for p in procs] == [0, 0], errors


def test_stores_are_per_project_and_backbone_fingerprint(tmp_path):
    a = EmbeddingStore(tmp_path, 1, "fp-a", 4)
    a.put({"h": np.ones(4, np.float32)}, {1: ("/x.png", "h")})
    assert EmbeddingStore(tmp_path, 1, "fp-b", 4).task_vectors({1: "/x.png"}) == {}
    assert EmbeddingStore(tmp_path, 2, "fp-a", 4).task_vectors({1: "/x.png"}) == {}
    assert list(EmbeddingStore(tmp_path, 1, "fp-a", 4).task_vectors({1: "/x.png"})) == [1]


def test_prefetch_stays_a_bounded_distance_ahead_and_keeps_order():
    loaded, consumed = [], []
    lock = threading.Lock()

    def load(i):
        with lock:
            loaded.append(i)
        return i

    ahead_seen = []
    for item in prefetch_map(load, range(100), workers=4, ahead=5):
        time.sleep(0.002)  # a slow consumer (the forward pass)
        with lock:
            ahead_seen.append(len(loaded) - len(consumed))
        consumed.append(item)
    assert consumed == list(range(100))
    assert max(ahead_seen) <= 6  # never the whole pool decoded ahead


@pytest.fixture(scope="module")
def tiny_backbone():
    return load_backbone("mobilenet_v3_small", "none")


def test_an_image_known_by_content_is_neither_decoded_nor_embedded_again(tmp_path, tiny_backbone,
                                                                         monkeypatch):
    store = EmbeddingStore(tmp_path, 1, tiny_backbone.fingerprint, tiny_backbone.dim)
    images = {"/a.png": png_bytes("red", 1), "/b.png": png_bytes("blue", 2)}
    first, _ = embed_tasks(tiny_backbone, store, {1: "/a.png", 2: "/b.png"}, images.__getitem__)
    embedded = []
    real = tiny_backbone.embed_tensors
    monkeypatch.setattr(tiny_backbone, "embed_tensors",
                        lambda batch: embedded.append(len(batch)) or real(batch))
    # New tasks, same bytes under other URLs: fetched (to hash them), not embedded.
    images |= {"/a2.png": images["/a.png"], "/c.png": png_bytes("green", 3)}
    vecs, errors = embed_tasks(tiny_backbone, store, {3: "/a2.png", 4: "/c.png"},
                               images.__getitem__)
    assert errors == {} and embedded == [1]
    np.testing.assert_array_equal(vecs[3], first[1])
    assert set(store.task_vectors({3: "/a2.png", 4: "/c.png"})) == {3, 4}


def test_embed_files_reports_unreadable_files_and_embeds_the_rest(tmp_path, tiny_backbone):
    (tmp_path / "a.png").write_bytes(png_bytes("red", 1))
    (tmp_path / "bad.jpg").write_bytes(b"not a jpeg")
    (tmp_path / "b.png").write_bytes(png_bytes("blue", 2))
    paths = [tmp_path / n for n in ("a.png", "bad.jpg", "b.png", "missing.png")]
    out = {p.name: (v, e) for p, v, e in embed_files(tiny_backbone, paths, batch_size=2)}
    assert out["a.png"][0].shape == (tiny_backbone.dim,) and out["b.png"][1] is None
    assert "decode" in out["bad.jpg"][1] and out["missing.png"][0] is None


def test_split_preprocessing_equals_the_weights_transforms(tiny_backbone):
    """Workers crop to uint8, batches are normalised at once: the result must not change."""
    import io

    import torch
    from PIL import Image

    img = Image.open(io.BytesIO(png_bytes("green", 4, size=300)))
    crop = tiny_backbone.preprocess(img)
    assert crop.dtype == torch.uint8 and crop.shape == (3, 224, 224)
    torch.testing.assert_close(tiny_backbone.inputs(crop[None])[0],
                               tiny_backbone.transform(img.convert("RGB")), rtol=0, atol=1e-6)


def test_task_matrix_asks_only_for_tasks_it_lacks_or_whose_image_changed():
    asked: list[dict] = []

    def vectors_of(urls):  # the store's stand-in: a vector from the URL, /bad fails
        asked.append(dict(urls))
        good = {t: np.full(4, float(u[1:]), np.float32) for t, u in urls.items() if u != "/bad"}
        return good, {t: "cannot decode" for t, u in urls.items() if u == "/bad"}

    kept = TaskMatrix(4)
    ids, x, errors = kept.take({1: "/1", 2: "/2", 3: "/bad"}, vectors_of)
    assert ids == [1, 2] and errors == {3: "cannot decode"}
    assert x[:, 0].tolist() == [1.0, 2.0]
    # The next retrain: new tasks, one image replaced; the rest comes from memory.
    ids, x, errors = kept.take({1: "/1", 2: "/20", 4: "/4", 3: "/bad"}, vectors_of)
    assert asked[1] == {2: "/20", 4: "/4", 3: "/bad"}
    assert ids == [1, 2, 4] and x[:, 0].tolist() == [1.0, 20.0, 4.0]
    # Another order or a subset of the tasks: the same rows.
    ids, x, _ = kept.take({4: "/4", 1: "/1"}, vectors_of)
    assert ids == [4, 1] and x[:, 0].tolist() == [4.0, 1.0] and len(asked) == 2
    # A task whose new image fails is not served its old vector.
    ids, _, errors = kept.take({2: "/bad"}, vectors_of)
    assert ids == [] and errors == {2: "cannot decode"}


def test_task_matrix_grows_without_losing_rows():
    kept = TaskMatrix(3)
    for start in range(0, 1000, 7):  # tasks arriving a few at a time
        urls = {t: f"/{t}" for t in range(start, min(start + 7, 1000))}
        kept.take(urls, lambda u: ({t: np.full(3, t, np.float32) for t in u}, {}))
    ids, x, _ = kept.take({t: f"/{t}" for t in range(1000)}, lambda u: pytest.fail(str(u)))
    assert ids == list(range(1000)) and x[:, 2].tolist() == list(map(float, range(1000)))
    # Most of them in another order (labelled tasks were read first, say): the same rows.
    backwards = {t: f"/{t}" for t in reversed(range(100, 1000))}
    for _ in range(2):
        ids, x, _ = kept.take(backwards, lambda u: pytest.fail(str(u)))
        assert ids == list(backwards) and x[:, 0].tolist() == list(map(float, backwards))
    ids, x, _ = kept.take({5: "/5", 999: "/999"}, lambda u: pytest.fail(str(u)))
    assert x[:, 1].tolist() == [5.0, 999.0]
