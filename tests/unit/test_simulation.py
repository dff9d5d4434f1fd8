"""Offline simulation: the files a user reads, the loop's invariants, and one-line errors."""

import csv
import json
import logging
import math

import pytest

import numpy as np

from ml_backend.__main__ import main
from ml_backend.settings import get_settings
from ml_backend.simulation import SimConfig, simulate, simulate_embeddings
from ml_backend.simulation.folder import read_file
from ml_backend.simulation.report import CSV_COLUMNS, labels_to_reach, median_or_none, summarise
from model.training import TrainConfig
from tests.images import COLOURS, png_bytes

PER_CLASS = 10
CONFIG = SimConfig(strategies=("auto", "margin", "random"), seed_size=6, batch=3, budget=12,
                   repeats=2, test_fraction=0.2)  # fmt: skip
ROUNDS = [6, 9, 12]
BROKEN = 4  # unreadable files in the folder


def make_folder(root, classes=tuple(COLOURS), per_class=PER_CLASS):
    for c, label in enumerate(classes):
        (root / label).mkdir(parents=True)
        for i in range(per_class):
            (root / label / f"{i:02d}.png").write_bytes(png_bytes(label, seed=100 * c + i))
    return root


class CountingFetch:
    def __init__(self):
        self.calls = 0

    def __call__(self, path: str) -> bytes:
        self.calls += 1
        return read_file(path)


def run(data, out, cache, fetch, config=CONFIG):
    return simulate(data, out, config, backbone="mobilenet_v3_small", weights="none",
                    device="cpu", cache=cache, fetch=fetch, progress=False)  # fmt: skip


class Lines(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(record.getMessage())


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    """Two runs on one folder sharing a cache; the second one as small as possible.

    Returns (first result, its out folder, first run's fetch, second run's fetch, warnings).
    """
    root = tmp_path_factory.mktemp("sim")
    data = make_folder(root / "images")
    for i in range(BROKEN):
        (data / "red" / f"broken{i}.png").write_bytes(b"not an image")
    first, second, warnings = CountingFetch(), CountingFetch(), Lines()
    logger = logging.getLogger("ml_backend.simulation")
    logger.addHandler(warnings)
    try:
        result = run(data, root / "out", root / "cache", first)
    finally:
        logger.removeHandler(warnings)
    tiny = SimConfig(strategies=("random",), seed_size=6, batch=6, budget=6, repeats=1)
    run(data, root / "out2", root / "cache", second, tiny)
    return result, root / "out", first, second, warnings.lines


def test_csv_has_one_row_per_strategy_repeat_and_round(sim):
    _, out, _, _, _ = sim
    with (out / "results.csv").open() as fh:
        reader = csv.DictReader(fh)
        rows = list(reader)
    assert tuple(reader.fieldnames) == CSV_COLUMNS
    assert {"strategy", "repeat", "n_labels", "accuracy", "macro_f1", "promoted"} <= set(
        reader.fieldnames)
    assert len(rows) == len(CONFIG.strategies) * CONFIG.repeats * len(ROUNDS)
    for strategy in CONFIG.strategies:
        for rep in range(CONFIG.repeats):
            curve = [r for r in rows if r["strategy"] == strategy and r["repeat"] == str(rep)]
            assert [int(r["n_labels"]) for r in curve] == ROUNDS  # grows by batch to the budget
            assert all(0 <= float(r["accuracy"]) <= 1 for r in curve)
            assert all(0 <= float(r["macro_f1"]) <= 1 for r in curve)


def test_test_split_is_never_labelled_and_labels_are_distinct(sim):
    result, _, _, _, _ = sim
    n_test = math.ceil(len(result.files) * CONFIG.test_fraction)
    for (strategy, rep), order in result.labelled.items():
        test = set(result.test[rep].tolist())
        assert len(test) == n_test
        assert len(order) == len(set(order.tolist())) == CONFIG.budget
        assert not test & set(order.tolist()), strategy
    # the split is stratified: every class is in every test split
    for test in result.test:
        assert set(result.labels[test].tolist()) == {0, 1, 2}


def test_seed_batch_without_a_model_follows_ranks_rules(sim):
    result, _, _, _, _ = sim
    first = {(r["strategy"], r["repeat"]): r["selected_by"] for r in result.rows if r["round"] == 0}
    later = {r["selected_by"] for r in result.rows if r["strategy"] == "margin" and r["round"] > 0}
    for rep in range(CONFIG.repeats):
        assert first[("auto", rep)] == "maxherding"  # coverage while there is no model
        assert first[("margin", rep)] == "random"  # needs probabilities: random seed batch
    assert later == {"margin"}


def test_embeddings_are_cached_between_runs(sim):
    _, _, first, second, _ = sim
    assert first.calls == 3 * PER_CLASS + BROKEN  # every file once, broken ones included
    assert second.calls == BROKEN  # only the unreadable files, which have nothing cached


def test_unreadable_images_are_skipped_and_reported_in_one_line(sim):
    result, _, _, _, warnings = sim
    assert len(result.files) == 3 * PER_CLASS
    assert sorted(p.split("/")[-1] for p in result.skipped) == [f"broken{i}.png" for i in range(4)]
    assert len(warnings) == 1 and "skipped 4 unreadable image(s): " in warnings[0]
    assert warnings[0].count("broken") == 3 and warnings[0].endswith(", ...")


def test_summary_and_plot(sim):
    result, out, _, _, _ = sim
    summary = json.loads((out / "summary.json").read_text())
    assert summary == json.loads(json.dumps(result.summary))
    assert set(summary["strategies"]) == set(CONFIG.strategies)
    for metric in ("accuracy", "macro_f1"):
        assert len(summary["full_data"][metric]["per_repeat"]) == CONFIG.repeats
    for entry in summary["strategies"].values():
        for metric in ("accuracy", "macro_f1"):
            assert set(entry["labels_to_reach"][metric]) == {"90%", "95%", "99%"}
            for key, reach in entry["labels_to_reach"][metric].items():
                assert len(reach["per_repeat"]) == CONFIG.repeats
                assert all(n is None or n in ROUNDS for n in reach["per_repeat"])
                mine, rand = reach["median"], summary["strategies"]["random"][
                    "labels_to_reach"][metric][key]["median"]
                expected = None if mine is None or rand is None else mine / rand
                assert entry["ratio_to_random"][metric][key] == expected
    png = (out / "curve.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000


def curve(strategy, rep, accs, f1s=None):
    f1s = f1s or accs
    return [{"strategy": strategy, "repeat": rep, "n_labels": 10 * (i + 1), "accuracy": a,
             "macro_f1": f} for i, (a, f) in enumerate(zip(accs, f1s))]  # fmt: skip


def test_labels_needed_median_and_ratio_to_random():
    rows = (curve("auto", 0, [0.5, 0.95, 1.0]) + curve("auto", 1, [0.9, 0.99, 1.0])
            + curve("auto", 2, [0.2, 0.3, 0.4])
            + curve("random", 0, [0.5, 0.6, 1.0]) + curve("random", 1, [0.5, 0.6, 0.99])
            + curve("random", 2, [0.5, 0.6, 0.7]))  # fmt: skip
    assert labels_to_reach(rows[:3], 0.95) == 20 and labels_to_reach(rows[:3], 1.01) is None
    assert median_or_none([10, None, 30]) == 30 and median_or_none([10, None, None]) is None
    full = [{"accuracy": 1.0, "macro_f1": 1.0}] * 3
    s = summarise(rows, full=full, strategies=["auto", "random"])
    reach = s["auto"]["labels_to_reach"]["accuracy"]
    assert reach["90%"] == {"per_repeat": [20, 10, None], "median": 20}
    assert s["random"]["labels_to_reach"]["accuracy"]["90%"]["median"] == 30
    assert s["auto"]["ratio_to_random"]["accuracy"]["90%"] == pytest.approx(20 / 30)
    assert reach["99%"]["per_repeat"] == [30, 20, None]
    assert s["random"]["labels_to_reach"]["accuracy"]["99%"]["per_repeat"] == [30, 30, None]
    assert s["auto"]["seed_batch_accuracy"]["per_repeat"] == [0.5, 0.9, 0.2]


def test_macro_f1_is_reported_apart_from_accuracy():
    """A rare class missed until late: accuracy is reached early, macro-F1 only at the end."""
    rows = curve("auto", 0, [0.95, 0.96, 1.0], f1s=[0.5, 0.6, 1.0])
    rows += curve("random", 0, [0.5, 0.96, 1.0], f1s=[0.5, 0.6, 1.0])
    s = summarise(rows, full=[{"accuracy": 1.0, "macro_f1": 1.0}], strategies=["auto", "random"])
    assert s["auto"]["labels_to_reach"]["accuracy"]["95%"]["median"] == 10
    assert s["auto"]["labels_to_reach"]["macro_f1"]["95%"]["median"] == 30
    assert s["auto"]["ratio_to_random"]["accuracy"]["95%"] == pytest.approx(0.5)
    assert s["auto"]["ratio_to_random"]["macro_f1"]["95%"] == pytest.approx(1.0)


def blobs(n_per_class=40, classes=4, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((classes, 8)) * 3
    y = np.repeat(np.arange(classes), n_per_class)
    return (centres[y] + rng.standard_normal((len(y), 8))).astype(np.float32), y


def test_a_refused_candidate_leaves_the_previous_version_serving(tmp_path):
    """The live promotion rule applies: a candidate clearly worse on shared held-out tasks is
    not served (here every candidate compared is refused: it would have to beat the serving
    version by more than 1.0)."""
    x, y = blobs()
    strict = TrainConfig(holdout=0.5, tolerance=-1.0, min_heldout=1)
    config = SimConfig(strategies=("random",), seed_size=20, batch=20, budget=100, repeats=1,
                       train=strict)  # fmt: skip
    result = simulate_embeddings(x, y, list("abcd"), tmp_path, config, progress=False)
    rows = result.rows
    refused = [i for i, r in enumerate(rows) if not r["promoted"]]
    assert refused and rows[0]["promoted"]
    for i in refused:
        assert rows[i]["serving"] == rows[i - 1]["serving"]  # the old version keeps serving
        assert rows[i]["accuracy"] == rows[i - 1]["accuracy"]
    assert result.summary["strategies"]["random"]["refused_promotions"] == len(refused)
    lenient = SimConfig(**{**vars(config), "train": TrainConfig(holdout=0.5)})
    rows = simulate_embeddings(x, y, list("abcd"), tmp_path, lenient, progress=False).rows
    assert [r["serving"] for r in rows] == [f"v{i + 1}" for i in range(len(rows))]


def test_stochastic_strategies_rank_on_stochastic_passes(tmp_path):
    x, y = blobs()
    for train in (TrainConfig(), TrainConfig(ensemble=3)):
        config = SimConfig(strategies=("bald", "dropquery"), seed_size=20, batch=10, budget=40,
                           repeats=1, train=train, mc_passes=4)  # fmt: skip
        rows = simulate_embeddings(x, y, list("abcd"), tmp_path, config, progress=False).rows
        later = {(r["strategy"], r["selected_by"]) for r in rows if r["round"] > 0}
        assert later == {("bald", "bald"), ("dropquery", "dropquery")}


def test_the_cli_trains_with_the_settings_training_config(tmp_path, monkeypatch, capsys):
    data = make_folder(tmp_path / "images")
    for name, value in {"HEAD_HIDDEN": "16", "HEAD_DROPOUT": "0.3", "ENSEMBLE_SIZE": "2",
                        "HOLDOUT_FRACTION": "0.1", "MC_PASSES": "3"}.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    try:
        assert main(["simulate", "--data", str(data), "--out", str(tmp_path / "out"),
                     "--strategies", "random", "--seed-size", "6", "--batch", "6",
                     "--budget", "12", "--repeats", "1", "--backbone", "mobilenet_v3_small",
                     "--weights", "none", "--cache", str(tmp_path / "cache")]) == 0
    finally:
        get_settings.cache_clear()
    settings = json.loads((tmp_path / "out" / "summary.json").read_text())["settings"]
    assert settings["mc_passes"] == 3
    assert {k: settings["train"][k] for k in ("hidden", "dropout", "ensemble", "holdout")} == {
        "hidden": 16, "dropout": 0.3, "ensemble": 2, "holdout": 0.1}


def one_line_error(capsys, *args) -> str:
    assert main(["simulate", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    return err


def test_errors_are_one_line(tmp_path, capsys):
    out = str(tmp_path / "out")
    (tmp_path / "empty").mkdir()
    assert "holds no images" in one_line_error(capsys, "--data", str(tmp_path / "empty"),
                                               "--out", out)  # fmt: skip
    assert "is not a folder" in one_line_error(capsys, "--data", str(tmp_path / "nope"),
                                               "--out", out)  # fmt: skip
    single = make_folder(tmp_path / "single", classes=("red",))
    assert "single class" in one_line_error(capsys, "--data", str(single), "--out", out)
    data = str(make_folder(tmp_path / "images"))  # 30 images: 24 train, 6 test
    cases = {
        ("--budget", "25"): "budget 25 exceeds the training split (24 images)",
        ("--seed-size", "30", "--budget", "30"): "seed size 30 exceeds the training split",
        ("--seed-size", "10", "--budget", "5"): "budget 5 is smaller than the seed size 10",
        ("--batch", "0"): "batch must be at least 1",
        ("--test-fraction", "1.5"): "test fraction must be between 0 and 1",
        ("--strategies", "auto,best"): "unknown strategy 'best'",
    }
    for extra, message in cases.items():
        assert message in one_line_error(capsys, "--data", data, "--out", out, *extra)
    assert not (tmp_path / "out").exists()  # refused before any work


# -- a CSV dataset: several questions, one of them multiple-choice ------------------------------
LOOPS, EVEN = {0, 6, 8, 9}, {0, 2, 4, 6, 8}


def digit_answers(digits) -> list[dict]:
    """parity (single-choice) and traits (multiple-choice: loop, large, small) of each digit;
    every 7th image leaves parity unanswered."""
    out = []
    for i, d in enumerate(digits):
        traits = tuple(t for t, on in (("loop", d in LOOPS), ("large", d >= 5), ("small", d < 5))
                       if on)
        a = {"traits": traits}
        if i % 7:
            a["parity"] = ("even",) if d in EVEN else ("odd",)
        out.append(a)
    return out


def digits_questions():
    from model.questions import Question

    return [Question("parity", ("even", "odd")), Question("traits", ("large", "loop", "small"),
                                                          multiple=True)]


@pytest.fixture(scope="module")
def digits_sim(tmp_path_factory):
    from sklearn.datasets import load_digits

    from ml_backend.simulation import simulate_questions

    x, y = load_digits(return_X_y=True)
    x, y = x[:300].astype(np.float32), y[:300]
    config = SimConfig(strategies=("margin", "badge", "random"), seed_size=30, batch=30,
                       budget=90, repeats=1)
    out = tmp_path_factory.mktemp("digits")
    return simulate_questions(x, digit_answers(y), digits_questions(), out, config,
                              progress=False), out


def test_a_multi_question_csv_curve_has_each_questions_metrics(digits_sim):
    result, out = digits_sim
    with (out / "results.csv").open() as fh:
        reader = csv.DictReader(fh)
        rows = list(reader)
    assert {"accuracy:parity", "macro_f1:parity", "accuracy:traits", "macro_f1:traits",
            "micro_f1:traits"} <= set(reader.fieldnames)
    assert "micro_f1:parity" not in reader.fieldnames  # a single-choice question has none
    assert len(rows) == 3 * 3  # strategies x rounds
    for r in rows:
        per = [float(r["macro_f1:parity"]), float(r["macro_f1:traits"])]
        assert all(0 <= v <= 1 for v in per)
        assert float(r["macro_f1"]) == pytest.approx(np.mean(per))  # the combined metric
    summary = json.loads((out / "summary.json").read_text())
    assert [q["name"] for q in summary["questions"]] == ["parity", "traits"]
    assert summary["questions"][1]["multiple"] is True
    assert summary["label_counts"]["traits"]["loop"] > 0
    per = summary["per_question"]
    assert set(per) == {"full_data", "margin", "badge", "random"}
    # trained on the whole training split, both heads learn (pixels of digits)
    assert per["full_data"]["macro_f1:traits"] > 0.7 and per["full_data"]["accuracy:parity"] > 0.7
    assert (out / "curve.png").read_bytes().startswith(b"\x89PNG")
    assert "macro_f1:traits" in format_summary_text(summary)


def format_summary_text(summary) -> str:
    from ml_backend.simulation import format_summary

    return format_summary(summary)


def test_a_multi_question_replay_ranks_as_the_live_loop(digits_sim):
    result, _ = digits_sim
    later = {(r["strategy"], r["selected_by"]) for r in result.rows if r["round"] > 0}
    # BADGE needs one question's class probabilities: live it gives way to Cluster-Margin
    assert later == {("margin", "margin"), ("badge", "cluster_margin"), ("random", "random")}
    first = {r["strategy"]: r["selected_by"] for r in result.rows if r["round"] == 0}
    assert first["margin"] == "random"  # no model yet
    for (strategy, rep), order in result.labelled.items():
        assert len(set(order.tolist())) == 90
        assert not set(result.test[rep].tolist()) & set(order.tolist())


def test_the_cli_simulates_a_csv_of_images_answering_two_questions(tmp_path, capsys):
    from PIL import Image
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    (tmp_path / "img").mkdir()
    lines = ["image,parity,traits"]
    for i, (pixels, a) in enumerate(zip(x[:40], digit_answers(y[:40]))):
        Image.fromarray((pixels.reshape(8, 8) * 15).astype(np.uint8)).resize((32, 32)).save(
            tmp_path / "img" / f"{i}.png")
        lines.append(f"img/{i}.png,{a.get('parity', ('',))[0]},{'|'.join(a['traits'])}")
    data = tmp_path / "digits.csv"
    data.write_text("\n".join(lines) + "\n")
    assert main(["simulate", "--data", str(data), "--out", str(tmp_path / "out"),
                 "--strategies", "margin", "--seed-size", "10", "--batch", "10",
                 "--budget", "20", "--repeats", "1", "--backbone", "mobilenet_v3_small",
                 "--weights", "none", "--cache", str(tmp_path / "cache")]) == 0
    printed = capsys.readouterr().out
    assert "macro_f1:parity" in printed and "micro_f1:traits" in printed
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["n_images"] == 40
    assert [(q["name"], q["multiple"]) for q in summary["questions"]] == [
        ("parity", False), ("traits", True)]
    # a column named by --multiple is multiple-choice though no cell holds two labels
    single = tmp_path / "one.csv"
    single.write_text("image,parity\n" + "\n".join(f"img/{i}.png,{'even' if i % 2 else 'odd'}"
                                                    for i in range(40)) + "\n")
    assert main(["simulate", "--data", str(single), "--out", str(tmp_path / "out2"),
                 "--strategies", "random", "--seed-size", "10", "--batch", "10", "--budget",
                 "10", "--repeats", "1", "--backbone", "mobilenet_v3_small", "--weights",
                 "none", "--cache", str(tmp_path / "cache"), "--multiple", "parity"]) == 0
    summary = json.loads((tmp_path / "out2" / "summary.json").read_text())
    assert summary["questions"][0]["multiple"] is True


def test_csv_dataset_errors_are_one_line(tmp_path, capsys):
    out = str(tmp_path / "out")
    (tmp_path / "a.png").write_bytes(png_bytes("red", 0))
    cases = {
        "file,species\na.png,cat\nb.png,dog\n": "b.png does not exist",
        "species,count\ncat,1\n": "names no image column",
        "image\na.png\n": "names no question column",
        "image,species\na.png,cat\n": "question 'species' has 1 label(s)",
    }
    for i, (text, message) in enumerate(cases.items()):
        (tmp_path / f"{i}.csv").write_text(text)
        assert message in one_line_error(capsys, "--data", str(tmp_path / f"{i}.csv"),
                                         "--out", out)
    (tmp_path / "ok.csv").write_text("image,species\na.png,cat|dog\n")
    assert "no question column 'size'" in one_line_error(
        capsys, "--data", str(tmp_path / "ok.csv"), "--out", out, "--multiple", "size")
    assert not (tmp_path / "out").exists()
