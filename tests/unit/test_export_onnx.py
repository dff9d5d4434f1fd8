"""ONNX export: onnxruntime gives the backend's own probabilities on the same images, for a
single head and an ensemble, and the README's loading snippet works as written."""

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
from ml_backend.model_commands import export
from ml_backend.runtime import Runtime
from model.export import check_export, onnx_probabilities
from model.head import predict_proba
from tests.images import png_bytes

IMAGES = [png_bytes(c, 70 + i) for i, c in enumerate(("red", "green", "blue", "green"))]


def live_probs(rt: Runtime, project: int, images: list[bytes]) -> np.ndarray:
    """What serving computes for these images: the version's backbone, then its head."""
    model = rt.serving_model(project)
    imgs = [Image.open(io.BytesIO(b)) for b in images]
    return predict_proba(model.head, rt.backbone_for(project).embed_batch(imgs))


def network_inputs(rt: Runtime, images: list[bytes]) -> np.ndarray:
    bb = rt.backbone
    batch = torch.stack([bb.preprocess(Image.open(io.BytesIO(b))) for b in images])
    return bb.inputs(batch).numpy()


def test_onnx_export_matches_the_backends_probabilities(runtime, tmp_path):
    steps.retrain(runtime, 1)
    out = export(runtime, 1, tmp_path / "e", formats=("onnx",))
    folder = tmp_path / "e"
    assert out["files"] == ["README.md", "labels.json", "metrics.json", "model.json", "model.onnx"]
    got = onnx_probabilities(folder / "model.onnx", network_inputs(runtime, IMAGES))
    want = live_probs(runtime, 1, IMAGES)
    assert got.shape == (4, 3)
    np.testing.assert_allclose(got, want, atol=1e-4)
    info = json.loads((folder / "model.json").read_text())
    assert info["classes"] == ["red", "green", "blue"] and info["files"] == {"onnx": "model.onnx"}


@pytest.fixture
def ensemble_runtime(settings, fake_ls):
    return Runtime(settings.model_copy(update={"ensemble_size": 3, "head_hidden": 16}),
                   labelstudio=fake_ls)


def test_an_ensemble_exports_the_mean_of_its_members(ensemble_runtime, tmp_path):
    rt = ensemble_runtime
    steps.retrain(rt, 1)
    assert rt.serving_model(1).head.config["members"] == 3
    export(rt, 1, tmp_path / "e", formats=("onnx",))
    got = onnx_probabilities(tmp_path / "e" / "model.onnx", network_inputs(rt, IMAGES))
    np.testing.assert_allclose(got, live_probs(rt, 1, IMAGES), atol=1e-4)
    assert "mean of its 3 ensemble members" in (tmp_path / "e" / "README.md").read_text()


def test_the_readme_onnx_snippet_classifies_an_image_as_the_backend_does(runtime, tmp_path,
                                                                         cli_env):
    steps.retrain(runtime, 1)
    assert main(["export", "--project", "1", "--out", str(tmp_path / "e"),
                 "--format", "onnx"]) == 0
    folder = tmp_path / "e"
    # A photo of odd size, so the resize and the centre crop both matter.
    Image.open(io.BytesIO(png_bytes("blue", 5))).resize((300, 190)).save(folder / "photo.jpg")
    readme = (folder / "README.md").read_text()
    (snippet,) = re.findall(r"## Loading the ONNX model.*?```python\n(.*?)```", readme, re.S)
    done = subprocess.run([sys.executable, "-c", snippet], cwd=folder, capture_output=True,
                          text=True, timeout=120, check=True)
    label, score = done.stdout.split()
    want = live_probs(runtime, 1, [(folder / "photo.jpg").read_bytes()])[0]
    assert label == runtime.serving_model(1).classes[int(want.argmax())]
    assert abs(float(score) - want.max()) < 1e-4


def test_an_unknown_format_is_a_clear_error(runtime, tmp_path):
    steps.retrain(runtime, 1)
    with pytest.raises(ValueError, match="unknown export format tflite"):
        export(runtime, 1, tmp_path / "e", formats=("tflite",))
    assert not (tmp_path / "e").exists() or not any((tmp_path / "e").iterdir())


def test_the_onnx_file_names_its_classes_in_its_metadata(runtime, tmp_path):
    import onnxruntime as ort

    steps.retrain(runtime, 1)
    export(runtime, 1, tmp_path / "e", formats=("onnx",))
    session = ort.InferenceSession(str(tmp_path / "e" / "model.onnx"),
                                   providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    assert json.loads(meta["classes"]) == ["red", "green", "blue"] and meta["version"] == "v1"
    assert json.loads(meta["preprocessing"])["center_crop"] == 224


def test_the_export_check_catches_a_model_that_answers_otherwise(runtime, fake_ls, tmp_path):
    steps.retrain(runtime, 1)
    export(runtime, 1, tmp_path / "e", formats=("onnx",))
    fake_ls.task_list[-1]["annotations"] = [fake_ls.annotation("red", 99)]  # a wrong label
    steps.retrain(runtime, 1)
    other = runtime.versions(1).load("v2")
    with pytest.raises(ValueError, match="model.onnx differs from the backend's model"):
        check_export(tmp_path / "e", runtime.backbone, other, ("onnx",))
