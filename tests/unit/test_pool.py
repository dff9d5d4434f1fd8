from ml_backend.label_config import parse_label_config
from ml_backend.pool import build_pool

CFG = parse_label_config(
    '<View><Image name="i" value="$image"/><Choices name="c" toName="i">'
    '<Choice value="a"/><Choice value="b"/></Choices></View>'
)


def ann(label, when, cancelled=False, id=1):
    return {"id": id, "was_cancelled": cancelled, "updated_at": when,
            "result": [] if label is None else CFG.result({"c": (label,)})}


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
    assert pool.labels == {1: {"c": ("b",)}, 2: {"c": ("a",)}}
    assert sorted(pool.unlabeled) == [3, 4, 5]
    assert pool.skipped["skipped"] == 1
    assert pool.skipped["no image URL"] == 1
    assert any("zebra" in reason for reason in pool.skipped)


TWO = parse_label_config(
    '<View><Image name="i" value="$image"/>'
    '<Choices name="tags" toName="i" choice="multiple"><Choice value="x"/><Choice value="y"/>'
    '</Choices><Choices name="c" toName="i"><Choice value="a"/><Choice value="b"/></Choices>'
    '</View>'
)


def test_answers_per_question_and_a_removed_label_drops_only_its_question():
    def task(id, result):
        return {"id": id, "data": {"image": f"/{id}.png"},
                "annotations": [{"id": id, "updated_at": "2024-01-01", "result": result}]}

    tasks = [
        task(1, TWO.result({"tags": ("x", "y"), "c": ("a",)})),
        task(2, TWO.result({"c": ("b",)})),  # answers one question of two
        task(3, TWO.result({"tags": ("z",), "c": ("a",)})),  # "z" was removed from the config
        task(4, TWO.result({"tags": ("z",)})),
    ]
    pool = build_pool(tasks, TWO)
    assert pool.labels == {1: {"tags": ("x", "y"), "c": ("a",)}, 2: {"c": ("b",)},
                           3: {"c": ("a",)}}
    assert pool.answering("tags") == [1]
    assert any("'z'" in reason for reason in pool.skipped)
    # The digest follows the answers of every question.
    before = pool.digest(TWO)
    pool.labels[2] = {"c": ("b",), "tags": ("x",)}
    assert pool.digest(TWO) != before
