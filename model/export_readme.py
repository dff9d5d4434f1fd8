"""The README written beside an exported model: what the files are and how to load each format.

The ONNX snippet needs only onnxruntime, numpy and Pillow (what a camera-trap pipeline or an
edge device has), so its preprocessing is written out with Pillow instead of torchvision; it
reproduces the backbone's resize and centre crop exactly (tests run it).
"""

from __future__ import annotations

# Shared by the README of one question and of several.
PREPROCESSING = """## Preprocessing

Exactly what the `{backbone}` weights were trained with:

1. decode to RGB;
2. resize so the shorter side is {resize} pixels ({interpolation} interpolation, antialiased);
3. crop the central {crop} x {crop} square;
4. scale to float32 in [0, 1] (divide by 255), channels first;
5. normalise each channel: subtract mean {mean}, divide by std {std}.
"""

ONNX_PREPROCESS = """
## Loading the ONNX model (onnxruntime, numpy and Pillow only)

```python
import json
import numpy as np
import onnxruntime as ort
from PIL import Image

RESIZE, CROP = {resize}, {crop}
MEAN = np.array({mean}, dtype=np.float32)
STD = np.array({std}, dtype=np.float32)


def preprocess(path):
    img = Image.open(path).convert("RGB")
    w, h = img.size
    size = (RESIZE, int(RESIZE * h / w)) if w <= h else (int(RESIZE * w / h), RESIZE)
    img = img.resize(size, Image.Resampling.{pil_enum})
    left, top = round((img.width - CROP) / 2), round((img.height - CROP) / 2)
    img = img.crop((left, top, left + CROP, top + CROP))
    x = (np.asarray(img, dtype=np.float32) / 255.0 - MEAN) / STD
    return x.transpose(2, 0, 1)[None]  # [1, 3, CROP, CROP]
"""

# `names`: what labels.json holds, `labels` or `questions`.
TORCHSCRIPT_PREPROCESS = """
## Loading the TorchScript model (torch)

```python
import json
import torch
from PIL import Image
from torchvision.transforms import v2

model = torch.jit.load("model.pt").eval()
{names} = json.load(open("labels.json"))
preprocess = v2.Compose([
    v2.ToImage(),
    v2.Resize({resize}, interpolation=v2.InterpolationMode.{interp_enum}, antialias=True),
    v2.CenterCrop({crop}),
    v2.ToDtype(torch.float32, scale=True),
    v2.Normalize(mean={mean}, std={std}),
])
x = preprocess(Image.open("photo.jpg").convert("RGB")).unsqueeze(0)
"""

HEAD = """# {title}

A self-contained image classifier exported by the active-learning backend
(project {project}, version {version}, backbone {backbone}).

Input: a float32 tensor `[n, 3, {crop}, {crop}]` of preprocessed RGB images (below); output:
`[n, {n_classes}]` class probabilities (each row sums to 1), columns in the order of
`labels.json`. This is what the backend's `/predict` serves{ensemble_note}.

Files:

{files}
- `labels.json`: class names, in output order.
- `model.json`: the same description, machine-readable (classes, version, preprocessing).
- `metrics.json`: how this version did on its held-out tasks when it was trained.

""" + PREPROCESSING

FILES = {
    "onnx": "- `model.onnx`: ONNX (opset {opset}), input `image`, output `probabilities`; any "
            "batch size.",
    "torchscript": "- `model.pt`: TorchScript module (backbone + head + softmax). TorchScript is "
                   "deprecated in recent torch releases; prefer `model.onnx` for new pipelines.",
}

ONNX = ONNX_PREPROCESS + """

session = ort.InferenceSession("model.onnx", providers=["CPUExecutionProvider"])
labels = json.load(open("labels.json"))
probs = session.run(["probabilities"], {{"image": preprocess("photo.jpg")}})[0][0]
print(labels[int(probs.argmax())], float(probs.max()))
```

Stack several preprocessed images along the first axis to classify them in one call.
"""

TORCHSCRIPT = TORCHSCRIPT_PREPROCESS + """with torch.no_grad():
    probs = model(x)[0]
print(labels[int(probs.argmax())], float(probs.max()))
```

Only `torch` is needed to run `model.pt`; the snippet uses torchvision and Pillow for
preprocessing. `python -m ml_backend import-model --project ID model.pt` makes this file a
version of a project again.
"""


HEAD_QUESTIONS = """# {title}

A self-contained image classifier exported by the active-learning backend
(project {project}, version {version}, backbone {backbone}). It answers {n_questions} questions
about each image, one output each:

{outputs}

Input: a float32 tensor `[n, 3, {crop}, {crop}]` of preprocessed RGB images (below). A
single-choice question's output holds its class probabilities (each row sums to 1); a
multiple-choice question's holds each label's own probability (a sigmoid: rows do not sum to
1), and a label is chosen when its probability reaches its threshold in `labels.json` (chosen
on the held-out tasks). This is what the backend's `/predict` serves{ensemble_note}.

Files:

{files}
- `labels.json`: per output, in order: the question's `name`, `classes` (its columns),
  `multiple`, `thresholds` (null for a single-choice question) and the ONNX `output` name.
- `model.json`: the same description, machine-readable (questions, version, preprocessing).
- `metrics.json`: how this version did on its held-out tasks when it was trained, per question.

""" + PREPROCESSING

FILES_QUESTIONS = {
    "onnx": "- `model.onnx`: ONNX (opset {opset}), input `image`, one output per question (named "
            "in `labels.json`); any batch size.",
    "torchscript": "- `model.pt`: TorchScript module (backbone + heads); called on images it "
                   "returns a dict, question name -> probabilities. TorchScript is deprecated "
                   "in recent torch releases; prefer `model.onnx` for new pipelines.",
}

ANSWER = """

def answer(question, probs):
    \"\"\"A question's labels for one image: the most probable class, or every label at or
    above its threshold (multiple-choice).\"\"\"
    if question["multiple"]:
        return [c for c, p, t in zip(question["classes"], probs, question["thresholds"])
                if p >= t]
    return [question["classes"][int(probs.argmax())]]
"""

ONNX_QUESTIONS = ONNX_PREPROCESS + """{answer}

session = ort.InferenceSession("model.onnx", providers=["CPUExecutionProvider"])
questions = json.load(open("labels.json"))
outputs = session.run([q["output"] for q in questions], {{"image": preprocess("photo.jpg")}})
for question, probs in zip(questions, outputs):
    print(question["name"], "|".join(answer(question, probs[0])))
```

Stack several preprocessed images along the first axis to classify them in one call.
"""

TORCHSCRIPT_QUESTIONS = TORCHSCRIPT_PREPROCESS + """with torch.no_grad():
    probs = model(x)  # question name -> [1, classes]
{answer}
for question in questions:
    print(question["name"], "|".join(answer(question, probs[question["name"]][0])))
```

Only `torch` is needed to run `model.pt`; the snippet uses torchvision and Pillow for
preprocessing.
"""


def readme(info: dict, formats: tuple[str, ...]) -> str:
    """README.md for an export holding `formats` of the model `info` describes."""
    p = info["preprocessing"]
    members = (info.get("head_config") or {}).get("members")
    fields = dict(
        title=("Image classifier: " + (", ".join(info["classes"]) if "classes" in info else
                                        ", ".join(q["name"] for q in info["questions"]))),
        project=info.get("project"), version=info["version"], backbone=info["backbone"],
        crop=p["center_crop"], resize=p["resize_shorter_side"],
        n_classes=len(info.get("classes") or []),
        interpolation=p["interpolation"], interp_enum=p["interpolation"].upper(),
        pil_enum=p["interpolation"].upper(), mean=p["mean"], std=p["std"], names="labels",
        opset=info.get("onnx_opset"),
        ensemble_note=(f": the mean of its {members} ensemble members' probabilities"
                       if members else ""),
    )
    if "questions" in info:
        return _readme_questions(info, formats, fields)
    files = "\n".join(FILES[f].format(**fields) for f in formats)
    text = HEAD.format(files=files, **fields)
    if "onnx" in formats:
        text += ONNX.format(**fields)
    if "torchscript" in formats:
        text += TORCHSCRIPT.format(**fields)
    return text


def _readme_questions(info: dict, formats: tuple[str, ...], fields: dict) -> str:
    """README.md of a version answering several questions (or a multiple-choice one)."""
    qs = info["questions"]
    outputs = "\n".join(
        f"- `{q['output']}` `[n, {len(q['classes'])}]`: {q['name']} "
        f"({'multiple-choice' if q['multiple'] else 'single-choice'}: "
        f"{', '.join(q['classes'])})" for q in qs)
    fields = {**fields, "n_questions": len(qs), "outputs": outputs,
              "answer": ANSWER, "names": "questions"}
    files = "\n".join(FILES_QUESTIONS[f].format(**fields) for f in formats)
    text = HEAD_QUESTIONS.format(files=files, **fields)
    if "onnx" in formats:
        text += ONNX_QUESTIONS.format(**fields)
    if "torchscript" in formats:
        text += TORCHSCRIPT_QUESTIONS.format(**fields)
    return text
