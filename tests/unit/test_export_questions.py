"""Export of a version answering two questions (one multiple-choice): one output per head,
labels.json describing them, each output what the backend computes (sigmoids for the
multiple-choice head), and README snippets that answer as the backend does."""

import io
import json
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from ml_backend import steps
from ml_backend.__main__ import main
from ml_backend.model_commands import export, import_model
from ml_backend.runtime import Runtime
from model.export import check_export, load_torchscript, onnx_outputs
from model.export_questions import output_names
from tests.images import png_bytes
from tests.unit.fakes import answer_both

IMAGES = [png_bytes(c, 70 + i) for i, c in enumerate(("red", "green", "blue", "green"))]


def network_inputs(rt: Runtime, images: list[bytes]) -> torch.Tensor:
    bb = rt.backbone
    return bb.inputs(torch.stack([bb.preprocess(Image.open(io.BytesIO(b))) for b in images]))


def live(rt: Runtime, images: list[bytes]) -> tuple[dict, list]:
    """Per question the probabilities serving computes, and the answers it pre-annotates."""
    model = rt.serving_model(1)
    x = rt.backbone_for(1).embed_batch([Image.open(io.BytesIO(b)) for b in images])
    probs = model.probabilities(x, model.questions)
    return probs, model.answers(probs, model.questions, len(images))


@pytest.fixture
def two_questions(runtime, fake_ls):
    answer_both(fake_ls, 18)
    steps.retrain(runtime, 1)
    return runtime


def test_each_head_is_an_output_described_in_labels_json(two_questions, tmp_path):
    rt = two_questions
    out = export(rt, 1, tmp_path / "e")
    assert out["questions"] == {"colour": ["red", "green", "blue"],
                                "tags": ["warm", "cool", "leafy"]}
    folder = tmp_path / "e"
    model = rt.serving_model(1)
    labels = json.loads((folder / "labels.json").read_text())
    assert labels == [
        {"name": "colour", "classes": ["red", "green", "blue"], "multiple": False,
         "thresholds": None, "output": "probabilities_colour"},
        {"name": "tags", "classes": ["warm", "cool", "leafy"], "multiple": True,
         "thresholds": model.thresholds("tags") or [0.5] * 3, "output": "probabilities_tags"},
    ]
    assert json.loads((folder / "model.json").read_text())["questions"] == labels
    want, _ = live(rt, IMAGES)
    x = network_inputs(rt, IMAGES)
    got = onnx_outputs(folder / "model.onnx", x.numpy())
    assert set(got) == {"probabilities_colour", "probabilities_tags"}
    np.testing.assert_allclose(got["probabilities_colour"], want["colour"], atol=1e-4)
    np.testing.assert_allclose(got["probabilities_tags"], want["tags"], atol=1e-4)
    np.testing.assert_allclose(got["probabilities_colour"].sum(1), 1, atol=1e-5)
    assert not np.allclose(got["probabilities_tags"].sum(1), 1)  # a sigmoid per label
    with torch.no_grad():
        scripted = load_torchscript(folder / "model.pt")(x)
    assert set(scripted) == {"colour", "tags"}
    for q in ("colour", "tags"):
        np.testing.assert_allclose(scripted[q].numpy(), want[q], atol=1e-4)
    metrics = json.loads((folder / "metrics.json").read_text())
    assert set(metrics["metrics"]["questions"]) == {"colour", "tags"}


def run_snippet(folder, heading: str) -> list[str]:
    readme = (folder / "README.md").read_text()
    (snippet,) = re.findall(heading + r".*?```python\n(.*?)```", readme, re.S)
    done = subprocess.run([sys.executable, "-c", snippet], cwd=folder, capture_output=True,
                          text=True, timeout=120, check=True)
    return done.stdout.splitlines()


def test_the_readme_snippets_answer_every_question_as_the_backend_does(two_questions, tmp_path,
                                                                      cli_env, capsys):
    rt = two_questions
    assert main(["export", "--project", "1", "--out", str(tmp_path / "e")]) == 0
    assert "(colour: red, green, blue; tags: warm, cool, leafy)" in capsys.readouterr().out
    folder = tmp_path / "e"
    readme = (folder / "README.md").read_text()
    assert "`probabilities_tags` `[n, 3]`: tags (multiple-choice: warm, cool, leafy)" in readme
    Image.open(io.BytesIO(png_bytes("green", 5))).resize((300, 190)).save(folder / "photo.jpg")
    _, [said] = live(rt, [(folder / "photo.jpg").read_bytes()])
    want = [f"{q} {'|'.join(said.get(q, ()))}".strip() for q in ("colour", "tags")]
    assert [line.strip() for line in run_snippet(folder, "## Loading the ONNX model")] == want
    assert [line.strip() for line in run_snippet(folder, "## Loading the TorchScript")] == want


def test_a_multi_label_ensemble_exports_in_both_formats(settings, fake_ls, tmp_path):
    rt = Runtime(settings.model_copy(update={"ensemble_size": 3, "head_hidden": 16}),
                 labelstudio=fake_ls)
    answer_both(fake_ls, 18)
    steps.retrain(rt, 1)
    assert rt.serving_model(1).heads[1].config["members"] == 3
    export(rt, 1, tmp_path / "e")  # checked against the backend's probabilities, both formats
    want, _ = live(rt, IMAGES)
    with torch.no_grad():
        got = load_torchscript(tmp_path / "e" / "model.pt")(network_inputs(rt, IMAGES))
    np.testing.assert_allclose(got["tags"].numpy(), want["tags"], atol=1e-4)


def test_the_check_covers_the_multiple_choice_head(two_questions, fake_ls, tmp_path):
    rt = two_questions
    export(rt, 1, tmp_path / "e", formats=("onnx",))
    v1 = rt.serving_model(1)
    other = type(v1)(v1.name, v1.head, v1.meta)
    with torch.no_grad():  # the tags head alone answers otherwise
        for p in other.heads[1].parameters():
            p.add_(0.5)
    with pytest.raises(ValueError, match="question 'tags' of exported model.onnx differs"):
        check_export(tmp_path / "e", rt.backbone, other, ("onnx",))


def test_output_names_are_sanitised_and_unique():
    assert output_names(["species", "body part", "body-part", "", "été"]) == [
        "probabilities_species", "probabilities_body_part", "probabilities_body_part_2",
        "probabilities_question", "probabilities__t_"]


def test_import_model_refuses_an_export_of_several_questions(two_questions, tmp_path):
    export(two_questions, 1, tmp_path / "e", formats=("torchscript",))
    with pytest.raises(ValueError, match="answers several questions \\(colour, tags\\)"):
        import_model(two_questions, 2, tmp_path / "e" / "model.pt")


def test_predict_writes_each_questions_answer_and_probabilities(two_questions, tmp_path):
    import csv

    from ml_backend.model_commands import predict_folder

    rt = two_questions
    folder = tmp_path / "new"
    folder.mkdir()
    for i, image in enumerate(IMAGES):
        (folder / f"{i}.png").write_bytes(image)
    predict_folder(rt, 1, folder, tmp_path / "out.csv", progress=False)
    rows = list(csv.DictReader((tmp_path / "out.csv").open()))
    assert list(rows[0]) == ["path", "colour", "colour:red", "colour:green", "colour:blue",
                             "tags", "tags:warm", "tags:cool", "tags:leafy"]
    probs, said = live(rt, IMAGES)
    for i, row in enumerate(rows):
        assert row["path"] == str(folder / f"{i}.png")
        assert row["colour"] == said[i]["colour"][0]
        assert row["tags"] == "|".join(said[i].get("tags", ()))  # those above their thresholds
        np.testing.assert_allclose([float(row[f"tags:{c}"]) for c in ("warm", "cool", "leafy")],
                                   probs["tags"][i], atol=1e-5)
        np.testing.assert_allclose(
            [float(row[f"colour:{c}"]) for c in ("red", "green", "blue")], probs["colour"][i],
            atol=1e-5)
    assert any("|" in r["tags"] for r in rows)  # a green image: cool|leafy
