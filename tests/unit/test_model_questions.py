"""A version that answers several questions: a head per question, thresholds, metrics, promotion."""

import numpy as np
import pytest

from model.promotion import check_metric, metric_value
from model.questions import Question, best_thresholds, decide
from model.training import TrainConfig, train_questions
from model.versions import ModelVersion, VersionStore

SPECIES = Question("species", ("cat", "dog", "fox"))
TAGS = Question("tags", ("night", "young"), multiple=True)


def scene(n=240, dim=12, seed=0):
    """Embeddings whose first dims carry the species, and two more carry each tag."""
    rng = np.random.default_rng(seed)
    species = rng.integers(0, 3, n)
    night, young = rng.random(n) < 0.4, rng.random(n) < 0.3
    x = rng.normal(0, 0.5, (n, dim)).astype(np.float32)
    x[np.arange(n), species] += 3
    x[:, 3] += 3 * night
    x[:, 4] += 3 * young
    answers = [{"species": (SPECIES.classes[s],),
                "tags": tuple(t for t, on in (("night", a), ("young", b)) if on)}
               for s, a, b in zip(species, night, young)]
    return x, answers


def test_each_question_gets_its_head_and_answers_come_back_per_question(tmp_path):
    x, answers = scene()
    cand = train_questions(x, answers, list(range(len(x))), [SPECIES, TAGS])
    meta = cand.meta
    assert [q["name"] for q in meta["questions"]] == ["species", "tags"]
    assert len(meta["questions"][1]["thresholds"]) == 2
    per_q = meta["metrics"]["questions"]
    assert per_q["species"]["accuracy"] > 0.9
    assert per_q["tags"]["micro_f1"] > 0.9 and per_q["tags"]["subset_accuracy"] > 0.8
    assert set(per_q["tags"]["per_class"]) == {"night", "young"}
    assert meta["metrics"]["macro_f1"] == pytest.approx(
        np.mean([per_q["species"]["macro_f1"], per_q["tags"]["macro_f1"]]))
    assert meta["label_counts"]["tags"]["night"] == sum("night" in a["tags"] for a in answers)

    store = VersionStore(tmp_path, 1)
    version = store.load(store.save(cand.head, meta, cand.tasks))
    probs = version.probabilities(x[:40], [SPECIES, TAGS])
    said = version.answers(probs, [SPECIES, TAGS], 40)
    right = [s.get("species") == a["species"] and s.get("tags", ()) == a["tags"]
             for s, a in zip(said, answers[:40])]
    assert np.mean(right) > 0.8
    with pytest.raises(ValueError, match="several questions"):
        version.classes


def test_an_annotation_answering_some_questions_trains_only_those_heads():
    x, answers = scene()
    only_species = [{"species": a["species"]} for a in answers]
    cand = train_questions(x, only_species, list(range(len(x))), [SPECIES, TAGS])
    assert [q["name"] for q in cand.meta["questions"]] == ["species"]
    # Half the tasks answer the tags: that head learns from those alone.
    half = [a if i % 2 else {"species": a["species"]} for i, a in enumerate(answers)]
    cand = train_questions(x, half, list(range(len(x))), [SPECIES, TAGS])
    assert cand.meta["metrics"]["questions"]["tags"]["n"] < cand.meta["metrics"]["questions"][
        "species"]["n"]


def test_thresholds_follow_the_held_out_scores_and_decide_uses_them():
    truth = np.array([[1], [1], [0], [0]], dtype=bool)
    probs = np.array([[0.30], [0.25], [0.10], [0.05]])  # a label the head under-predicts
    t = best_thresholds(truth, probs)[0]
    assert 0.10 < t <= 0.25
    assert decide(probs, Question("tags", ("night",), True), {"night"}, [t]) == [
        ("night",), ("night",), (), ()]
    assert best_thresholds(np.zeros((3, 1), bool), probs[:3]) == [0.5]  # no positive: unchanged


def test_a_choice_removed_from_the_config_is_never_proposed():
    probs = np.array([[0.7, 0.2, 0.1]])
    assert decide(probs, SPECIES, {"dog", "fox"}) == [("dog",)]
    assert decide(np.array([[0.9, 0.9]]), TAGS, {"young"}) == [("young",)]


def test_promotion_metric_can_name_a_question():
    x, answers = scene()
    tasks = list(range(len(x)))
    first = train_questions(x[:120], answers[:120], tasks[:120], [SPECIES, TAGS])
    serving = ModelVersion("v1", first.head, first.meta)
    serving.__dict__["tasks"] = first.tasks
    config = TrainConfig(metric="macro_f1:tags", min_heldout=5)
    cand = train_questions(x, answers, tasks, [SPECIES, TAGS], serving=serving, config=config)
    verdict = cand.meta["promotion"]
    assert verdict["metric"] == "macro_f1:tags" and verdict["reason"].startswith("macro_f1:tags")
    assert verdict["new"] > 0.8 and verdict["promoted"]
    # A serving version that cannot answer the tags is clearly worse on that question.
    blind = train_questions(x[:120], [{"species": a["species"]} for a in answers[:120]],
                            tasks[:120], [SPECIES, TAGS])
    serving = ModelVersion("v1", blind.head, blind.meta)
    serving.__dict__["tasks"] = blind.tasks
    cand = train_questions(x, answers, tasks, [SPECIES, TAGS], serving=serving, config=config)
    assert cand.meta["promotion"]["old"] == 0.0 and cand.meta["promotion"]["promoted"]
    assert metric_value(cand.meta["metrics"], "macro_f1:tags") > 0.8
    assert check_metric("subset_accuracy:tags")
    with pytest.raises(ValueError, match="unknown promotion metric"):
        check_metric("f2")


def test_a_question_added_to_a_single_choice_project_keeps_the_old_answers():
    x, answers = scene()
    tasks = list(range(len(x)))
    old = train_questions(x, [{"species": a["species"]} for a in answers], tasks, [SPECIES])
    assert "classes" in old.meta  # one single-choice question: stored as versions always were
    serving = ModelVersion("v1", old.head, old.meta)
    said = serving.answers(serving.probabilities(x[:5], [SPECIES, TAGS]), [SPECIES, TAGS], 5)
    assert all(set(a) == {"species"} for a in said)
    # A version from before questions had names answers the config's single-choice question.
    legacy = ModelVersion("v0", old.head, {k: v for k, v in old.meta.items() if k != "questions"})
    assert legacy.answers(legacy.probabilities(x[:5], [TAGS, SPECIES]), [TAGS, SPECIES], 5) == said
