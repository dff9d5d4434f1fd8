from ml_backend.label_config import parse_label_config
from ml_backend.pool import build_pool

CFG = parse_label_config(
    '<View><Image name="i" value="$image"/><Choices name="c" toName="i">'
    '<Choice value="a"/><Choice value="b"/></Choices></View>'
)


def ann(label, when, cancelled=False, id=1):
    return {"id": id, "was_cancelled": cancelled, "updated_at": when,
            "result": [] if label is None else CFG.result(label)}


def test_newest_annotation_wins_and_skips_never_count():
    tasks = [
        {"id": 1, "data": {"image": "/1.png"}, "annotations": [ann("a", "2024-01-01"), ann("b", "2024-02-01", id=2)]},
        {"id": 2, "data": {"image": "/2.png"}, "annotations": [ann("a", "2024-01-01"), ann("b", "2024-03-01", True, 2)]},
        {"id": 3, "data": {"image": "/3.png"}, "annotations": [ann(None, "2024-01-01", True)]},
        {"id": 4, "data": {"image": "/4.png"}, "annotations": []},
        {"id": 5, "data": {"image": "/5.png"}, "annotations": [ann("zebra", "2024-01-01")]},
        {"id": 6, "data": {"other": "x"}, "annotations": [ann("a", "2024-01-01")]},
    ]
    pool = build_pool(tasks, CFG)
    assert pool.labels == {1: "b", 2: "a"}
    assert sorted(pool.unlabeled) == [3, 4, 5]
    assert pool.skipped["skipped"] == 1
    assert pool.skipped["no image URL"] == 1
    assert any("zebra" in reason for reason in pool.skipped)
