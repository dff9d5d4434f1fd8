import threading

from model.head import build_head
from model.versions import VersionStore


def small_head():
    return build_head({"dim": 4, "n_classes": 2})


def test_a_half_written_version_folder_does_not_stop_the_next_save(tmp_path):
    """A crash or a full disk can leave v<N> without meta.json; the next save must skip past it
    instead of retrying the same name for ever (a worker would hold the project lock meanwhile)."""
    store = VersionStore(tmp_path, 1)
    assert store.save(small_head(), {"classes": ["a", "b"]}) == "v1"
    (store.versions_dir / "v2").mkdir()
    (store.versions_dir / "v2" / "head.pt").write_bytes(b"partial")

    saved: list[str] = []
    worker = threading.Thread(target=lambda: saved.append(
        store.save(small_head(), {"classes": ["a", "b"]})), daemon=True)
    worker.start()
    worker.join(timeout=30)

    assert saved == ["v3"]
    assert store.names() == ["v1", "v3"]
    assert (store.versions_dir / "v2" / "head.pt").read_bytes() == b"partial"  # left as found
    assert store.load("v3").classes == ["a", "b"]
