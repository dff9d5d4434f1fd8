"""Workers on several machines: model versions in a shared MODEL_DIR, embedding caches of their
own (EMBEDDING_CACHE_DIR), one Redis. They never claim the same version, and whichever worker or
server computes an order or a prediction of a version, it is the same."""

from __future__ import annotations

import threading

import pytest
from redis import Redis
from rq import Queue, SimpleWorker

from ml_backend import jobs, steps
from ml_backend.label_config import parse_label_config
from ml_backend.queue_state import ProjectQueue
from ml_backend.queueing import enqueue_retrain
from ml_backend.runtime import Runtime
from model.head import build_head
from model.store import EmbeddingStore, UnsafeCacheLocation, check_cache_location, filesystem_of
from model.versions import VersionStore

MOUNTS = """\
/dev/sda1 / ext4 rw,relatime 0 0
server:/export/models /mnt/models nfs4 rw,relatime 0 0
/dev/sdb1 /mnt/models/local ext4 rw 0 0
//nas/share /mnt/my\\040share cifs rw 0 0
"""


def test_workers_saving_at_once_each_get_a_version_of_their_own(tmp_path):
    """Eight writers (standing for workers on other machines) save three versions each into one
    folder at once: 24 distinct names, each holding what its writer saved."""
    start = threading.Barrier(8)
    errors: list[BaseException] = []

    def writer(who: int) -> None:
        try:
            store = VersionStore(tmp_path, 1)
            start.wait()
            for i in range(3):
                store.save(build_head({"dim": 4, "n_classes": 2}), {"classes": ["a", "b"],
                                                                    "by": [who, i]})
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors
    store = VersionStore(tmp_path, 1)
    assert store.names() == [f"v{n}" for n in range(1, 25)]
    assert sorted(tuple(store.meta(n)["by"]) for n in store.names()) == [
        (w, i) for w in range(8) for i in range(3)]
    assert [p.name for p in store.root.iterdir() if p.name.startswith(".")] == []  # no leftovers


@pytest.mark.parametrize("write", ["order", "record"])
def test_machines_with_the_same_pid_write_apart_in_a_shared_model_dir(write, settings,
                                                                      monkeypatch):
    """Process ids repeat across machines (a container's worker is often pid 1): the temporary
    file an order or the ownership record is written to before its rename is named by host too,
    so two machines never write into the same one."""
    import os
    import socket

    from ml_backend import orders, ownership

    monkeypatch.setattr(os, "getpid", lambda: 1)
    renamed: list[str] = []
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda src, dst: renamed.append(str(src)) or
                        real_replace(src, dst))
    for host in ("machine-a", "machine-b"):
        monkeypatch.setattr(socket, "gethostname", lambda host=host: host)
        if write == "order":
            orders.save(settings, 1, "al-v1", [{"task": 1, "score": 0.1, "result": []}])
        else:
            ownership.record(settings, VersionStore(settings.model_dir, 1)).add("al-v1")
    assert len(renamed) == 2 and renamed[0] != renamed[1]


def test_two_workers_with_their_own_caches_and_a_server_agree(settings, fake_ls, tmp_path):
    def machine(name: str) -> Runtime:
        own = settings.model_copy(update={"embedding_cache_dir": tmp_path / name})
        return Runtime(own, labelstudio=fake_ls)

    a, b, server = machine("a"), machine("b"), machine("server")
    conn = Redis.from_url(settings.redis_url)
    queue = Queue(settings.queue_name, connection=conn)

    def retrain_on(rt: Runtime) -> None:
        enqueue_retrain(conn, settings, 1, "ANNOTATION_CREATED")
        jobs.use_runtime(rt)
        try:
            SimpleWorker([queue], connection=conn).work(burst=True)
        finally:
            jobs.use_runtime(None)

    retrain_on(a)
    for task in fake_ls.task_list[4:6] + fake_ls.task_list[10:12]:  # more labels
        task["annotations"] = [fake_ls.annotation(task["truth"], task["id"])]
    retrain_on(b)
    assert [e["status"] for e in ProjectQueue(conn, 1).history()] == ["finished"] * 2
    assert a.versions(1).names() == server.versions(1).names() == ["v1", "v2"]
    assert server.serving_version(1) == a.serving_version(1) == "al-v2"  # its Label Studio name
    assert b.versions(1).meta("v2")["n_labels"] == 16
    served_by_b = fake_ls.queue("al-v2")
    assert served_by_b  # v2 published its order

    steps.rollback(a, 1, "v2")  # worker a publishes v2's order again, from its own cache
    assert fake_ls.queue("al-v2") == served_by_b
    config = parse_label_config(fake_ls.config)
    tasks = [{"id": t["id"], "data": t["data"]} for t in fake_ls.task_list]
    assert server.predict(1, config, tasks) == b.predict(1, config, tasks)
    for name in ("a", "b", "server"):  # each machine's cache is its own; none in MODEL_DIR
        assert list((tmp_path / name / "embeddings").rglob("project-1.sqlite"))
    assert not (settings.model_dir / "embeddings").exists()


def test_an_embedding_cache_on_a_network_filesystem_is_refused(tmp_path):
    assert filesystem_of("/mnt/models/v1", MOUNTS) == "nfs4"
    assert filesystem_of("/mnt/models/local/cache", MOUNTS) == "ext4"  # a local disk inside
    assert filesystem_of("/mnt/my share/x", MOUNTS) == "cifs"
    assert filesystem_of("/mnt/modelsx", MOUNTS) == "ext4"
    with pytest.raises(UnsafeCacheLocation, match="EMBEDDING_CACHE_DIR"):
        check_cache_location("/mnt/models/embeddings", MOUNTS)
    check_cache_location("/mnt/models/local", MOUNTS)
    EmbeddingStore(tmp_path, 1, "fp", 4).close()  # this machine's disk
